"""Test helpers for DICOM networking: a destination node, `covidct serve` in a child process,
and a C-STORE sender (on sys.path through pyproject's pytest ``pythonpath``)."""

from __future__ import annotations

from pathlib import Path

def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A C-STORE SCP on loopback standing in for the PACS that gets covidct's results."""

    def __init__(self, ae_title: str = "RESULTS", port: int | None = None) -> None:
        import threading

        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        self.ae_title, self.port = ae_title, port or free_port()
        self.datasets: list = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.datasets.append(ds)
        return 0x0000

    def modalities(self) -> list[str]:
        with self._lock:
            return sorted(str(d.Modality) for d in self.datasets)

    def wait_for(self, count: int, timeout_s: float) -> list:
        import time

        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if len(self.datasets) >= count:
                    return list(self.datasets)
            time.sleep(0.2)
        raise AssertionError(f"{len(self.datasets)} of {count} objects received in {timeout_s} s")

    def stop(self) -> None:
        self._server.shutdown()


class ServeProcess:
    """`python -m covidct serve` in its own process group, its log in a file."""

    def __init__(self, storage: Path, port: int, *args: str) -> None:
        import subprocess
        import sys

        self.storage, self.port = storage, port
        self.log_path = storage.parent / f"{storage.name}-serve.log"
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # this run's part
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "covidct", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--storage", str(storage), *args],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for_log("listening on", 30)

    def log(self) -> str:
        """What this process logged (a restarted node appends to the same file)."""
        return self.log_path.read_text()[self._offset:]

    def wait_for_log(self, text: str, timeout_s: float, count: int = 1) -> str:
        import time

        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc.poll() is not None:
                raise AssertionError(f"covidct serve exited ({self.proc.returncode}):\n{log}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not logged within {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the node and its analysis children (a crash, a power cut)."""
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.kill()
        self._log.close()


def send_files(paths: list[Path], port: int, calling: str, called: str = "COVIDCT") -> list[int]:
    """C-STORE DICOM files (raw, as stored) to a node on loopback; returns each status."""
    import pydicom
    from pynetdicom import AE
    from pynetdicom.presentation import build_context

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    for pair in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.requested_contexts.append(build_context(pair[0], [pair[1]]))
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise ConnectionRefusedError(f"association with port {port} as {calling} refused")
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()

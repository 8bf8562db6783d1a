"""``covidct serve``: a DICOM node that analyzes the CT studies a PACS sends it and sends the
results (DICOM SEG, SR and key-slice secondary captures) back.

How a study travels through the storage folder::

    incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm   received; each file is on disk (fsync'ed)
                                                        before its C-STORE is acknowledged
    queue/<StudyInstanceUID>/                          no instance arrived for ``idle_s``: complete
    results/<StudyInstanceUID>/                        ``covidct analyze --dicom`` output (kept,
                                                        and sent again every ``retry_s``, while
                                                        the destination cannot be reached)
    done/<StudyInstanceUID>.json                       results sent: what happened, for the record
    failed/<StudyInstanceUID>/ + reason.txt            rejected (malformed) or failed, with why

Every step is a rename, so a node killed at any moment and restarted finds each study in exactly
one place: ``incoming/`` studies wait for the idle time again, ``queue/`` studies are analyzed
(a finished ``results/`` folder is sent without analyzing again), and the sender never has to
send a study twice. Analyses run in child processes (``python -m covidct analyze``), at most
``workers`` at a time: a study that crashes or exhausts memory takes down its child, not the node.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Seconds a child analysis may run before it is stopped and the study marked failed.
ANALYZE_TIMEOUT_S = 1800.0
#: How often (s) the node looks for studies that have gone idle.
POLL_S = 0.5


@dataclass(frozen=True)
class Destination:
    """Where results are sent: a DICOM node's address and AE title."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``HOST:PORT:AE_TITLE`` -> Destination (ValueError when malformed)."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ValueError(f"{text!r}: expected HOST:PORT:AE_TITLE")
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ServeConfig:
    """Settings of a covidct DICOM node (``covidct serve``; flags or a TOML file).

    Attributes
    ----------
    ae_title : the node's own AE title
    host, port : where it listens (all interfaces by default)
    destination : where results are C-STOREd; None keeps them in ``storage/results`` only
    allowed_ae_titles : calling AE titles accepted at association; empty accepts any
    storage : the folder holding received studies, results and the record of each
    workers : analyses run at the same time
    idle_s : a study is complete when none of its instances arrived for this long
    retry_s : seconds between attempts to send results while the destination cannot be reached
    """

    ae_title: str = "COVIDCT"
    host: str = "0.0.0.0"
    port: int = 11112
    destination: Destination | None = None
    allowed_ae_titles: tuple[str, ...] = ()
    storage: Path = Path("covidct-serve")
    workers: int = 1
    idle_s: float = 10.0
    retry_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.ae_title) <= 16:
            raise ValueError(f"ae_title {self.ae_title!r}: 1 to 16 characters")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port}: 0 to 65535")
        if self.workers < 1:
            raise ValueError(f"workers {self.workers}: at least 1")
        if self.idle_s <= 0 or self.retry_s <= 0:
            raise ValueError(f"idle_s {self.idle_s}, retry_s {self.retry_s}: must be positive")


def load_config(path: str | os.PathLike[str], **overrides: Any) -> ServeConfig:
    """Read a TOML settings file (keys as :class:`ServeConfig`'s attributes, ``destination`` a
    table with ``host``, ``port``, ``ae_title``); ``overrides`` that are not None win.

    Raises ValueError (with the file name) on unknown keys or bad values, OSError when unreadable.
    """
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
    return config_from(raw, str(path), **overrides)


def config_from(raw: dict[str, Any], where: str = "settings", **overrides: Any) -> ServeConfig:
    """Build a :class:`ServeConfig` from a dict (as read from TOML) and overrides."""
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = dict(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        dest = values.get("destination")
        if isinstance(dest, dict):
            values["destination"] = Destination(str(dest["host"]), int(dest["port"]), str(dest["ae_title"]))
        elif isinstance(dest, str):
            values["destination"] = Destination.parse(dest)
        if "storage" in values:
            values["storage"] = Path(values["storage"])
        if "allowed_ae_titles" in values:
            values["allowed_ae_titles"] = tuple(str(a) for a in values["allowed_ae_titles"])
        for key, kind in (("port", int), ("workers", int), ("idle_s", float), ("retry_s", float)):
            if key in values:
                values[key] = kind(values[key])
        return ServeConfig(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temporary name, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _safe_name(uid: str) -> str:
    """A UID as a file name (UIDs are digits and dots; anything else is replaced)."""
    cleaned = "".join(c if c.isdigit() or c == "." else "_" for c in uid.strip())
    return cleaned or "unknown"


def send_folder(folder: Path, destination: Destination, calling_ae_title: str) -> int:
    """C-STORE every ``*.dcm`` file under ``folder`` to ``destination``; returns how many.

    Raises RuntimeError when the association is refused or any store does not succeed.
    """
    import pydicom
    from pynetdicom import AE
    from pynetdicom.presentation import build_context

    files = sorted(folder.rglob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae_title)
    for sop_class, syntax in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.requested_contexts.append(build_context(sop_class, [syntax]))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"{destination}: association refused or unreachable")
    try:
        for path, ds in zip(files, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                raise RuntimeError(f"{destination}: C-STORE of {path.name} answered "
                                   f"{'no status' if code is None else hex(code)}")
    finally:
        assoc.release()
    return len(files)


@dataclass
class _Arrival:
    """A study being received: when its last instance came and how many came."""

    last_s: float
    count: int = 0
    calling: set[str] = field(default_factory=set)


class DicomNode:
    """The node: a C-ECHO / C-STORE SCP, the idle watcher, and the analysis workers.

    Use :meth:`start` then :meth:`stop`, or :meth:`serve_forever` (until SIGINT / SIGTERM).
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.root = config.storage
        self._lock = threading.Lock()
        self._arrivals: dict[str, _Arrival] = {}
        self._busy: set[str] = set()
        self._children: set[subprocess.Popen[str]] = set()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="covidct-analyze")
        self._server: Any = None
        self._watcher: threading.Thread | None = None

    # -- receiving -----------------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> int:
        """Write the instance under incoming/<study>/ before acknowledging it."""
        try:
            ds = event.dataset
            study = _safe_name(str(ds.get("StudyInstanceUID", "")))
            sop = _safe_name(str(ds.get("SOPInstanceUID", "")))
            if study == "unknown" or sop == "unknown":
                log.warning("refused an instance without StudyInstanceUID/SOPInstanceUID from %s",
                            event.assoc.requestor.ae_title)
                return 0xC001  # cannot understand
            data = event.encoded_dataset(include_meta=True)
            with self._lock:
                folder = self.root / "incoming" / study
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_write(folder / f"{sop}.dcm", data)
                arrival = self._arrivals.setdefault(study, _Arrival(time.monotonic()))
                arrival.last_s = time.monotonic()
                arrival.count += 1
                arrival.calling.add(str(event.assoc.requestor.ae_title).strip())
            return 0x0000
        except OSError as exc:
            log.error("could not store an instance: %s", exc)
            return 0xA700  # out of resources

    def _on_rejected(self, event: Any) -> None:
        log.warning("refused association from %s (%s:%s): calling AE title not allowed",
                    event.assoc.requestor.ae_title, event.assoc.requestor.address, event.assoc.requestor.port)

    # -- completing and analyzing ----------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(POLL_S):
            now = time.monotonic()
            with self._lock:
                idle = [s for s, a in self._arrivals.items() if now - a.last_s >= self.config.idle_s]
                for study in idle:
                    arrival = self._arrivals.pop(study)
                    target = self.root / "queue" / study
                    if target.exists() or study in self._busy:
                        # More instances of a study already queued: analyzed again once it is done.
                        self._arrivals[study] = _Arrival(now, arrival.count, arrival.calling)
                        continue
                    shutil.rmtree(self.root / "results" / study, ignore_errors=True)  # of an earlier send
                    os.replace(self.root / "incoming" / study, target)
                    log.info("study %s complete: %d instances from %s", study, arrival.count,
                             ", ".join(sorted(arrival.calling)))
                    self._submit(study)

    def _submit(self, study: str) -> None:
        self._busy.add(study)
        self._pool.submit(self._process, study)

    def _process(self, study: str) -> None:
        start = time.perf_counter()
        queued = self.root / "queue" / study
        results = self.root / "results" / study
        n_files = sum(1 for _ in queued.glob("*.dcm"))
        try:
            if not (results / "report.json").is_file():  # a finished analysis is not redone
                reason = self._analyze(queued, results)
                if reason is not None:
                    self._fail(study, reason, start, n_files)
                    return
            report = json.loads((results / "report.json").read_text(encoding="utf-8"))
            sent = 0
            if self.config.destination is not None:
                try:
                    sent = send_folder(results / "dicom", self.config.destination, self.config.ae_title)
                except (RuntimeError, OSError) as exc:  # the destination is down: the results are kept
                    if not self._stopping.is_set():
                        log.error("study %s: analyzed, but sending to %s failed (%s); retrying in %.0f s",
                                  study, self.config.destination, exc, self.config.retry_s)
                        retry = threading.Timer(self.config.retry_s, self._retry, args=(study,))
                        retry.daemon = True
                        retry.start()
                    return
            record = {
                "study_uid": study, "instances": n_files, "decision": report["decision"]["label"],
                "diagnosis": report["decision"]["diagnosis"], "corona_score_cm3": report["scores"]["corona_score_cm3"],
                "sent": sent, "destination": str(self.config.destination) if self.config.destination else None,
                "seconds": round(time.perf_counter() - start, 2),
            }
            _fsync_write(self.root / "done" / f"{study}.json", (json.dumps(record, indent=2) + "\n").encode())
            shutil.rmtree(queued, ignore_errors=True)
            shutil.rmtree(self.root / "failed" / study, ignore_errors=True)  # of an earlier, broken send
            log.info("study %s: %s (%s), Corona score %.1f cm3, %d objects sent to %s in %.1f s",
                     study, record["decision"], record["diagnosis"], record["corona_score_cm3"], sent,
                     record["destination"] or "nowhere (no destination)", record["seconds"])
        except Exception as exc:  # the node keeps serving whatever one study does
            if self._stopping.is_set():
                return  # interrupted by shutdown: stays queued for the next start
            self._fail(study, f"{type(exc).__name__}: {exc}", start, n_files)
        finally:
            with self._lock:
                self._busy.discard(study)

    def _retry(self, study: str) -> None:
        with self._lock:
            if not self._stopping.is_set() and study not in self._busy and (self.root / "queue" / study).is_dir():
                self._submit(study)

    def _child_environment(self) -> dict[str, str]:
        """The analysis child's environment: no progress bars, and the CPUs shared between the
        workers (torch would give every child all of them), unless OMP_NUM_THREADS is set."""
        from covidct.parallel import available_cpus

        threads = str(max(1, available_cpus() // self.config.workers))
        return {"OMP_NUM_THREADS": threads, **os.environ, "TQDM_DISABLE": "1"}

    def _analyze(self, queued: Path, results: Path) -> str | None:
        """Run ``covidct analyze --dicom`` in a child process; None on success, else the reason."""
        command = [sys.executable, "-m", "covidct", "analyze", str(queued), "-o", str(results), "--dicom", "--force"]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 env=self._child_environment())
        with self._lock:
            self._children.add(child)
        try:
            _, stderr = child.communicate(timeout=ANALYZE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return f"analysis took longer than {ANALYZE_TIMEOUT_S:.0f} s and was stopped"
        finally:
            with self._lock:
                self._children.discard(child)
        if self._stopping.is_set():
            raise RuntimeError("node stopping")
        if child.returncode == 0:
            return None
        lines = [line for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("covidct: error:")]
        last = (errors or lines or [f"exit status {child.returncode}"])[-1]
        return last.removeprefix("covidct: error: ")

    def _fail(self, study: str, reason: str, start: float, n_files: int) -> None:
        target = self.root / "failed" / study
        shutil.rmtree(target, ignore_errors=True)
        queued = self.root / "queue" / study
        if queued.exists():
            os.replace(queued, target)
        target.mkdir(parents=True, exist_ok=True)
        _fsync_write(target / "reason.txt", (reason + "\n").encode())
        shutil.rmtree(self.root / "results" / study, ignore_errors=True)
        log.error("study %s: rejected (%d instances) in %.1f s: %s", study, n_files,
                  time.perf_counter() - start, reason)

    # -- life cycle ------------------------------------------------------------------------------

    def recover(self) -> None:
        """Pick up what a previous run left: queued studies are analyzed now, partly received
        ones are complete after the idle time from now; the hidden staging folders of analyses
        that were killed are removed."""
        for stale in (self.root / "results").glob(".*.covidct-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for folder in sorted((self.root / "queue").iterdir()):
            if folder.is_dir():
                log.info("study %s: resuming after a restart", folder.name)
                with self._lock:
                    self._submit(folder.name)
        for folder in sorted((self.root / "incoming").iterdir()):
            if folder.is_dir():
                count = sum(1 for _ in folder.glob("*.dcm"))
                log.info("study %s: %d instances received before a restart", folder.name, count)
                with self._lock:
                    self._arrivals[folder.name] = _Arrival(time.monotonic(), count, {"(before restart)"})

    def start(self) -> None:
        """Listen, prepare the storage folder and recover what a previous run left (returns at
        once; the server runs in threads). Raises OSError, saying which, when the port cannot be
        bound or the storage folder cannot be used; nothing is created then."""
        from pydicom.uid import ImplicitVRLittleEndian
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.config.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, [ImplicitVRLittleEndian])
        if self.config.allowed_ae_titles:
            ae.require_calling_aet = list(self.config.allowed_ae_titles)
        ae.maximum_pdu_size = 0
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_REJECTED, self._on_rejected)]
        try:
            self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise OSError(f"{self.config.host}:{self.config.port}: cannot listen ({exc.strerror or exc})") from None
        try:
            for name in ("incoming", "queue", "results", "done", "failed"):
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._server.shutdown()
            raise OSError(f"{self.root}: cannot use as storage ({exc.strerror or exc})") from None
        self.recover()  # before the watcher: studies found here are not yet idle
        self._watcher = threading.Thread(target=self._watch, name="covidct-idle", daemon=True)
        self._watcher.start()
        log.info("covidct serve: %s listening on %s:%d, results to %s, storage %s, %d worker(s), idle %.0f s%s",
                 self.config.ae_title, self.config.host, self.port, self.config.destination or "nowhere",
                 self.root, self.config.workers, self.config.idle_s,
                 f", calling AE titles {', '.join(self.config.allowed_ae_titles)}" if self.config.allowed_ae_titles else "")

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when configured as 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self.config.port

    def stop(self) -> None:
        """Stop listening and analyzing; unfinished studies stay where a restart finds them."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        with self._lock:
            for child in self._children:
                child.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def serve_forever(self) -> None:
        """:meth:`start`, then run until SIGINT or SIGTERM, then :meth:`stop`."""
        self.start()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        log.info("covidct serve: stopping")
        self.stop()

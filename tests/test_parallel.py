import pytest

from covidct.errors import InputError
from covidct.parallel import available_cpus, process_map, thread_map


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise InputError(f"item {x}: cannot be read")
    return x


def test_available_cpus_is_positive():
    assert available_cpus() >= 1


def test_thread_map_keeps_order():
    assert thread_map(_square, range(50)) == [x * x for x in range(50)]
    assert thread_map(_square, []) == []


def test_process_map_keeps_order_and_passes_errors_through():
    assert list(process_map(_square, range(40), chunksize=3)) == [x * x for x in range(40)]
    with pytest.raises(InputError, match="item 3: cannot be read"):
        list(process_map(_fail_on_three, range(20)))
    assert list(process_map(_square, range(3))) == [0, 1, 4]  # few items: in this process

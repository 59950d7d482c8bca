import pytest

from fluxo_core.clock import SYSTEM_CLOCK, ManualClock


def test_a_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(start=100.0)
    assert (clock.time(), clock.monotonic()) == (100.0, 100.0)
    clock.advance(2.5)
    assert (clock.time(), clock.monotonic()) == (102.5, 102.5)


def test_a_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="forward only"):
        ManualClock().advance(-1)


def test_the_system_clock_reads_the_machine() -> None:
    import time

    before = time.time()
    assert before <= SYSTEM_CLOCK.time() <= time.time()
    assert SYSTEM_CLOCK.monotonic() <= time.monotonic()

"""Key presses grouped into runs (the clock is the test's)."""

from __future__ import annotations

from dealerline_gateway.keypad import MAX_KEYS, KeyRun, KeyRuns


def test_hash_ends_a_run_at_once_and_stays_in_it() -> None:
    keys = KeyRuns(1.5)
    assert keys.press("1", 10.0) == []
    assert keys.deadline == 11.5
    assert keys.press("2", 10.5) == []
    assert keys.press("#", 10.7) == [KeyRun(1, "12#", 10.0, 10.7)]
    assert keys.deadline is None
    assert keys.expire(100.0) is None


def test_a_run_ends_interdigit_after_its_last_key() -> None:
    keys = KeyRuns(1.5)
    keys.press("4", 10.0)
    keys.press("2", 11.0)
    assert keys.expire(12.4) is None  # 1.4 s after the last key
    assert keys.expire(12.5) == KeyRun(1, "42", 10.0, 11.0)
    assert keys.expire(20.0) is None


def test_a_run_ends_at_32_keys() -> None:
    keys = KeyRuns(1.5)
    for i in range(MAX_KEYS - 1):
        assert keys.press("7", 10.0 + i / 10) == []
    (run,) = keys.press("*", 14.0)
    assert run == KeyRun(1, "7" * (MAX_KEYS - 1) + "*", 10.0, 14.0)
    assert keys.press("1", 14.1) == []  # the next key starts run 2
    assert keys.expire(30.0) == KeyRun(2, "1", 14.1, 14.1)


def test_runs_are_numbered_per_stream_and_a_key_after_expiry_starts_the_next() -> None:
    keys = KeyRuns(1.0)
    assert keys.press("#", 1.0) == [KeyRun(1, "#", 1.0, 1.0)]
    keys.press("5", 2.0)
    assert keys.expire(3.0) == KeyRun(2, "5", 2.0, 2.0)
    keys.press("6", 4.0)
    # The timer had not fired yet when the next key came: the old run ends first.
    assert keys.press("#", 9.0) == [KeyRun(3, "6", 4.0, 4.0), KeyRun(4, "#", 9.0, 9.0)]
    assert KeyRuns(1.0).press("1", 0.0) == []  # another stream counts from 1 again


def test_drop_forgets_the_open_run() -> None:
    keys = KeyRuns(1.0)
    keys.press("9", 1.0)
    keys.drop()
    assert keys.deadline is None
    assert keys.expire(10.0) is None
    keys.press("1", 11.0)
    assert keys.expire(12.0) == KeyRun(2, "1", 11.0, 11.0)  # numbering goes on

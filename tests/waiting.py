"""Waiting on a state, never on the clock: what the process and server tests use instead of sleeps."""
from __future__ import annotations

import time


def wait_for(condition, timeout: float, what: str):
    """`condition()`'s first true value, polled every 0.2 s; fails the test, naming `what`, after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)
    return value

"""Small helpers the end-to-end tests share."""

import os
import time

import pytest

import rx_magic


def newest_job():
    return rx_magic.jobs(1)[0]


def wait_for(predicate, what, timeout=30):
    """Wait until ``predicate()`` is true; a hung job fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def process_is_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False

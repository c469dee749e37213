"""Deadlines of :func:`testbed.util.wait_until` and their scale for slow machines (``CDNLAB_TIMEOUT_SCALE``)."""

from __future__ import annotations

import time

import pytest

from testbed.util import DeadlineExceeded, timeout_scale, wait_until


def test_a_deadline_is_stretched_by_the_scale_and_named_in_the_error(monkeypatch):
    monkeypatch.setenv("CDNLAB_TIMEOUT_SCALE", "3")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"thing not reached within 0\.3s"):
        wait_until(lambda: False, 0.1, what="thing")
    assert 0.28 <= time.monotonic() - t0 < 2


def test_without_the_variable_deadlines_are_as_written(monkeypatch):
    monkeypatch.delenv("CDNLAB_TIMEOUT_SCALE", raising=False)
    assert timeout_scale() == 1.0
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        wait_until(lambda: False, 0.1)
    assert time.monotonic() - t0 < 0.3


@pytest.mark.parametrize("bad", ["fast", "0.5", "0", "1000"])
def test_a_bad_scale_is_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv("CDNLAB_TIMEOUT_SCALE", bad)
    with pytest.raises(ValueError, match="CDNLAB_TIMEOUT_SCALE must be a number within 1..100"):
        wait_until(lambda: True, 1)

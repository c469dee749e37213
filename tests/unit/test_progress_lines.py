"""Progress as plain lines for pipes and logs (experiments.progress.LineProgress)."""

from __future__ import annotations

import io
import re

from experiments.framework import _Task
from experiments.progress import LineProgress


def test_steps_print_start_heartbeat_and_end() -> None:
    out = io.StringIO()
    p = LineProgress(prefix="selection", stream=out, interval=60)
    t = _Task(p, "methods", 3)
    t.advance()
    p.heartbeat()
    t.advance(2)
    p.heartbeat()  # between steps: how long since the last one ended
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] selection: methods \.\.\.", lines[0])
    assert re.search(r"selection: methods 1/3 \(33 %\), \d+ s so far, about \d+ s left$", lines[1])
    assert re.search(r"selection: methods: done in \d+ s$", lines[2])
    assert re.search(r"selection: working: \d+ s since methods ended$", lines[3]) and len(lines) == 4
    quiet = io.StringIO()
    LineProgress(stream=quiet).heartbeat()  # before the first step: nothing
    assert quiet.getvalue() == ""


def test_a_single_long_step_says_it_is_running_and_done_finishes_it() -> None:
    out = io.StringIO()
    p = LineProgress(stream=out, interval=60)
    t = _Task(p, "caching: no_cache (20 s of load)", 1)
    task = p.tasks[0]
    assert p.line(task, now=task.started + 12) == "caching: no_cache (20 s of load): running for 12 s, no estimate yet"
    t.done()
    assert out.getvalue().splitlines()[-1].endswith("caching: no_cache (20 s of load): done in 0 s")


def test_heartbeats_come_on_their_own() -> None:
    out = io.StringIO()
    with LineProgress(prefix="demo", stream=out, interval=0.05) as p:
        _Task(p, "building globe (48 hosts)", 2)
        import time

        deadline = time.monotonic() + 5
        while out.getvalue().count("so far") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    beats = [ln for ln in out.getvalue().splitlines() if "so far" in ln]
    assert len(beats) >= 2 and "demo: building globe (48 hosts) 0/2 (0 %)" in beats[0], out.getvalue()
    assert beats[0].endswith("no estimate yet")


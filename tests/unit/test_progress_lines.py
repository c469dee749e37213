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



def test_web_progress_forwards_and_reports_the_step_under_way() -> None:
    from experiments.progress import WebProgress

    out = io.StringIO()
    reports: list[tuple] = []
    inner = LineProgress(prefix="selection", stream=out, interval=60)
    p = WebProgress(inner, "selection", lambda *a: reports.append(a))
    t = _Task(p, "methods", 4)
    t.advance()
    assert reports[-1][:3] == ("selection", 0.25, "methods 1/4")
    assert reports[-1][3]["steps done"] == 0 and reports[-1][3]["steps"] == 1
    t.done()  # done() reads the inner progress's tasks and updates through the wrapper
    assert reports[-1][1] == 1.0 and reports[-1][3]["steps done"] == 1
    assert "selection: methods: done in" in out.getvalue()  # the inner display still got every call
    alone = WebProgress(None, "zipf", lambda *a: reports.append(a))
    _Task(alone, "sizes", 2).advance()
    assert reports[-1][:3] == ("zipf", 0.5, "sizes 1/2")


def test_figures_so_far_reach_the_dashboard_and_are_a_no_op_elsewhere() -> None:
    from types import SimpleNamespace

    from experiments.framework import Run
    from experiments.progress import WebProgress

    reports: list[tuple] = []
    web = WebProgress(None, "selection", lambda *a: reports.append(a))
    run = Run(spec=SimpleNamespace(name="selection"), out=None, seed=1, quick=True, topology=None, params={},
              progress=web)
    _Task(web, "methods", 3).advance()
    run.figure("anycast: total p50 ms", 20.2)
    assert reports[-1][3]["anycast: total p50 ms"] == 20.2 and reports[-1][3]["steps"] == 1
    for progress in (None, LineProgress(stream=io.StringIO())):  # a plain display has no figures: nothing
        Run(spec=SimpleNamespace(name="x"), out=None, seed=1, quick=True, topology=None, params={},
            progress=progress).figure("dns: total p50 ms", 31.2)


def test_rows_figure_summarizes_a_batch_of_driver_samples() -> None:
    from types import SimpleNamespace

    from experiments.framework import Run
    from experiments.progress import WebProgress

    reports: list[tuple] = []
    run = Run(spec=SimpleNamespace(name="caching"), out=None, seed=1, quick=True, topology=None, params={},
              progress=WebProgress(None, "caching", lambda *a: reports.append(a)))
    rows = [{"total_ms": 30.0}, {"total_ms": 10.0}, {"total_ms": 20.0}, {"error": "timeout", "total_ms": None}]
    run.rows_figure("with_cache", rows)
    figures = reports[-1][3]
    assert (figures["with_cache: requests"], figures["with_cache: errors"]) == (4, 1)
    assert figures["with_cache: total p50 ms"] == 20.0

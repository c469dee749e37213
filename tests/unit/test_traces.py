"""Bandwidth traces: the file format, the spec's ``trace:`` field, and the player's schedule."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from testbed.net.links import htb_rate_command
from testbed.net.spec import LinkParams
from testbed.net.traces import TRACE_DIR, Trace, TraceError, TracePlayer, load_trace, parse_trace


def test_shipped_traces_load_and_loop() -> None:
    names = sorted(p.stem for p in TRACE_DIR.glob("*.csv"))
    assert {"3g-bus", "4g-drive", "step-down"} <= set(names)
    for n in names:
        t = load_trace(n)
        assert t.period_s > 0 and all(0 < m <= 100 for _, m in t.steps)
    t = load_trace("step-down")
    assert t.steps == ((5.0, 8.0), (5.0, 1.5), (5.0, 8.0))
    assert [t.rate_at(x) for x in (0, 4.99, 5, 9.99, 10, 15, 20.5)] == [8, 8, 1.5, 1.5, 8, 8, 1.5]
    assert t.mean_mbit() == pytest.approx((40 + 7.5 + 40) / 15)


def test_the_format_takes_comments_a_header_tabs_and_spaces() -> None:
    t = parse_trace("# a trace\nduration_s,mbit\n1,2\n\n0.5\t3  # dip\n2 4\n", "x.csv")
    assert t.steps == ((1.0, 2.0), (0.5, 3.0), (2.0, 4.0))


@pytest.mark.parametrize(("text", "message"), [
    ("1,2\n1,2,3\n", "x.csv:2: expected 'duration_s,mbit'"),
    ("1,fast\n", "x.csv:1: '1,fast' is not two numbers"),
    ("0,2\n", "x.csv:1: duration 0 s is outside"),
    ("1,0\n", "x.csv:1: rate 0 Mbit/s is outside (0, 10000] (a link that is down is a failure"),
    ("1,20000\n", "x.csv:1: rate 20000 Mbit/s is outside"),
    ("# nothing\n", "x.csv: no steps"),
])
def test_a_bad_trace_is_rejected_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(TraceError) as e:
        parse_trace(text, "x.csv")
    assert message in str(e.value)


def test_the_spec_checks_the_trace_and_starts_at_its_first_rate(tmp_path: Path) -> None:
    p = LinkParams(delay_ms=3, trace="step-down")
    assert p.bw_mbit == 8.0 and p.shaped
    assert LinkParams(trace="step-down", bw_mbit=2).bw_mbit == 2  # an explicit rate is kept
    with pytest.raises(ValidationError) as e:
        LinkParams(trace="no-such-trace")
    assert "trace: trace 'no-such-trace': cannot read" in str(e.value) and "3g-bus" in str(e.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\nx,y\n")
    with pytest.raises(ValidationError, match=r"trace: .*bad.csv:2: 'x,y' is not two numbers"):
        LinkParams(trace=str(bad))


def test_the_player_changes_the_rate_on_schedule_and_stops() -> None:
    calls: list[tuple[float, float]] = []
    t = Trace("t", ((0.1, 5.0), (0.2, 1.0), (0.1, 3.0)))
    tp = TracePlayer(t, lambda m: calls.append((time.monotonic(), m)), "c1-s1").start()
    time.sleep(0.75)  # one period (0.4 s) and most of a second
    tp.stop()
    n = len(calls)
    time.sleep(0.15)
    assert len(calls) == n  # stopped: no more changes
    assert [m for _, m in calls[:5]] == [5.0, 1.0, 3.0, 5.0, 1.0]
    offsets = [c - tp.started for c, _ in calls[:5]]
    for got, want in zip(offsets, [0.0, 0.1, 0.3, 0.4, 0.5], strict=True):
        assert abs(got - want) < 0.03, offsets
    assert [m for _, m in tp.applied] == [m for _, m in calls] and tp.errors == []


def test_a_failing_rate_change_is_kept_not_raised() -> None:
    def boom(_m: float) -> None:
        raise RuntimeError("tc said no")

    tp = TracePlayer(Trace("t", ((0.05, 1.0),)), boom, "c1-s1").start()
    time.sleep(0.3)
    tp.stop()
    assert tp.errors and tp.errors[0] == "c1-s1: RuntimeError: tc said no" and tp.applied == []


def test_the_rate_change_is_tc_class_change_of_the_htb_class() -> None:
    assert htb_rate_command("c1-eth0", 1.5) == (
        "tc class change dev c1-eth0 parent 5: classid 5:1 htb rate 1.5mbit burst 15000 quantum 1600")

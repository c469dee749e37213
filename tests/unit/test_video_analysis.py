"""The video experiment's arithmetic (experiments.video: analyse_failover, summarize, the buffer line, the next request) on made-up logs."""

from __future__ import annotations

import pytest

from experiments.video import analyse_failover, summarize

START = 1000.0  # the session's wall-clock time 0


def _seg(t_done: float, server: str, stall_s: float = 0.0) -> dict:
    return {"t_done": str(t_done), "server": server, "stall_s": str(stall_s),
            "stall_start": str(t_done - stall_s) if stall_s else ""}


def _job(rows: list[dict], failures: list[dict], error: str = "") -> dict:
    return {"rows": rows, "summary": {"started_wall": START, "failures": failures, "error": error}}


def test_the_gap_runs_from_the_first_failed_request_to_another_edges_segment() -> None:
    rows = [_seg(3.0, "e1"), _seg(4.0, "e1"), _seg(6.5, "e2", stall_s=1.2), _seg(7.0, "e2")]
    fails = [{"t": 4.6, "what": "segment 5", "error": "refused"}, {"t": 4.8, "what": "segment 5", "error": "x"}]
    res = analyse_failover(_job(rows, fails), START + 4.5, "e1")
    assert res["t_fail_s"] == 4.5
    assert res["gap_s"] == pytest.approx(6.5 - 4.6)
    assert res["stall_s"] == 1.2 and res["stalls"] == 1
    assert res["failed_attempts"] == 2 and res["new_edge"] == "e2" and res["recovered"]


def test_a_failure_the_buffer_hid_has_no_gap_and_no_stall() -> None:
    rows = [_seg(3.0, "e1"), _seg(5.0, "e2"), _seg(6.0, "e2")]
    res = analyse_failover(_job(rows, []), START + 4.0, "e1")
    assert res["gap_s"] == 0.0 and res["stall_s"] == 0 and res["failed_attempts"] == 0
    assert res["new_edge"] == "e2"


def test_stalls_and_failures_before_the_failure_are_not_counted() -> None:
    rows = [_seg(1.0, "e1", stall_s=0.5), _seg(5.0, "e1"), _seg(6.0, "e2")]
    fails = [{"t": 0.5, "what": "segment 1", "error": "early"}]
    res = analyse_failover(_job(rows, fails), START + 4.0, "e1")
    assert res["stall_s"] == 0 and res["failed_attempts"] == 0
    # the dying edge's last segment (done after the failure) is not a recovery
    assert res["new_edge"] == "e2"


def test_no_segment_from_another_edge_is_no_recovery() -> None:
    res = analyse_failover(_job([_seg(3.0, "e1")], [{"t": 4.1, "what": "s", "error": "x"}], error="gave up"),
                           START + 4.0, "e1")
    assert res["gap_s"] is None and not res["recovered"] and res["error"] == "gave up"


def _session(phase: str, label: str, method: str, stalls: int = 0, **kw) -> dict:
    base = {"phase": phase, "label": label, "method": method, "policy": "mpc", "client": "c", "region": "eu",
            "title": "t", "segments": 6, "startup_s": 0.2, "rebuffer_s": 0.5 * stalls, "rebuffer_count": stalls,
            "rebuffer_ratio": 0.0, "avg_bitrate_kbps": 2400.0, "switches": 1, "qoe_per_segment": 2000.0,
            "failed_attempts": 0, "error": "", "hit_fraction": 0.0, "servers": "e1"}
    return {**base, **kw}


def test_summarize_counts_stalls_per_method_and_without_failures() -> None:
    sessions = [
        _session("steady", "anycast", "anycast"), _session("steady", "anycast", "anycast", stalls=1),
        _session("steady", "dns", "dns", avg_bitrate_kbps=1200.0), _session("cache", "cold", "anycast"),
        _session("cache", "warm", "anycast", hit_fraction=1.0), _session("bottleneck", "bba", "anycast"),
        _session("failover", "dns/ttl2", "dns", stalls=2),
    ]
    trials = [{"label": "dns/ttl2", "method": "dns", "stall_s": 1.0, "stalls": 2, "gap_s": 3.1,
               "failed_attempts": 9, "new_edge": "e2", "recovered": True, "dns_ttl": 2}]
    res = summarize(sessions, trials, ["anycast", "dns"])
    assert res["methods"]["anycast"]["sessions"] == 2 and res["methods"]["anycast"]["stalls"] == 1
    assert res["methods"]["dns"]["avg_bitrate_kbps_median"] == 1200.0
    assert res["stalls_without_failure"] == 1  # the failover's stalls are not in it
    assert res["cache"]["warm"]["hit_fraction"] == 1.0 and set(res["policies"]) == {"bba"}
    assert res["failover"]["dns/ttl2"]["gap_s"] == 3.1
    assert "3.10 s" in res["summary"].splitlines()[2]


def test_the_buffer_line_drains_sits_at_zero_while_stalled_and_jumps_on_arrival() -> None:
    from experiments.video import _buffer_line

    rows = [{"t_done": "1.0", "buffer_s": "2.0"}, {"t_done": "2.0", "buffer_s": "2.0"},
            {"t_done": "5.0", "buffer_s": "1.0"}]
    xs, ys = _buffer_line(rows, t0=1.0)
    # 2 s at t=1; drained to 1 s at t=2, +1 segment -> 2; empty at t=4, stalled until 5, then 1
    assert list(zip(xs, ys, strict=True)) == [(0.0, 2.0), (1.0, 1.0), (1.0, 2.0), (3.0, 0.0), (4.0, 0.0),
                                              (4.0, 1.0)]


def test_the_next_request_comes_when_the_buffer_has_room_for_a_segment() -> None:
    from experiments.video import next_request_wall

    # requested at session 4.0 (wall 104.0), in at 4.3 with 1.8 s buffered; 2 s buffer of 1 s segments:
    # room for the next once the buffer is down to 1 s, 0.8 s later
    row = {"t_request": "4.0", "t_done": "4.3", "buffer_s": "1.8", "wall": "104.0"}
    assert next_request_wall(row, max_buffer_s=2.0, segment_s=1.0) == pytest.approx(105.1)
    # a buffer with room already: at once
    assert next_request_wall({**row, "buffer_s": "0.5"}, 2.0, 1.0) == pytest.approx(104.3)

"""The failover experiment's outage arithmetic (experiments.failover.analyse), on made-up probe rows."""

from __future__ import annotations

from experiments.failover import analyse

T_FAIL = 1000.0


def _row(t: float, served_by: str = "", error: str = "", total_ms: float = 5.0) -> dict:
    return {"t": t, "served_by": served_by, "error": error, "total_ms": total_ms}


def test_outage_ends_at_the_first_success_through_another_edge() -> None:
    rows = [
        _row(999.8, "e1"),
        _row(1000.01, "e1"),  # the dying edge still answered a fetch in flight: not a recovery
        _row(1000.2, error="timeout", total_ms=1000),
        _row(1000.4, error="refused"),
        _row(1000.6, "e2"),
        _row(1000.8, "e2"),
    ]
    res = analyse(rows, T_FAIL, victim="e1")
    assert res["outage_ms"] == 600.0 and res["new_edge"] == "e2" and res["recovered"]
    assert res["failed_requests"] == 2 and res["probes"] == 6


def test_no_success_through_another_edge_means_no_recovery() -> None:
    rows = [_row(999.0, "e1"), _row(1000.5, "e1"), _row(1001.0, error="timeout")]
    res = analyse(rows, T_FAIL, victim="e1")
    assert res["outage_ms"] is None and not res["recovered"] and res["new_edge"] == ""


def test_a_failed_probe_that_ended_before_the_failure_is_not_counted() -> None:
    rows = [_row(998.0, error="timeout", total_ms=500), _row(999.9, error="x", total_ms=200), _row(1000.1, "e3")]
    res = analyse(rows, T_FAIL, victim="e1")
    assert res["failed_requests"] == 1 and res["outage_ms"] == 100.0

"""The network stage of the labs' graders, run as an instructor runs it: ``cdnlab grade LAB --stage network``.

The reference solutions pass inside the real controller and edges, on the visible and the hidden
topology or workload; the starter and a typical mistake fail there with what the clients saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import grade

pytestmark = pytest.mark.mininet

ROOT = grade.assignments_dir()
NETWORK_LABS = sorted(grade.list_labs())  # every lab has a network stage


def _network(lab: str, solution: Path) -> list[grade.Result]:
    results, _ = grade.grade(grade.load_lab(lab), solution, stages=("network",))
    assert results and all(r.name.startswith("network") for r in results), results
    return results


@pytest.mark.parametrize("lab", NETWORK_LABS)
def test_the_reference_passes_the_network_stage(lab: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = grade.main([lab, "--solution", str(ROOT / lab / "solution"), "--stage", "network", "--verbose"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "SKIP" not in out and "hidden" in out


def test_the_starter_fails_the_network_stage_with_what_the_controller_saw() -> None:
    results = _network("anycast-failover", ROOT / "anycast-failover" / "starter")
    assert not any(r.ok or r.skipped for r in results), results
    assert "did not come up" in results[0].message and "NotImplementedError: TODO choose" in results[0].message


def test_a_health_blind_choice_fails_the_failover_in_the_network(tmp_path: Path) -> None:
    src = (ROOT / "anycast-failover" / "solution" / "anycast_choice.py").read_text()
    f = tmp_path / "anycast_choice.py"
    f.write_text(src.replace("if not svc.health[m].healthy:", "if False:"))
    results = _network("anycast-failover", f)
    assert not any(r.ok for r in results)
    assert "killed" in results[0].message, results[0].message


def test_freshness_without_s_maxage_fails_only_the_hidden_workload(tmp_path: Path) -> None:
    src = (ROOT / "http-caching" / "solution" / "freshness.py").read_text()
    broken = src.replace('("s-maxage", "max-age") if shared else ', "")
    assert broken != src
    f = tmp_path / "freshness.py"
    f.write_text(broken)
    ok = {r.name: r.ok for r in _network("http-caching", f)}
    assert ok == {
        "network (mini): your functions in the edges, a client through them": True,
        "network (hidden workload): other Cache-Control at the origin": False,
    }, ok

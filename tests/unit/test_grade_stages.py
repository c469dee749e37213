"""``cdnlab grade --stage``: the direct and the network stage, and a network check that cannot run here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed import grade, grade_network


def test_every_lab_has_a_visible_and_a_hidden_network_check() -> None:
    for name in grade.list_labs():
        checks = grade.load_lab(name).grader.checks()
        net = [c for c in checks if c.stage == "network"]
        assert {c.visibility for c in net} == {"visible", "after_due_date"}, (name, net)
        assert all(c.stage in grade.STAGES for c in checks)


def test_the_stage_selects_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = grade.load_lab("anycast-failover")
    sol = lab.solution
    monkeypatch.setenv("CDNLAB_GRADE_STAGE", "direct")
    direct, _ = grade.grade(lab, sol)
    assert direct and all(r.ok and not r.name.startswith("network") for r in direct)
    monkeypatch.setenv("CDNLAB_GRADE_STAGE", "sideways")
    with pytest.raises(ValueError, match="CDNLAB_GRADE_STAGE must be all, direct or network"):
        grade.grade(lab, sol)


def test_a_check_that_cannot_run_is_skipped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    return 1\n")

    def needs_network(mod: object) -> str:
        raise grade.Skip("the network stage needs root")

    checks = [grade.Check("direct", lambda m: str(m.f())), grade.Check("net", needs_network, stage="network")]
    lab = grade.Lab("x", tmp_path, SimpleNamespace(checks=lambda: checks), "x", "m")  # type: ignore[arg-type]
    monkeypatch.setattr(grade, "load_lab", lambda name: lab)
    out_file = tmp_path / "results.json"
    assert grade.main(["x", "-s", str(f), "--stage", "all", "--format", "gradescope", "--out", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "SKIP  net: skipped: the network stage needs root" in text
    assert "score: 1/2 (1 skipped: they count as not passed)" in text
    res = json.loads(out_file.read_text())
    assert res["score"] == 1 and res["max_score"] == 2
    assert res["tests"][1]["output"] == "skipped: the network stage needs root"
    assert grade.main(["x", "-s", str(f), "--stage", "direct"]) == 0


def test_without_root_the_network_stage_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in (grade_network.unavailable() or "")
    with pytest.raises(grade.Skip, match="sudo cdnlab grade"):
        grade_network.require_network()


def test_a_submission_for_a_service_carries_the_lab_reference(tmp_path: Path) -> None:
    from contract.sandbox import Sandbox

    f = tmp_path / "anycast_choice.py"
    f.write_text((grade.load_lab("anycast-failover").solution / "anycast_choice.py").read_text())
    with Sandbox(f, "cdnlab_student_anycast_failover", ["controller.anycast:choose"]) as sb:
        sb.start()
        mod = sb.load()
        sub = grade_network.submission_of(mod, ["controller.anycast:choose"], {"controller.anycast:choose": "choose"})
    assert sub.file == f.resolve() and sub.module == "cdnlab_student_anycast_failover"
    assert sub.preload == ["controller.anycast"] and grade.assignments_dir() in sub.protected

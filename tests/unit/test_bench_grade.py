"""``cdnlab bench grade``: each lab's reference graded as a course's autograder runs it, timed; a reference
that loses a point fails the benchmark (exit 1) instead of giving a figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import grade as bench_grade
from testbed import grade

LAB = "multicast-tree"


def test_the_reference_is_timed_with_full_marks(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_grade.main(["--labs", LAB, "--stage", "direct", "--runs", "2", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    lab = res["labs"][LAB]
    assert res["stage"] == "direct" and res["runs"] == 2 and len(lab["all_seconds"]) == 2
    assert lab["score"] == lab["max_score"] > 0 and 0 < lab["seconds"] == res["max_seconds"]
    assert res["targets_met"] is True and sum(LAB in line for line in out[:-1]) == 2


def test_a_reference_that_loses_points_fails_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    labs = tmp_path / "labs"
    shutil.copytree(grade.assignments_dir() / LAB, labs / LAB)
    shutil.copy(labs / LAB / "starter" / "mcast_tree.py", labs / LAB / "solution" / "mcast_tree.py")
    monkeypatch.setenv("CDNLAB_ASSIGNMENTS", str(labs))
    assert bench_grade.main(["--labs", LAB, "--stage", "direct"]) == 1
    err = capsys.readouterr().err
    assert f"FAILED: {LAB}: the reference earned 0.0/" in err and "tree ports" in err, err


def test_an_unknown_lab_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_grade.main(["--labs", "no-such-lab"]) == 2
    assert "no lab ['no-such-lab']" in capsys.readouterr().err

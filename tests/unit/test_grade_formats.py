"""``cdnlab grade --format gradescope`` writes Gradescope's results.json; ``cdnlab lab export`` writes a
student's copy of a lab without its answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import grade, lab_export

LABS = grade.list_labs()
ROOT = grade.assignments_dir()
TEST_KEYS = {"name", "score", "max_score", "output", "visibility"}


@pytest.mark.parametrize("lab", LABS)
def test_reference_solution_earns_full_marks_in_gradescope_format(lab: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    sol = ROOT / lab / "solution"
    assert grade.main([lab, "--solution", str(sol), "--format", "gradescope", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["score"] == data["max_score"] == len(data["tests"]) > 0
    assert data["execution_time"] >= 0 and "score:" in data["output"]
    assert all(set(t) == TEST_KEYS and t["visibility"] in grade.GRADESCOPE_VISIBILITY for t in data["tests"])
    hidden = {c.name for c in grade.load_lab(lab).grader.checks() if c.visibility != "visible" and c.stage == "direct"}
    assert {t["name"] for t in data["tests"] if t["visibility"] == "after_due_date"} == hidden


def test_starter_scores_zero_and_each_failure_says_why(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    assert (
        grade.main(["http-caching", "--format", "gradescope", "--out", str(out)]) == 0
    )  # a grade, not an error
    data = json.loads(out.read_text())
    assert data["score"] == 0 and data["max_score"] == len(data["tests"])
    assert all(
        t["score"] == 0 and "TODO" in t["output"] and "hint:" in t["output"] for t in data["tests"][:1]
    )


def test_gradescope_json_on_stdout_keeps_the_report_on_stderr(capsys) -> None:
    assert grade.main(["http-caching", "--format", "gradescope"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["max_score"] > 0
    assert "score: 0/" in captured.err


def test_points_and_hidden_checks_are_carried(tmp_path: Path) -> None:
    lab = grade.load_lab("http-caching")
    results = [
        grade.Result("a", True, "ok", points=2.0),
        grade.Result("b", False, "wrong", "see RFC", points=3.0, visibility="after_due_date"),
        grade.Result("c", False, "x", visibility="bogus"),
    ]
    data = grade.gradescope_results(lab, results, 1.5, "report")
    assert (data["score"], data["max_score"]) == (2.0, 6.0)
    assert [t["visibility"] for t in data["tests"]] == ["visible", "after_due_date", "visible"]
    assert data["tests"][1]["output"] == "wrong\nhint: see RFC"


@pytest.mark.parametrize("lab", LABS)
def test_export_has_handout_and_starter_but_no_answers(lab: str, tmp_path: Path) -> None:
    dest = tmp_path / "handout"
    files = lab_export.export(lab, dest)
    names = {str(f) for f in files}
    assert "README.md" in names and any(n.startswith("starter/") for n in names)
    assert not any("solution" in n or n.endswith("grader.py") or "__pycache__" in n for n in names)
    assert {p.relative_to(dest) for p in dest.rglob("*") if p.is_file()} == set(files)


def test_export_refuses_a_non_empty_directory_and_unknown_labs(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(lab_export.ExportError, match="not empty"):
        lab_export.export("http-caching", tmp_path)
    lab_export.export("http-caching", tmp_path, force=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"  # --force deletes nothing
    with pytest.raises(lab_export.ExportError, match="no lab named"):
        lab_export.export("no-such-lab", tmp_path / "x")


def test_export_refuses_a_lab_whose_handout_contains_the_solution(tmp_path: Path) -> None:
    root = tmp_path / "labs"
    lab = root / "leaky"
    for d in ("starter", "solution"):
        (lab / d).mkdir(parents=True)
    (lab / "README.md").write_text("handout")
    (lab / "grader.py").write_text("MODULE = 'x'\n")
    (lab / "solution" / "x.py").write_text("ANSWER = 42\n")
    (lab / "starter" / "x.py").write_text("ANSWER = 42\n")  # an instructor copied the answer by mistake
    with pytest.raises(lab_export.ExportError, match="content of a solution file"):
        lab_export.export("leaky", tmp_path / "out", root=root)
    assert not (tmp_path / "out").exists()


def test_cli_export(tmp_path: Path, capsys) -> None:
    assert lab_export.main(["export", "dns-mapping", str(tmp_path / "h")]) == 0
    assert "exported dns-mapping" in capsys.readouterr().out
    assert lab_export.main(["export", "dns-mapping", str(tmp_path / "h")]) == 2
    assert "not empty" in capsys.readouterr().err

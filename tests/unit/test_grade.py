"""``cdnlab grade``: every lab fails its starter (with helpful messages) and passes its solution; the grader
survives student code that raises, loops forever, or does not import; mutants of the solutions are caught."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from contract.sandbox import load_file
from testbed import grade

LABS = [
    "http-caching",
    "cache-replacement",
    "dns-mapping",
    "anycast-failover",
    "multicast-tree",
    "video-streaming",
    "server-selection",
    "cooperative-caching",
]
ROOT = grade.assignments_dir()


def test_all_labs_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert grade.list_labs() == sorted(LABS)
    assert grade.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(lab in out for lab in LABS)


@pytest.mark.parametrize("argv", [[], ["no-such-lab"]])
def test_missing_or_unknown_lab_lists_labs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert grade.main(argv) == 2
    out = capsys.readouterr().out
    assert "labs:" in out and all(lab in out for lab in LABS)
    if argv:
        assert "no lab named 'no-such-lab'" in out


@pytest.mark.parametrize("lab", LABS)
def test_starter_fails_with_helpful_messages(lab: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert grade.main([lab]) != 0
    out = capsys.readouterr().out
    assert "FAIL" in out and "hint:" in out
    assert "TODO" in out  # the NotImplementedError of the starter names what to do
    assert "score: 0/" in out


@pytest.mark.parametrize("lab", LABS)
def test_solution_passes(lab: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = grade.main([lab, "--solution", str(ROOT / lab / "solution")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out
    n = len([c for c in grade.load_lab(lab).grader.checks() if c.stage == "direct"])  # the unit tier's stage
    assert f"score: {n}/{n}" in out


def test_solution_given_as_a_file_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    f = ROOT / "cache-replacement" / "solution" / "policy.py"
    assert grade.main(["cache-replacement", "-s", str(f), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "hit ratio" not in out or "LFUDA" in out
    assert "Zipf(0.8), 2000 objects, cache 200: LFUDA" in out  # verbose shows the figures of passing checks


def test_missing_solution_file_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert grade.main(["dns-mapping", "-s", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "has no mapping_policy.py" in out and "score: 0/" in out


def test_student_exception_is_a_failed_check_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = (ROOT / "anycast-failover" / "solution" / "anycast_choice.py").read_text()
    f = tmp_path / "anycast_choice.py"
    f.write_text(
        src.replace(
            "    out: dict[str, str | None] = {}\n", "    out: dict[str, str | None] = {}\n    {}['x']\n"
        )
    )
    assert grade.main(["anycast-failover", "-s", str(f)]) == 1
    out = capsys.readouterr().out
    assert "your code raised KeyError: 'x' (at anycast_choice.py:" in out and "in choose)" in out


def test_module_that_does_not_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "mcast_tree.py"
    f.write_text("def build_tree(:\n")
    assert grade.main(["multicast-tree", "-s", str(f)]) == 1
    out = capsys.readouterr().out
    assert "does not import: SyntaxError" in out
    assert "score: 0/6" in out


def test_endless_loop_times_out_in_main_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "policy.py"
    f.write_text("class LFUDA:\n    def __init__(self):\n        while True:\n            pass\n")
    lab = grade.load_lab("cache-replacement")
    mod = load_file(f, grade.student_module_name("cache-replacement"))
    check = grade.Check("loops", lambda m: m.LFUDA() and None, timeout=0.3)
    t0 = time.monotonic()
    r = grade.run_check(check, mod, f)
    assert not r.ok and "timed out after 0.3 s" in r.message
    assert time.monotonic() - t0 < 3
    # an endless loop at import time is caught too
    g = tmp_path / "loop" / "policy.py"
    g.parent.mkdir()
    g.write_text("while True:\n    pass\n")
    monkeypatch.setattr(grade, "DEFAULT_TIMEOUT", 0.3)
    results, _ = grade.grade(lab, g)
    assert not any(x.ok for x in results) and "timed out" in results[0].message


def test_timeout_outside_the_main_thread() -> None:
    box: dict[str, object] = {}

    def worker() -> None:
        try:
            grade.call_with_limit(lambda: time.sleep(1.0), 0.1)
        except grade.CheckTimeout as e:
            box["e"] = e

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert isinstance(box.get("e"), grade.CheckTimeout)


def _results(lab: str, path: Path) -> dict[str, bool]:
    results, _ = grade.grade(grade.load_lab(lab), path)
    return {r.name: r.ok for r in results}


def test_plain_lfu_fails_the_aging_check(tmp_path: Path) -> None:
    f = tmp_path / "policy.py"
    f.write_text("from testbed.services.eviction import LFU as LFUDA\n")
    res = _results("cache-replacement", f)
    assert res["frequency: least used goes first"]
    assert not res["aging: yesterday's hit leaves eventually"]


def test_health_blind_anycast_is_caught(tmp_path: Path) -> None:
    src = (ROOT / "anycast-failover" / "solution" / "anycast_choice.py").read_text()
    f = tmp_path / "anycast_choice.py"
    f.write_text(src.replace("if not svc.health[m].healthy:", "if False:"))
    res = _results("anycast-failover", f)
    assert res["nearest member (triangle)"]
    assert not res["only healthy members"] and not res["failover: member dies, drain, restore"]


def test_tree_without_rpf_port_is_caught(tmp_path: Path) -> None:
    src = (ROOT / "multicast-tree" / "solution" / "mcast_tree.py").read_text()
    f = tmp_path / "mcast_tree.py"
    f.write_text(src.replace("t.in_port[b] = routes.port[b][a]", "t.in_port[b] = routes.port[a][b]"))
    res = _results("multicast-tree", f)
    assert not res["fake network: exactly one copy per member"]


def test_ecs_ignoring_policy_is_caught(tmp_path: Path) -> None:
    f = tmp_path / "mapping_policy.py"
    f.write_text("from testbed.services.mapping import GeoByResolver as EcsPolicy\n")
    res = _results("dns-mapping", f)
    assert res["no ECS: map the resolver"]
    assert not res["ECS: map the client subnet"] and not res["real DNS server on loopback (dnspython)"]


def test_freshness_without_s_maxage_is_caught(tmp_path: Path) -> None:
    src = (ROOT / "http-caching" / "solution" / "freshness.py").read_text()
    f = tmp_path / "freshness.py"
    broken = src.replace('("s-maxage", "max-age") if shared else ', "")
    assert broken != src
    f.write_text(broken)
    res = _results("http-caching", f)
    assert not res["lifetime: s-maxage > max-age > Expires"]
    assert res["current age"]


def test_a_network_check_that_fails_in_the_grader_does_not_blame_the_student(tmp_path: Path) -> None:
    """In the network stage the student's code runs inside the services; an exception raised in the grader's
    own process (here Mininet's popen reading an unset $SHELL) is the grader's failure, and says so."""
    f = tmp_path / "abr_policy.py"
    f.write_text("x = 1\n")

    def harness_bug(_m: object) -> None:
        raise KeyError("SHELL")

    r = grade.run_check(grade.Check("network (mini)", harness_bug, stage="network"), object(), f)
    assert not r.ok and r.message.startswith("the grader itself failed, not your code") and "KeyError" in r.message
    d = grade.run_check(grade.Check("direct", harness_bug), object(), f)
    assert d.message.startswith("your code raised KeyError")

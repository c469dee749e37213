"""No lab can be passed by re-exporting reference code: by import, by fishing in ``sys.modules`` or the
garbage collector, by reading the answer key, or through another process; the reference still passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.import_guard import Reference, static_check
from testbed import grade

ROOT = grade.assignments_dir()

#: how a submission reaches the interpreter without naming anything the static check reads
SNEAK = (
    "_b = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)\n"
    "_imp = _b['__imp' + 'ort__']\n"
    "_m = getattr(_imp('sy' + 's'), 'mod' + 'ules')\n"
)

# lab -> (what the student must define, a re-export by import, the same name fished from sys.modules)
GAMES = {
    "anycast-failover": (
        "choose",
        "from controller.anycast import choose\n",
        SNEAK + "choose = _m['controller.anycast'].choose\n",
    ),
    "multicast-tree": (
        "build_tree",
        "from controller.multicast import build_tree\n",
        SNEAK + "build_tree = _m['controller.multicast'].build_tree\n",
    ),
    "http-caching": (
        "freshness_lifetime",
        "from testbed.services.freshness import *\n",
        SNEAK
        + "".join(
            f"{n} = getattr(_m['testbed.services.freshness'], '{n}')\n"
            for n in ("freshness_lifetime", "current_age", "is_storable", "needs_revalidation")
        ),
    ),
    "dns-mapping": (
        "EcsPolicy",
        "from testbed.services.mapping import EcsAware as EcsPolicy\n",
        SNEAK + "EcsPolicy = _m['testbed.services.mapping'].EcsAware\n",
    ),
    "video-streaming": (
        "Abr",
        "from testbed.measure.abr import Bba as Abr\n",
        SNEAK + "Abr = _m['testbed.measure.abr'].Mpc\n",
    ),
    "server-selection": (
        "Selector",
        "from testbed.services.mapping import NetworkMap as Selector\n",
        SNEAK + "Selector = _m['testbed.services.mapping'].LatencyMap\n",
    ),
    "cooperative-caching": (
        "home",
        "from testbed.services.hashing import home, rank\n",
        SNEAK + "home = _m['testbed.services.hashing'].home\nrank = _m['testbed.services.hashing'].rank\n",
    ),
    "cache-replacement": (
        "LFUDA",
        "import sys\nLFUDA = sys.modules['cdnlab_grader_cache_replacement'].RefLFUDA\n",
        SNEAK + "LFUDA = _m['cdnlab_grader_cache_replacement'].RefLFUDA\n",
    ),
}


def _submit(tmp_path: Path, lab: str, source: str) -> list[grade.Result]:
    module = grade.load_lab(lab).module
    f = tmp_path / f"{module}.py"
    f.write_text(source)
    results, _ = grade.grade(grade.load_lab(lab), f)
    return results


def _assert_all_fail(results: list[grade.Result], *why: str) -> None:
    passed = [r.name for r in results if r.ok]
    assert not passed, passed
    text = " | ".join(r.message for r in results)
    assert any(w in text for w in why), text


@pytest.mark.parametrize("lab", sorted(GAMES))
def test_a_re_export_by_import_fails_with_the_line_and_the_reason(lab: str, tmp_path: Path) -> None:
    results = _submit(tmp_path, lab, GAMES[lab][1])
    _assert_all_fail(results, "reference implementation", "sys.modules looks up modules the grader loaded")
    first = results[0].message
    assert "uses what a submission may not" in first and f"{grade.load_lab(lab).module}.py:" in first


@pytest.mark.parametrize("lab", sorted(GAMES))
def test_fishing_in_sys_modules_past_the_static_check_fails_at_run_time(lab: str, tmp_path: Path) -> None:
    # the static check does not see through string arithmetic: the sandbox itself must refuse
    f = tmp_path / f"{grade.load_lab(lab).module}.py"
    f.write_text(GAMES[lab][2])
    ref = Reference.parse(getattr(grade.load_lab(lab).grader, "REFERENCE", ()))
    assert static_check(f, ref) == []
    _assert_all_fail(_submit(tmp_path, lab, GAMES[lab][2]), "reference implementation", "is a lab's grader")


@pytest.mark.parametrize("lab", sorted(GAMES))
def test_reading_the_answer_key_or_the_grader_fails(lab: str, tmp_path: Path) -> None:
    info = grade.load_lab(lab)
    key = info.solution / f"{info.module}.py"
    for target in (key, info.path / "grader.py"):
        src = SNEAK + f"_b['ex' + 'ec'](open({str(target)!r}).read(), globals())\n"
        _assert_all_fail(_submit(tmp_path, lab, src), "are not readable")


def test_the_reference_code_is_not_in_the_sandbox_at_all(tmp_path: Path) -> None:
    # the garbage collector sees every function the process compiled: the reference never was
    src = SNEAK + (
        "_gc = _imp('g' + 'c')\n"
        "_found = [o for o in _gc.get_objects() if callable(o) and getattr(o, '__qualname__', '') == 'choose'"
        " and getattr(o, '__module__', '') == 'controller.anycast']\n"
        "def choose(view, routes, svc):\n"
        "    if not _found:\n"
        "        raise LookupError('no reference choose in this process')\n"
        "    return _found[0](view, routes, svc)\n"
    )
    _assert_all_fail(_submit(tmp_path, "anycast-failover", src), "no reference choose in this process")


def test_another_process_cannot_read_the_answer_key(tmp_path: Path) -> None:
    key = ROOT / "anycast-failover" / "solution" / "anycast_choice.py"
    for how in (f"_imp('subprocess').run(['cat', {str(key)!r}])", f"_imp('os').system('cat {key}')"):
        _assert_all_fail(_submit(tmp_path, "anycast-failover", SNEAK + how + "\n"), "not allowed in a graded")


def test_a_module_the_grader_has_loaded_is_not_in_the_sandbox(tmp_path: Path) -> None:
    # the grader process imported controller.core for its fake network; the sandbox did not
    src = SNEAK + "choose = _m['controller.core'].choose\n"
    _assert_all_fail(_submit(tmp_path, "anycast-failover", src), "KeyError", "reference implementation")


def test_the_types_a_student_needs_stay_importable(tmp_path: Path) -> None:
    # the reference solutions import NetView, ServiceState, Routes, Tree, _Base, hrw_rank, parse helpers
    for lab in GAMES:
        info = grade.load_lab(lab)
        results, _ = grade.grade(info, info.solution)
        assert all(r.ok for r in results), [(r.name, r.message) for r in results if not r.ok]


def test_static_check_names_each_problem() -> None:
    ref = Reference.parse(["controller.anycast:choose", "testbed.services.freshness"])
    src = (
        "import controller.anycast as a\n"
        "from controller import anycast\n"
        "import controller\n"
        "x = a.choose\n"
        "y = anycast.choose\n"
        "z = controller.anycast.choose\n"
        "w = getattr(a, 'choose')\n"
        "import testbed.services.freshness\n"
        "from controller.anycast import ServiceState, member_cost\n"
        "import inspect\n"
        "eval('1')\n"
    )
    problems = static_check(Path("s.py"), ref, src)
    lines = sorted(int(p.split(":")[1]) for p in problems)
    assert lines == [4, 5, 6, 7, 8, 10, 11], problems
    assert all(p.startswith("s.py:") for p in problems)


def test_reference_declarations_are_validated() -> None:
    with pytest.raises(ValueError, match="must be 'package.module'"):
        Reference.parse(["controller.anycast:"])
    ref = Reference.parse(["a.b:c", "d.e"])
    assert ref.reserved("a.b.c.__code__") == "a.b.c" and ref.reserved("d.e.f") == "d.e"
    assert ref.reserved("a.b.other") is None and ref.entries() == ["d.e", "a.b:c"]


def test_a_student_exception_keeps_its_type_file_and_line(tmp_path: Path) -> None:
    src = "def choose(view, routes, svc):\n    raise NotImplementedError('TODO choose')\n"
    results = _submit(tmp_path, "anycast-failover", src)
    assert "your code raised NotImplementedError: TODO choose (at anycast_choice.py:2 in choose)" in (
        results[0].message
    )


def test_an_exit_in_student_code_fails_that_check_and_the_next_runs(tmp_path: Path) -> None:
    src = "calls = 0\ndef choose(view, routes, svc):\n    raise SystemExit(3)\n"
    results = _submit(tmp_path, "anycast-failover", src)
    assert not any(r.ok for r in results)
    assert "SystemExit: 3" in results[0].message and "SystemExit: 3" in results[1].message


def test_a_check_that_loops_forever_times_out_and_the_next_check_gets_a_fresh_process(tmp_path: Path) -> None:
    from types import SimpleNamespace

    f = tmp_path / "spin.py"
    f.write_text(
        "import os\ndef spin():\n    while True:\n        pass\ndef pid():\n    return os.getpid()\n"
    )
    pids: list[int] = []

    def first(mod: object) -> None:
        pids.append(mod.pid())  # type: ignore[attr-defined]
        mod.spin()  # type: ignore[attr-defined]

    def second(mod: object) -> str:
        pids.append(mod.pid())  # type: ignore[attr-defined]
        return "ok"

    checks = [grade.Check("spins", first, timeout=0.5), grade.Check("answers", second)]
    lab = grade.Lab("spin", tmp_path, SimpleNamespace(checks=lambda: checks), "spin", "spin")  # type: ignore[arg-type]
    results, _ = grade.grade(lab, f)
    assert [r.ok for r in results] == [False, True], results
    assert "timed out after 0.5 s" in results[0].message
    assert len(pids) == 2 and pids[0] != pids[1]
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # the looping process was killed, not left spinning

"""``cdnlab grade LAB [--solution PATH] [--verbose] [--format plain|gradescope] [--out F]``: run a lab's
checks against a student's code.

Labs live in ``assignments/<lab>/`` (handout ``README.md``, ``starter/``, ``solution/``, ``grader.py``).
A grader module defines ``TITLE``, ``MODULE`` (the file stem students fill in, e.g. ``freshness``),
``REFERENCE`` (the testbed's own implementation of it, which a submission may not use) and
``checks() -> list[Check]``. The student's file (``--solution``: a ``.py`` file, or a directory holding
``<MODULE>.py``; default ``assignments/<lab>/starter/``) is read by :func:`contract.import_guard.static_check`
and then runs in a sandbox process (:mod:`contract.sandbox`) under the import guard of
:mod:`contract.import_guard`, never in the grader's own process; checks receive a proxy of the student's
module, registered as :data:`STUDENT_PREFIX` + lab in ``sys.modules`` while a check runs so testbed code
that loads plug-ins by dotted path (edge eviction policies, mapping policies) loads it too.

Every check runs under a time limit (SIGALRM in the main thread, else a watchdog thread), so an endless
loop in student code fails that check instead of hanging the grader (the next check gets a fresh
sandbox); an exception raised by student code is a failed check reporting the exception's last traceback
line and the student's file and line.
Output (``--format plain``, the default): one ``PASS``/``FAIL`` line per check with what was expected,
what came back and a hint (lecture slide / RFC section), then ``score: N/M``; exit status 0 only when every
check passes. ``--format gradescope`` writes Gradescope's autograder ``results.json`` (top-level ``score``,
``max_score``, ``execution_time``, ``output``, ``tests[]`` with ``name``, ``score``, ``max_score``,
``output``, ``visibility``) to ``--out`` (default: standard output, the plain report then goes to standard
error); its exit status is 0 whenever the results were written, since a low score is a grade, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from contract.import_guard import Reference, static_check
from contract.sandbox import Sandbox, SandboxError, load_file

STUDENT_PREFIX = "cdnlab_student_"
DEFAULT_TIMEOUT = 5.0


def assignments_dir() -> Path:
    """Where the labs are: ``$CDNLAB_ASSIGNMENTS`` or ``assignments/`` next to the ``testbed`` package."""
    env = os.environ.get("CDNLAB_ASSIGNMENTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assignments"


class Fail(AssertionError):
    """Raised by a check when the student's code returned something wrong (the message says what)."""


class Skip(Exception):
    """Raised by a check that cannot run here (the network stage without root or Mininet): says what is missing."""


class CheckTimeout(BaseException):
    """A check ran past its time limit (BaseException so ``except Exception`` in student code can't eat it)."""


def expect(got: Any, want: Any, what: str) -> None:
    """Fail with ``what: expected WANT, got GOT`` unless ``got == want``."""
    if got != want:
        raise Fail(f"{what}: expected {want!r}, got {got!r}")


@dataclass
class Check:
    """One graded check: ``fn(student_module)`` raises :class:`Fail` or returns an optional detail line."""

    name: str
    fn: Callable[[ModuleType], str | None]
    hint: str = ""
    timeout: float = DEFAULT_TIMEOUT
    points: float = 1.0
    #: Gradescope visibility: ``visible``, ``hidden``, ``after_due_date`` or ``after_published``
    visibility: str = "visible"
    #: ``direct`` (the student's code called on loopback or a fake network) or ``network`` (inside an
    #: emulated network: root and Mininet; :mod:`testbed.grade_network`)
    stage: str = "direct"


STAGES = ("direct", "network")


@dataclass
class Result:
    name: str
    ok: bool
    message: str = ""
    hint: str = ""
    detail: str = ""  # full traceback for --verbose
    seconds: float = 0.0
    points: float = 1.0
    visibility: str = "visible"
    timed_out: bool = False
    skipped: bool = False


@dataclass
class Lab:
    name: str
    path: Path
    grader: ModuleType
    title: str
    module: str

    @property
    def starter(self) -> Path:
        return self.path / "starter"

    @property
    def solution(self) -> Path:
        return self.path / "solution"


def list_labs(root: Path | None = None) -> list[str]:
    root = root or assignments_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "grader.py").is_file())


def load_lab(name: str, root: Path | None = None) -> Lab:
    root = root or assignments_dir()
    path = root / name
    if not (path / "grader.py").is_file():
        raise KeyError(name)
    grader = load_file(path / "grader.py", "cdnlab_grader_" + name.replace("-", "_"))
    return Lab(name, path, grader, getattr(grader, "TITLE", name), grader.MODULE)


def student_module_name(lab: str) -> str:
    return STUDENT_PREFIX + lab.replace("-", "_")


def resolve_solution(lab: Lab, solution: str | Path | None) -> Path:
    """The student's file: ``solution`` itself if a file, ``solution/<MODULE>.py`` if a directory."""
    p = Path(solution) if solution is not None else lab.starter
    if p.is_dir():
        cand = p / f"{lab.module}.py"
        if not cand.is_file():
            found = sorted(x.name for x in p.glob("*.py"))
            raise FileNotFoundError(
                f"{p} has no {lab.module}.py (found: {', '.join(found) or 'no .py files'}); "
                f"pass the file itself with --solution path/to/{lab.module}.py"
            )
        return cand
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return p


# ---------------------------------------------------------------------------------------------------------
# time limits and error reporting


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in the main thread after ``seconds`` (no-op elsewhere: see call_with_limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    # re-fire every 0.5 s: code that catches the first one (an event loop running the student's code in a
    # request handler task, say) is interrupted again until the check gives up
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def call_with_limit(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()`` with a time limit; in a non-main thread the call runs in a watchdog'd daemon thread."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with time_limit(seconds):
            return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name="cdnlab-grade-check")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise CheckTimeout(f"timed out after {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def describe_exception(e: BaseException, student_file: Path | None) -> str:
    """The exception's last traceback line, plus where in the student's file it was raised.

    An exception that came back from the sandbox carries both (``cdnlab_text``, ``cdnlab_where``).
    """
    if hasattr(e, "cdnlab_text"):
        return str(e.cdnlab_text) + str(getattr(e, "cdnlab_where", ""))
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    where = ""
    if student_file is not None:
        target = student_file.resolve()
        for fs in reversed(traceback.extract_tb(e.__traceback__)):
            if fs.filename and Path(fs.filename).resolve() == target:
                where = f" (at {student_file.name}:{fs.lineno} in {fs.name})"
                break
    return last + where


def _raised_in(e: BaseException, student_file: Path | None) -> bool:
    """Whether ``e``'s traceback passes through the student's file."""
    if student_file is None:
        return False
    target = student_file.resolve()
    return any(fs.filename and Path(fs.filename).resolve() == target for fs in traceback.extract_tb(e.__traceback__))


def run_check(check: Check, mod: Any, student_file: Path | None) -> Result:
    """One check against ``mod`` (the sandbox's proxy of the student's module, or a module)."""
    t0 = time.monotonic()
    timed_out = False
    try:
        detail = call_with_limit(lambda: check.fn(mod), check.timeout)
        return Result(
            check.name,
            True,
            detail or "",
            check.hint,
            seconds=time.monotonic() - t0,
            points=check.points,
            visibility=check.visibility,
        )
    except Fail as e:
        msg = str(e)
        tb = traceback.format_exc()
    except Skip as e:
        return Result(
            check.name,
            False,
            f"skipped: {e}",
            check.hint,
            seconds=time.monotonic() - t0,
            points=check.points,
            visibility=check.visibility,
            skipped=True,
        )
    except CheckTimeout as e:
        msg = f"{e}: does your code loop forever or block? (limit {check.timeout:g} s)"
        tb = traceback.format_exc()
        timed_out = True
    except SandboxError as e:
        msg = f"{e}: did your code exit or crash the interpreter?"
        tb = traceback.format_exc()
    except Exception as e:  # noqa: BLE001 - student code may raise anything
        if check.stage == "network" and not hasattr(e, "cdnlab_text") and not _raised_in(e, student_file):
            # the student's code runs in the network's services there: this came from the grader or testbed
            msg = ("the grader itself failed, not your code (tell your instructor): "
                   + describe_exception(e, None))
        else:
            msg = "your code raised " + describe_exception(e, student_file)
        tb = str(getattr(e, "cdnlab_traceback", "")) or traceback.format_exc()
    return Result(
        check.name,
        False,
        msg,
        check.hint,
        tb,
        seconds=time.monotonic() - t0,
        points=check.points,
        visibility=check.visibility,
        timed_out=timed_out,
    )


def stages_from_env() -> tuple[str, ...]:
    """``$CDNLAB_GRADE_STAGE`` (``direct``, ``network`` or ``all``, the default) as a tuple of stages."""
    raw = os.environ.get("CDNLAB_GRADE_STAGE", "all")
    if raw == "all":
        return STAGES
    if raw not in STAGES:
        raise ValueError(f"CDNLAB_GRADE_STAGE must be all, direct or network, not {raw!r}")
    return (raw,)


def grade(
    lab: Lab, solution: str | Path | None = None, stages: tuple[str, ...] | None = None
) -> tuple[list[Result], Path | None]:
    """Load the student's module and run every check of ``stages`` (default :func:`stages_from_env`);
    never raises for student mistakes."""
    stages = stages if stages is not None else stages_from_env()
    checks: list[Check] = [c for c in lab.grader.checks() if c.stage in stages]

    def all_failed(first: str, tb: str = "") -> list[Result]:
        out = [
            Result(c.name, False, "not run: " + first, c.hint, points=c.points, visibility=c.visibility)
            for c in checks
        ]
        if out:
            c0 = checks[0]
            out[0] = Result(
                c0.name,
                False,
                first,
                "fix this first; no check can run before",
                tb,
                points=c0.points,
                visibility=c0.visibility,
            )
        return out

    try:
        path = resolve_solution(lab, solution)
    except FileNotFoundError as e:
        return all_failed(str(e)), None
    reference = Reference.parse(getattr(lab.grader, "REFERENCE", ()))
    try:
        problems = static_check(path, reference)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return all_failed(f"{path.name} cannot be read: {e}"), path
    if problems:
        return all_failed(f"{path.name} uses what a submission may not: " + "; ".join(problems)), path
    name = student_module_name(lab.name)
    sandbox = Sandbox(
        path,
        name,
        reference.entries(),
        protected=protected_paths(),
        preload=[*reference.names, *getattr(lab.grader, "PRELOAD", ())],
    )
    try:
        try:
            mod = _start(sandbox)
        except (Exception, CheckTimeout) as e:  # noqa: BLE001
            return all_failed(
                f"{path.name} does not import: {describe_exception(e, path)}",
                str(getattr(e, "cdnlab_traceback", "")) or traceback.format_exc(),
            ), path
        results = []
        for c in checks:
            if sandbox.broken:  # a time limit or a crash: a fresh process for the next check
                sandbox.close()
                try:
                    mod = _start(sandbox)
                except (Exception, CheckTimeout) as e:  # noqa: BLE001
                    results.append(
                        Result(
                            c.name,
                            False,
                            f"not run: {describe_exception(e, path)}",
                            c.hint,
                            points=c.points,
                            visibility=c.visibility,
                        )
                    )
                    continue
            sys.modules[name] = mod  # plug-in loaders (mapping, eviction policies) find it by name
            try:
                r = run_check(c, mod, path)
            finally:
                sys.modules.pop(name, None)
            if r.timed_out:
                sandbox.close()  # the process may still be looping; a watchdog thread may still wait on it
            results.append(r)
        return results, path
    finally:
        sandbox.close()


def protected_paths() -> list[Path]:
    """What a submission may not read: the labs (answer keys, graders) and the repository's history."""
    return [assignments_dir(), Path(__file__).resolve().parent.parent / ".git"]


def _start(sandbox: Sandbox) -> Any:
    """Start the sandbox process (not timed: interpreter start-up) and import the submission (timed)."""
    sandbox.start()
    return call_with_limit(sandbox.load, DEFAULT_TIMEOUT)


GRADESCOPE_VISIBILITY = frozenset({"visible", "hidden", "after_due_date", "after_published"})


def gradescope_results(lab: Lab, results: list[Result], seconds: float, report: str) -> dict[str, Any]:
    """Gradescope's autograder ``results.json`` for one graded submission."""
    tests = []
    for r in results:
        text = (
            r.message if r.ok else "\n".join(filter(None, [r.message, f"hint: {r.hint}" if r.hint else ""]))
        )
        tests.append(
            {
                "name": r.name,
                "score": r.points if r.ok else 0.0,
                "max_score": r.points,
                "output": text,
                "visibility": r.visibility if r.visibility in GRADESCOPE_VISIBILITY else "visible",
            }
        )
    return {
        "score": sum(t["score"] for t in tests),
        "max_score": sum(t["max_score"] for t in tests),
        "execution_time": round(seconds, 3),
        "output": report,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


# ---------------------------------------------------------------------------------------------------------
# command line


def _print_labs(out: Callable[[str], None]) -> None:
    labs = list_labs()
    if not labs:
        out(f"no labs found under {assignments_dir()}")
        return
    out("labs:")
    for name in labs:
        try:
            title = load_lab(name).title
        except Exception as e:  # noqa: BLE001 - a broken grader must not hide the others
            title = f"(grader does not load: {type(e).__name__}: {e})"
        out(f"  {name:<18} {title}")
    out("\nusage: cdnlab grade LAB [--solution PATH] [--verbose]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab grade", description="grade a lab (see assignments/*/README.md)")
    ap.add_argument("lab", nargs="?", help="lab name; omit to list the labs")
    ap.add_argument("--solution", "-s", help="your .py file or a directory holding it (default: the starter)")
    ap.add_argument("--verbose", "-v", action="store_true", help="details of passing checks, full tracebacks")
    ap.add_argument("--list", action="store_true", help="list the labs and exit")
    ap.add_argument("--format", choices=["plain", "gradescope"], default="plain", help="report format")
    ap.add_argument(
        "--out", default="-", help="with --format gradescope: where results.json goes (- = stdout)"
    )
    ap.add_argument(
        "--stage",
        choices=["all", *STAGES],
        default=os.environ.get("CDNLAB_GRADE_STAGE", "all"),
        help="direct: the student's code on loopback and fake networks only; network: inside emulated "
        "networks only (root, Mininet); all (default, or $CDNLAB_GRADE_STAGE): both",
    )
    args = ap.parse_args(argv)
    to_stdout = args.format == "gradescope" and args.out == "-"
    lines: list[str] = []

    def out(text: str = "") -> None:
        lines.append(text)
        print(text, flush=True, file=sys.stderr if to_stdout else sys.stdout)

    if args.list:
        _print_labs(out)
        return 0
    if not args.lab:
        _print_labs(out)
        return 2
    try:
        lab = load_lab(args.lab)
    except KeyError:
        out(f"cdnlab grade: no lab named {args.lab!r}")
        _print_labs(out)
        return 2
    out(f"cdnlab grade {lab.name}: {lab.title}")
    t0 = time.monotonic()
    results, path = grade(lab, args.solution, STAGES if args.stage == "all" else (args.stage,))
    seconds = time.monotonic() - t0
    out(f"solution: {path if path is not None else args.solution}")
    for r in results:
        mark = "PASS" if r.ok else "SKIP" if r.skipped else "FAIL"
        out(f"{mark}  {r.name}" + (f": {r.message}" if r.message and (not r.ok or args.verbose) else ""))
        if not r.ok and r.hint:
            out(f"      hint: {r.hint}")
        if not r.ok and args.verbose and r.detail:
            out("      " + r.detail.rstrip().replace("\n", "\n      "))
    passed = sum(r.ok for r in results)
    skipped = sum(r.skipped for r in results)
    out(
        f"score: {passed}/{len(results)}"
        + (f" ({skipped} skipped: they count as not passed)" if skipped else "")
    )
    if args.format == "gradescope":
        data = json.dumps(gradescope_results(lab, results, seconds, "\n".join(lines)), indent=2)
        if to_stdout:
            print(data, flush=True)
        else:
            try:
                Path(args.out).write_text(data + "\n")
            except OSError as e:
                print(f"cdnlab grade: cannot write {args.out}: {e}", file=sys.stderr)
                return 2
        return 0
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    # graders import Fail from ``testbed.grade``: run that module's main, not a second copy's (__main__)
    from testbed.grade import main as _main

    raise SystemExit(_main())

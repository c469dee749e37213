"""``cdnlab bench grade [--labs A,B] [--stage network|direct|all] [--runs N] [--budget S] --json``: how long
an instructor's grading takes per lab, run as the instructor runs it.

Each lab's reference solution is graded by the command a course's autograder runs, ``cdnlab grade LAB
--solution assignments/LAB/solution --stage STAGE --format gradescope --out FILE``, in its own process,
and timed from start to exit. The reference must earn full marks every time: a lab whose reference loses
a point, or whose grader fails, makes the benchmark fail (exit 1) with the grader's output, never a
figure. ``--runs`` repeats each lab (labs alternate order between runs: forward, then backward).

Target (issue #13): the network stage of each lab in <= 180 s (``--budget``) in the Vagrant VM. Run it
there, or in the VM of ``make test-vm`` with ``sudo make vm-exec CMD='cdnlab bench grade --json'`` (netem
links and the kernel datapath; under QEMU's TCG emulation everything is several times slower than under
KVM, so a lab within budget there is within budget in the Vagrant VM).

Last line: one JSON object with ``stage``, ``runs``, ``budget_s``, ``labs`` (lab -> ``seconds`` (median),
``all_seconds``, ``score``, ``max_score``), ``max_seconds``, ``total_seconds`` and ``targets_met``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed import grade


def grade_once(lab: str, stage: str, timeout: float) -> dict[str, Any]:
    """Grade ``lab``'s reference solution in a process of its own; seconds, score and max_score.
    Raises RuntimeError, with the grader's output, unless it earns full marks."""
    solution = grade.assignments_dir() / lab / "solution"
    with tempfile.TemporaryDirectory(prefix="cdnlab-bench-grade-") as d:
        out = Path(d) / "results.json"
        cmd = [sys.executable, "-m", "testbed.cli", "grade", lab, "--solution", str(solution), "--stage", stage,
               "--format", "gradescope", "--out", str(out)]
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{lab}: `cdnlab grade` ran past {timeout:g} s") from e
        seconds = time.monotonic() - t0
        if not out.exists():
            raise RuntimeError(f"{lab}: `cdnlab grade` wrote no results (exit {p.returncode}):\n"
                               f"{(p.stdout + p.stderr)[-3000:]}")
        res = json.loads(out.read_text())
    if res.get("score") != res.get("max_score") or not res.get("max_score"):
        failed = [t["name"] + ": " + t.get("output", "")[:300] for t in res.get("tests", [])
                  if t.get("score") != t.get("max_score")]
        raise RuntimeError(f"{lab}: the reference earned {res.get('score')}/{res.get('max_score')} "
                           f"(stage {stage}):\n" + "\n".join(failed))
    return {"seconds": round(seconds, 1), "score": res["score"], "max_score": res["max_score"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench grade", description=__doc__.split("\n\n")[0])
    ap.add_argument("--labs", help="comma-separated labs (default: every lab)")
    ap.add_argument("--stage", choices=("network", "direct", "all"), default="network")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--budget", type=float, default=180.0, help="seconds a lab's stage may take (the target)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before one grading is stopped")
    ap.add_argument("--json", action="store_true", help="(the last line is JSON in any case)")
    a = ap.parse_args(argv)
    known = grade.list_labs()
    labs = a.labs.split(",") if a.labs else sorted(known)
    unknown = [x for x in labs if x not in known]
    if unknown or a.runs < 1:
        print(f"cdnlab bench grade: no lab {unknown} (labs: {', '.join(sorted(known))})" if unknown
              else "cdnlab bench grade: --runs must be at least 1", file=sys.stderr)
        return 2
    times: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labs}
    try:
        for run in range(a.runs):
            for lab in labs if run % 2 == 0 else list(reversed(labs)):
                r = grade_once(lab, a.stage, a.timeout)
                times[lab].append(r)
                print(f"run {run + 1}/{a.runs} {lab:<20} {r['seconds']:7.1f} s  {r['score']:g}/{r['max_score']:g}",
                      flush=True)
    except RuntimeError as e:
        print(f"cdnlab bench grade: FAILED: {e}", file=sys.stderr)
        return 1
    per_lab = {
        lab: {"seconds": round(statistics.median(x["seconds"] for x in rs), 1),
              "all_seconds": [x["seconds"] for x in rs], "score": rs[-1]["score"], "max_score": rs[-1]["max_score"]}
        for lab, rs in times.items()
    }
    worst = max(v["seconds"] for v in per_lab.values())
    result = {"stage": a.stage, "runs": a.runs, "budget_s": a.budget, "labs": per_lab, "max_seconds": worst,
              "total_seconds": round(sum(v["seconds"] for v in per_lab.values()), 1),
              "targets_met": worst <= a.budget}
    print(json.dumps(result), flush=True)
    return 0

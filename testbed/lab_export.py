"""``cdnlab lab export LAB DIR``: the student's copy of a lab, with no answers in it.

A lab directory (``assignments/<lab>/``) holds the handout ``README.md``, ``starter/``, ``solution/`` and
``grader.py``, and may hold data files. The export copies the handout, the starter and the data, and
leaves out ``solution/`` (the answer key), ``grader.py`` (it holds reference models and expected values)
and caches. Before it finishes it checks that no exported file has the same content as a file of
``solution/``. It never overwrites: ``DIR`` must not exist or be empty, unless ``--force`` is given, which
replaces files of the same name and deletes nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from testbed.grade import assignments_dir, list_labs

#: what the export never copies (names anywhere in the lab's tree)
WITHHELD = frozenset({"solution", "grader.py", "__pycache__", ".pytest_cache"})


class ExportError(RuntimeError):
    """The export was refused (the message says why); nothing half-written is left behind by it."""


def exported_files(lab_dir: Path) -> list[Path]:
    """The lab's files a student may have, relative to ``lab_dir``, sorted."""
    out = []
    for p in sorted(lab_dir.rglob("*")):
        rel = p.relative_to(lab_dir)
        if p.is_file() and not (set(rel.parts) & WITHHELD) and p.suffix not in (".pyc", ".pyo"):
            out.append(rel)
    return out


def export(lab: str, dest: Path, force: bool = False, root: Path | None = None) -> list[Path]:
    """Copy lab ``lab``'s student files into ``dest``; return the files written (relative paths)."""
    root = root or assignments_dir()
    lab_dir = root / lab
    if lab not in list_labs(root):
        raise ExportError(f"no lab named {lab!r} under {root} (labs: {', '.join(list_labs(root)) or 'none'})")
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise ExportError(
            f"{dest} is not empty; choose a new directory or pass --force (replaces same-named files)"
        )
    files = exported_files(lab_dir)
    if not (lab_dir / "README.md").is_file() or not any(f.parts[0] == "starter" for f in files):
        raise ExportError(f"{lab_dir} has no README.md or no starter/: nothing a student could work from")
    answers = {
        p.read_bytes() for p in (lab_dir / "solution").rglob("*") if p.is_file() and p.suffix != ".pyc"
    }
    leaked = [f for f in files if (lab_dir / f).read_bytes() in answers]
    if leaked:
        raise ExportError(
            f"refusing to export: {', '.join(map(str, leaked))} has the content of a solution file"
        )
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lab_dir / rel, target)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab lab", description="lab tools for instructors")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write the student's copy of a lab (no solution, no grader)")
    ex.add_argument("lab")
    ex.add_argument("dir", type=Path)
    ex.add_argument(
        "--force", action="store_true", help="write into a non-empty DIR (replaces same-named files)"
    )
    sub.add_parser("list", help="list the labs")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(list_labs()))
        return 0
    try:
        files = export(args.lab, args.dir, args.force)
    except (ExportError, OSError) as e:
        print(f"cdnlab lab export: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.lab} to {args.dir}: {', '.join(map(str, files))}")
    print(
        "not exported: solution/, grader.py (see docs/assignments.md for what else to strip from a shared repo)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

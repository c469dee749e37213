"""The docs name only files that exist: a module moved or renamed must take its docs along.

Every path of the repository a doc writes in backticks (``testbed/net/build.py``, ``topologies/globe.yaml``)
must exist; placeholders are written as such (``<name>``, ``*``, or a capitalised stand-in: ``NAME.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("testbed", "controller", "contract", "experiments", "benchmarks", "assignments", "tests", "topologies",
       "docs")
PATH = re.compile(r"`((?:" + "|".join(TOP) + r")/[A-Za-z0-9_./<>*-]+)`")
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def named_paths(text: str) -> list[str]:
    """The repository paths ``text`` names in backticks, placeholders left out."""
    out = []
    for m in PATH.findall(text):
        path = m.rstrip("/.")
        stem = Path(path).name.split(".")[0]
        if "<" in path or "*" in path or (stem.isupper() and len(stem) <= 6):
            continue
        out.append(path)
    return out


def test_placeholders_are_left_out_and_real_paths_kept() -> None:
    text = "see `testbed/net/build.py`, `benchmarks/NAME.py`, `experiments/<name>.py` and `topologies/globe.yaml`."
    assert named_paths(text) == ["testbed/net/build.py", "topologies/globe.yaml"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    missing = [p for p in named_paths(doc.read_text()) if not (ROOT / p).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"

"""`cdnlab bench conformance`: how it finds the suite and counts passes (running the suite needs node and
the suite's files, which CI does not install)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import conformance as bench


def test_count_passes_only_exact_true_per_kind():
    results = {"a": True, "b": ["Assertion", "x"], "c": True, "d": "Setup", "e": False}
    kinds = {"a": "required", "b": "required", "c": "check", "d": "optimal"}
    got = bench.count(results, kinds)
    assert got == {"passed": 2, "tests": 5, "by_kind": {"check": "1/1", "optimal": "0/1", "required": "1/3"}}


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")


def test_locate_a_checkout_and_a_package(tmp_path: Path):
    co, pkg = tmp_path / "checkout", tmp_path / "pkg"
    _touch(co / "test-engine/server/server.mjs", co / "test-engine/cli.mjs", co / "tests/index.mjs")
    _touch(pkg / "server/server.mjs", pkg / "cli.mjs", pkg / "tests/index.mjs")
    assert bench.locate(co)["cli"] == co / "test-engine/cli.mjs"
    assert bench.locate(pkg)["server"] == pkg / "server/server.mjs"
    with pytest.raises(bench.SuiteError, match="not a cache-tests checkout"):
        bench.locate(tmp_path)

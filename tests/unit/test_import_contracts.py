"""The layers of pyproject.toml's import-linter contracts hold, and the contracts do catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")

pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (make setup installs it)")


def lint(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run(
        [LINT, "--config", str(config), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_project_keeps_every_contract() -> None:
    r = lint(ROOT, ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("contract/views.py", "import testbed.services"),
        ("controller/core.py", "from testbed import services"),
        ("testbed/services/__init__.py", "import controller.core"),
        ("experiments/run.py", "import benchmarks.bench"),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(tmp_path: Path, module: str, line: str) -> None:
    """The same contracts on a toy project with one import the wrong way."""
    for pkg in ("contract", "testbed", "testbed/services", "controller", "experiments", "benchmarks"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for f in ("contract/views.py", "controller/core.py", "experiments/run.py", "benchmarks/bench.py"):
        (tmp_path / f).write_text("import contract\n")
    (tmp_path / module).write_text(line + "\n")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[tool.importlinter]", f"root_packages = {cfg['root_packages']!r}".replace("'", '"')]
    for c in cfg["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        for k, v in c.items():
            if k != "ignore_imports":
                lines.append(f"{k} = {v!r}".replace("'", '"'))
    (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
    r = lint(tmp_path, tmp_path / "pyproject.toml")
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout + r.stderr

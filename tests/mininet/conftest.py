"""Mininet-tier fixtures: build real networks, always tear them down, and on failure save flows and logs.

Artifacts of a failed test go to ``test-artifacts/<test name>/`` (OpenFlow tables and group tables of
every switch, the run directory's logs and generated configs).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import Topology, load_topology

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call):  # noqa: ANN001
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def save_artifacts(cn: CdnNet, name: str) -> Path:
    out = ARTIFACTS / name.replace("/", "_").replace("::", "__")
    out.mkdir(parents=True, exist_ok=True)
    if cn.net is not None:
        for s in cn.net.switches:
            for what in ("dump-flows", "dump-groups", "show"):
                r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", what, s.name], capture_output=True,
                                   text=True, timeout=20)
                (out / f"{s.name}.{what}.txt").write_text(r.stdout + r.stderr)
    if cn.run_dir and cn.run_dir.exists():
        shutil.copytree(cn.run_dir, out / "run", dirs_exist_ok=True)
    return out


@contextmanager
def _networks(name: str, failed: Callable[[], bool]) -> Iterator[Callable[..., CdnNet]]:
    """A factory of started networks; on exit each is stopped, its artifacts saved first if ``failed()``."""
    built: list[CdnNet] = []

    def make(topo: str | Topology, **opts) -> CdnNet:
        t = load_topology(topo) if isinstance(topo, str) else topo
        cn = CdnNet(t, BuildOptions(**opts))
        built.append(cn)
        cn.start()
        return cn

    try:
        yield make
    finally:
        bad = failed()
        for cn in built:
            try:
                if bad:
                    print(f"artifacts saved to {save_artifacts(cn, name)}")
            finally:
                cn.stop()


@pytest.fixture
def cdn_net(request: pytest.FixtureRequest) -> Iterator[Callable[..., CdnNet]]:
    """Factory: ``cdn_net("mini", controller="standalone")`` builds and starts a network for this test."""

    def failed() -> bool:
        return getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed

    with _networks(request.node.nodeid, failed) as make:
        yield make


@pytest.fixture(scope="module")
def module_cdn_net(request: pytest.FixtureRequest) -> Iterator[Callable[..., CdnNet]]:
    """As :func:`cdn_net`, but the networks live for the whole module (tests that share one running CDN).
    If any test of the module failed, the artifacts are saved under the module's name."""
    failed_before = request.session.testsfailed
    with _networks(request.node.nodeid, lambda: request.session.testsfailed > failed_before) as make:
        yield make

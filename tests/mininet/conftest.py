"""Mininet-tier fixtures: build real networks, always tear them down, and on failure save flows and logs.

Artifacts of a failed test go to ``test-artifacts/<test name>/`` (OpenFlow tables and group tables of
every switch, the run directory's logs and generated configs).

How links and switches are emulated comes from ``--links`` and ``--datapath`` (see ``tests/conftest.py``):
:func:`emulation` resolves them once per session and every network built through :func:`cdn_net` uses
them unless the test asks for a mode, as Mininet's own tests override ``switchClass``. Tests of the link
classes themselves run in each link mode this kernel has (:func:`each_link_mode`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.net import host_env, links, linkverify
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import Topology, load_topology

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass(frozen=True)
class Emulation:
    """The session's emulation: ``links`` is 'netem' or 'relay', ``datapath`` 'kernel' or 'user'."""

    links: str
    datapath: str


@pytest.fixture(scope="session")
def emulation(pytestconfig: pytest.Config) -> Emulation:
    """``--links``/``--datapath`` resolved on this machine; forcing what the kernel lacks is a usage error."""
    try:
        mode = links.choose_link_class(pytestconfig.getoption("links"))
        datapath = host_env.ovs_datapath(pytestconfig.getoption("datapath"))
    except (links.LinkEmulationError, RuntimeError) as e:
        raise pytest.UsageError(f"--links/--datapath: {e}") from e
    return Emulation(mode, datapath)


@pytest.fixture(scope="session")
def exact_timing() -> bool:
    """False under QEMU's TCG emulation (``make test-vm`` on a machine without nested KVM sets
    ``CDNLAB_TIMING=coarse``): its clock jitters by tens of ms, so a test that measures time then asserts
    only what TCG honours (delays never shorter than configured, the qdiscs installed as specified,
    counts, the order of events) and says which assertion is which."""
    return linkverify.exact_timing()


#: the modes of the delayed links, for tests of the links themselves
LINK_MODES = ("netem", "relay")


@pytest.fixture(params=LINK_MODES)
def each_link_mode(request: pytest.FixtureRequest) -> str:
    """Each link mode in turn ('netem', 'relay'); netem is skipped, with the reason, where the kernel has none."""
    mode = request.param
    if mode == "netem" and not links.netem_available():
        pytest.skip("this kernel has no netem (sch_netem): `make test-vm` runs the netem cases in a VM")
    return mode


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
def _networks(name: str, failed: Callable[[], bool], emu: Emulation) -> Iterator[Callable[..., CdnNet]]:
    """A factory of started networks; on exit each is stopped, its artifacts saved first if ``failed()``.
    Links and datapath are the session's (``emu``) unless the test names them; links are verified by
    measurement (``--verify-links``) unless the test says otherwise."""
    built: list[CdnNet] = []

    def make(topo: str | Topology, **opts) -> CdnNet:
        opts.setdefault("links", emu.links)
        opts.setdefault("datapath", emu.datapath)
        opts.setdefault("verify_links", True)  # each link class measured (once per session and mode)
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
def cdn_net(request: pytest.FixtureRequest, emulation: Emulation) -> Iterator[Callable[..., CdnNet]]:
    """Factory: ``cdn_net("mini", controller="standalone")`` builds and starts a network for this test."""

    def failed() -> bool:
        return getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed

    with _networks(request.node.nodeid, failed, emulation) as make:
        yield make


@pytest.fixture
def second_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A second server on this machine (tests/support/second_server.py), reached through
    ``CDNLAB_SSH_CONFIG``; stopped, with everything it made, after the test."""
    from second_server import SecondServer

    srv = SecondServer(tmp_path)
    try:
        srv.start()
        monkeypatch.setenv("CDNLAB_SSH_CONFIG", str(srv.config))
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def module_cdn_net(request: pytest.FixtureRequest, emulation: Emulation) -> Iterator[Callable[..., CdnNet]]:
    """As :func:`cdn_net`, but the networks live for the whole module (tests that share one running CDN).
    If any test of the module failed, the artifacts are saved under the module's name."""
    failed_before = request.session.testsfailed
    with _networks(request.node.nodeid, lambda: request.session.testsfailed > failed_before, emulation) as make:
        yield make

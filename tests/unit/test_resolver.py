"""Real unbound in front of our high-level and low-level servers: CNAME chain, referral, caching, ECS."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest
import yaml
from cdn_dns_fixtures import dns_config

from contract.config import validate
from testbed.services.dns import DnsConfig, DnsServer, free_dns_port, free_loopback_address
from testbed.services.resolver import Resolver, ResolverConfig, ResolverError, render_unbound_conf

UNBOUND = "/usr/sbin/unbound"
pytestmark = pytest.mark.skipif(not os.access(UNBOUND, os.X_OK), reason="unbound not installed")

EDGES = [
    {"name": "eu1", "address": "10.0.0.1", "region": "eu"},
    {"name": "eu2", "address": "10.0.0.2", "region": "eu"},
    {"name": "us1", "address": "10.0.0.3", "region": "us"},
]
ZONES = {"customer.example": None, "cdnlab-dns.net": None, "cdnlab.net": None}


class Cdn:
    """High-level server on 127.0.0.1:<free port>, low-level servers on 127.53.x.y:53 (eu) and another (us)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy

    async def start(self) -> Cdn:
        self.ll_addr = {r: free_loopback_address(53) for r in ("eu", "us")}
        self.ll = {}
        for region, addr in self.ll_addr.items():
            cfg = dns_config(
                edges=EDGES, host=addr, port=53, static=False, policy=self.policy, health={"enabled": False}
            )
            cfg["mapped"]["nameservers"] = [{"name": f"ns-{region}.g.cdnlab.net", "address": addr}]
            self.ll[region] = DnsServer(validate(DnsConfig, cfg, "ll"))
            await self.ll[region].start()
        hl_cfg = dns_config(edges=EDGES, low_level=False, high_level=self.ll_addr, health={"enabled": False})
        self.hl = DnsServer(validate(DnsConfig, hl_cfg, "hl"))
        await self.hl.start()
        return self

    async def stop(self) -> None:
        for s in [self.hl, *self.ll.values()]:
            await s.stop()


def resolver_cfg(tmp_path, cdn: Cdn, **kw) -> ResolverConfig:
    stub = {z: [f"127.0.0.1@{cdn.hl.port}"] for z in ZONES}
    return ResolverConfig(
        name="unbound-test", run_dir=tmp_path / "unbound", port=free_dns_port(), stub_zones=stub, **kw
    )


async def resolve(res: Resolver, name: str, ecs: str | None = None) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    if ecs:
        q.use_edns(0, options=[dns.edns.ECSOption.from_text(ecs)])
    return await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", timeout=5, port=res.cfg.port)


def a_addrs(r) -> list[str]:
    return [rd.address for rr in r.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


@pytest.fixture
async def cdn():
    c = await Cdn("testbed.services.mapping:GeoByResolver").start()
    yield c
    await c.stop()


@pytest.fixture
async def ecs_cdn():
    c = await Cdn("testbed.services.mapping:EcsAware").start()
    yield c
    await c.stop()


async def started(cfg: ResolverConfig) -> Resolver:
    r = Resolver(cfg)
    await asyncio.to_thread(r.start)
    try:
        await asyncio.to_thread(r.wait_ready)
    except Exception:
        r.stop()
        raise
    return r


async def test_end_to_end_chain_referral_and_caching(tmp_path, cdn):
    res = await started(resolver_cfg(tmp_path, cdn))
    try:
        r = await resolve(res, "www.customer.example")
        chain = [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for rr in r.answer]
        assert chain == [
            ("www.customer.example.", "CNAME"),
            ("cache.customer.example.cdnlab-dns.net.", "CNAME"),
            ("a73.g.cdnlab.net.", "A"),
        ]
        assert set(a_addrs(r)) <= {"10.0.0.1", "10.0.0.2"}  # unbound sits on 127.0.0.1 -> eu
        eu, us = cdn.ll["eu"].dns, cdn.ll["us"].dns
        assert eu.by_name["a73.g.cdnlab.net."] == 1 and us.stats["queries"] == 0  # the referral chose eu
        assert cdn.hl.stats["referral_eu"] >= 1
        hl_before, eu_before = cdn.hl.stats["queries"], eu.stats["queries"]
        r2 = await resolve(res, "www.customer.example")
        assert a_addrs(r2) == a_addrs(r)
        assert (
            cdn.hl.stats["queries"] == hl_before and eu.stats["queries"] == eu_before
        )  # answered from cache
        r3 = await resolve(res, "cache.customer.example")  # shares the cached tail of the chain
        assert a_addrs(r3) == a_addrs(r) and eu.by_name["a73.g.cdnlab.net."] == 1
    finally:
        assert res.stop() == 0


async def test_outgoing_interface_in_us_gets_us_low_level_server(tmp_path, cdn):
    res = await started(resolver_cfg(tmp_path, cdn, outgoing_interface="127.2.0.53"))
    try:
        r = await resolve(res, "www.customer.example")
        assert a_addrs(r) == ["10.0.0.3"]
        assert cdn.ll["us"].dns.by_name["a73.g.cdnlab.net."] == 1 and cdn.ll["eu"].dns.stats["queries"] == 0
    finally:
        res.stop()


async def test_unbound_sends_client_subnet_when_enabled(tmp_path, ecs_cdn):
    res = await started(resolver_cfg(tmp_path, ecs_cdn, ecs=True))
    try:
        r = await resolve(res, "a73.g.cdnlab.net")  # stub client on 127.0.0.1: unbound sends 127.0.0.0/24
        assert set(a_addrs(r)) <= {"10.0.0.1", "10.0.0.2"}
        seen = list(ecs_cdn.ll["eu"].dns.ecs_seen)
        assert ("a73.g.cdnlab.net.", "127.0.0.0/24") in seen, seen
        r = await resolve(res, "a74.g.cdnlab.net", ecs="127.2.44.0/24")  # client says: I am in us
        assert a_addrs(r) == ["10.0.0.3"]
        assert ("a74.g.cdnlab.net.", "127.2.44.0/24") in list(ecs_cdn.ll["eu"].dns.ecs_seen)
    finally:
        res.stop()


async def test_no_client_subnet_when_disabled(tmp_path, ecs_cdn):
    res = await started(resolver_cfg(tmp_path, ecs_cdn, ecs=False))
    try:
        r = await resolve(res, "a73.g.cdnlab.net")
        assert a_addrs(r) and not ecs_cdn.ll["eu"].dns.ecs_seen
    finally:
        res.stop()


def test_config_rendering_and_refusal(tmp_path):
    cfg = ResolverConfig(run_dir=tmp_path, port=5300, stub_zones={"cdnlab.net": ["127.0.0.1@5301"]}, ecs=True)
    text = render_unbound_conf(cfg)
    for line in (
        "do-daemonize: no",
        'chroot: ""',
        'username: ""',
        "do-not-query-localhost: no",
        'module-config: "subnetcache iterator"',
        "stub-addr: 127.0.0.1@5301",
        'local-zone: "." refuse',
    ):
        assert line in text
    bad = ResolverConfig(run_dir=tmp_path, port=5300, extra_server_lines=["no-such-option: yes"])
    with pytest.raises(ResolverError, match="unbound.conf"):
        Resolver(bad).start()


@pytest.mark.skipif(not shutil.which("dig"), reason="dig not installed")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_module_main_foreground_and_sigterm(tmp_path, sig):
    """SIGTERM stops unbound and exits 0; SIGKILL (a crash, `fail res1`) takes unbound with it too."""
    port = free_dns_port()
    d = {
        "name": "res",
        "port": port,
        "run_dir": str(tmp_path / "run"),
        "log_file": str(tmp_path / "res.log"),
        "stub_zones": {"cdnlab.net": ["127.0.0.1@9"]},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen(
        [sys.executable, "-m", "testbed.services.resolver", "--config", str(tmp_path / "r.yaml")], env=env
    )
    try:
        from testbed.util import wait_until

        def answers() -> bool:
            out = subprocess.run(
                ["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1", "example.org"],
                capture_output=True,
                text=True,
            )
            return "status: REFUSED" in out.stdout  # outside the testbed zones: refused, nothing sent out

        wait_until(answers, 15, interval=0.1, what="resolver answering")
        unbound_pid = int((tmp_path / "run" / "unbound.pid").read_text().split()[0])
        p.send_signal(sig)
        assert p.wait(15) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)

        def gone() -> bool:
            try:
                return "zombie" in open(f"/proc/{unbound_pid}/status").read().lower()
            except FileNotFoundError:
                return True

        wait_until(gone, 5, interval=0.02, what=f"unbound {unbound_pid} gone with its service")
        assert not answers()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    d["stub_zones"] = {"cdnlab.net": ["127.0.0.1@notaport"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    bad = subprocess.run(
        [sys.executable, "-m", "testbed.services.resolver", "--config", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "bad.yaml: stub_zones" in bad.stderr

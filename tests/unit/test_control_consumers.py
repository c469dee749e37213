"""The mapping DNS and the redirector consuming the edges' multicast heartbeats (``control`` section).

Heartbeats are fed as real encoded datagrams through ``ControlListener.feed`` (no socket: the listener's
``start`` is replaced); the failure detector runs on a settable clock, so "heartbeats stopped" needs no
waiting. Edges are stand-ins on loopback answering the active health probes.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import dns.message
import dns.query
import dns.rdatatype
import pytest
from cdn_dns_fixtures import REGIONS, StandInEdge, dns_config

from contract import mcast_wire as wire
from contract.config import ConfigError, validate
from testbed.net.mcast_plan import plan_mcast
from testbed.services.dns import DnsConfig, DnsServer
from testbed.services.health import HealthChecker, HealthConfig
from testbed.services.mapping import EdgeSpec
from testbed.services.mcast.consumer import ControlConsumerConfig, ControlFeed
from testbed.services.mcast.control import ControlListener
from testbed.services.redirector import Redirector, RedirectorConfig
from testbed.util import async_wait_until

KEY = "k3y"
SESSION = 2
LOAD_AWARE = "testbed.services.mapping:LoadAware"
CONTROL = {
    "group": {"group": "239.10.0.2", "port": 7401, "iface_addr": "127.0.0.1"},
    "session_id": SESSION,
    "key": KEY,
    "miss_limit": 3,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_SEQ = itertools.count(1)  # like a publisher: every heartbeat a new sequence number and a later timestamp


_LAST_US = [0]


def sent_now_us() -> int:
    """A heartbeat's transmission time: the wall clock now (the feeds drop one older than 30 s, so never a
    time taken at import: the unit tier may run this file minutes after collecting it), always later than
    the previous one."""
    _LAST_US[0] = max(time.time_ns() // 1000, _LAST_US[0] + 1)
    return _LAST_US[0]


def heartbeat(
    name: str,
    rps: float,
    addr: str = "0.0.0.0",
    interval_ms: int = 500,
    seq: int | None = None,
    key: str = KEY,
    session: int = SESSION,
) -> bytes:
    n = next(_SEQ) if seq is None else seq
    hb = wire.Heartbeat(name, wire.Role.EDGE, sent_now_us(), interval_ms, addr, rps, 0, 0.1, 1)
    return wire.encode(hb, session_id=session, sender_id=abs(hash(name)) % 2**32, seq=n, key=key.encode())


@pytest.fixture(autouse=True)
def no_socket(monkeypatch):
    monkeypatch.setattr(ControlListener, "start", lambda self: self)


@pytest.fixture
async def edges():
    es = [await StandInEdge(n).start() for n in ("eu1", "eu2")]
    yield {e.name: e for e in es}
    for e in es:
        await e.stop()


def specs(edges) -> list[dict]:
    out = []
    for i, name in enumerate(("eu1", "eu2")):  # distinct answer addresses, probes on loopback
        s = edges[name].spec("eu")
        s["probe_url"], s["address"] = f"http://127.0.0.1:{s['port']}", f"10.0.0.{i + 1}"
        out.append(s)
    return out


def feed(feed: ControlFeed, clock: Clock, loads: dict[str, float]) -> None:
    feed.listener.table.clock = clock
    for name, rps in loads.items():
        assert feed.listener.feed(heartbeat(name, rps), "127.0.0.1"), name
    feed.sync()


# ---------------------------------------------------------------------------------------------- redirector


# three failed probes in a row mark an edge down: one probe slowed past 0.1 s by a busy machine (the
# stand-in edges share the event loop with the test) must not take an edge out of the answers
@pytest.fixture
async def redir(edges):
    cfg = {
        "name": "redir",
        "port": 0,
        "health": {"interval": 0.1, "timeout": 0.1, "fall": 3, "rise": 1},
        "mapping": {"policy": LOAD_AWARE, "regions": REGIONS, "default_region": "eu", "edges": specs(edges)},
        "control": CONTROL,
    }
    r = Redirector(validate(RedirectorConfig, cfg, "redirector.yaml"))
    await r.start()
    yield r
    await r.stop()


async def redirected(r: Redirector, n: int = 12) -> set[str]:
    """Addresses of the edges the redirector sends ``n`` different paths to."""
    got = set()
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            async with s.get(f"http://127.0.0.1:{r.port}/o/{i}", allow_redirects=False) as resp:
                await resp.read()
                if resp.status == 302:
                    got.add(resp.headers["Location"].split("//", 1)[1].split(":", 1)[0])
                else:
                    got.add(str(resp.status))
    return got


async def test_redirector_follows_heartbeat_load(redir) -> None:
    assert redir.control is not None
    assert await redirected(redir) == {"10.0.0.1", "10.0.0.2"}  # no load known: hash spreads
    clock = Clock()
    feed(redir.control, clock, {"eu1": 250.0, "eu2": 3.0})
    assert redir.health.load("eu1") == 250.0 and redir.health.load("eu2") == 3.0
    assert await redirected(redir) == {"10.0.0.2"}  # least loaded by pushed load
    clock.now += 0.5
    feed(redir.control, clock, {"eu1": 1.0, "eu2": 400.0})
    assert await redirected(redir) == {"10.0.0.1"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{redir.port}/_redirector/stats") as resp:
            st = await resp.json()
    assert st["control"]["heartbeats"] == 4 and st["control"]["edges"]["eu2"]["requests_per_s"] == 400.0


async def test_redirector_drops_edge_whose_heartbeats_stop(redir) -> None:
    assert redir.control is not None
    clock = Clock()
    feed(redir.control, clock, {"eu1": 1.0, "eu2": 50.0})
    assert await redirected(redir) == {"10.0.0.1"}
    clock.now += 1.6  # > 3 x 0.5 s without a heartbeat from eu1; eu2 keeps sending
    feed(redir.control, clock, {"eu2": 50.0})
    assert redir.health.state["eu1"].up  # the HTTP probes still say up ...
    assert not redir.health.is_up("eu1")  # ... but down if either says down
    assert await redirected(redir) == {"10.0.0.2"}
    snap = redir.health.snapshot()["eu1"]
    assert snap["up"] is False and snap["probe_up"] is True and snap["pushed_up"] is False
    clock.now += 0.1
    feed(redir.control, clock, {"eu1": 1.0, "eu2": 50.0})  # heard again: both agree on up
    assert await redirected(redir) == {"10.0.0.1"}


async def test_probe_down_wins_over_fresh_heartbeats(redir, edges) -> None:
    assert redir.control is not None
    clock = Clock()
    feed(redir.control, clock, {"eu1": 1.0, "eu2": 50.0})
    edges["eu1"].healthy = False  # HTTP probes fail, heartbeats stay fresh

    async def only_eu2() -> bool:
        return await redirected(redir, 6) == {"10.0.0.2"}

    await async_wait_until(only_eu2, timeout=5, what="probe-down edge out of the answers")
    assert redir.health.state["eu1"].pushed_up is True and not redir.health.is_up("eu1")


async def test_never_heard_edge_is_judged_by_probes_alone(redir) -> None:
    assert redir.control is not None
    feed(redir.control, Clock(), {"eu2": 5.0})
    assert redir.health.state["eu1"].pushed_up is None and redir.health.is_up("eu1")


# ---------------------------------------------------------------------------------------------- DNS


async def ask_a(server: DnsServer, name: str) -> list[str]:
    q = dns.message.make_query(name, "A")
    r = await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", timeout=2, port=server.port)
    return [rd.address for rr in r.answer if rr.rdtype == dns.rdatatype.A for rd in rr]


@pytest.fixture
async def mapping_dns(edges):
    cfg = dns_config(
        edges=specs(edges), policy=LOAD_AWARE, health={"interval": 0.1, "timeout": 0.1, "fall": 3, "rise": 1}
    )
    cfg["control"] = CONTROL
    server = DnsServer(validate(DnsConfig, cfg, "dns.yaml"))
    await server.start()
    yield server
    await server.stop()


async def answers(server: DnsServer) -> set[str]:
    return {a for i in range(10) for a in await ask_a(server, f"a{i}.g.cdnlab.net")}


async def test_dns_answers_follow_heartbeat_load_and_liveness(mapping_dns) -> None:
    ctl = mapping_dns.control
    assert ctl is not None
    clock = Clock()
    feed(ctl, clock, {"eu1": 300.0, "eu2": 2.0})
    assert await answers(mapping_dns) == {"10.0.0.2"}
    clock.now += 0.4
    feed(ctl, clock, {"eu1": 2.0, "eu2": 300.0})
    assert await answers(mapping_dns) == {"10.0.0.1"}  # the answer cache followed the new load
    clock.now += 1.6  # eu1 silent past 3 x 0.5 s
    feed(ctl, clock, {"eu2": 300.0})
    assert await answers(mapping_dns) == {"10.0.0.2"}


async def test_heartbeats_matched_by_address_and_foreign_ones_ignored(mapping_dns) -> None:
    ctl = mapping_dns.control
    assert ctl is not None
    ctl.listener.table.clock = Clock()
    assert ctl.listener.feed(heartbeat("edge-x", 7.0, addr="10.0.0.2"))  # named differently, same address
    assert ctl.listener.feed(heartbeat("stranger", 1.0, addr="10.9.9.9"))
    assert not ctl.listener.feed(heartbeat("eu1", 1.0, key="wrong"))
    assert not ctl.listener.feed(heartbeat("eu1", 1.0, session=SESSION + 1))
    ctl.sync()
    assert mapping_dns.health.load("eu2") == 7.0 and mapping_dns.health.load("eu1") is None
    assert ctl.listener.errors == {"auth": 1, "wrong_session": 1}
    assert await answers(mapping_dns)  # still answering


def test_feed_against_a_bare_checker_and_heartbeat_interval_from_the_edge() -> None:
    edges = [
        EdgeSpec(name="a", address="10.0.0.1", region="r"),
        EdgeSpec(name="b", address="10.0.0.2", region="r"),
    ]
    checker = HealthChecker(edges, HealthConfig(enabled=False))  # no probes: the heartbeats decide
    cfg = ControlConsumerConfig(miss_limit=2, use_load=False, key=KEY, session_id=SESSION)
    f = ControlFeed(cfg, edges, checker, listen=False)
    clock = Clock()
    f.listener.table.clock = clock
    f.listener.feed(heartbeat("a", 9.0, interval_ms=2000))
    f.listener.feed(heartbeat("b", 9.0, interval_ms=100))
    f.sync()
    assert checker.load("a") is None  # use_load off
    gen = checker.generation
    clock.now += 1.0  # a: 1 s < 2 x 2 s; b: 1 s > 2 x 0.1 s
    f.sync()
    assert checker.is_up("a") and not checker.is_up("b") and checker.generation > gen
    assert f.stats()["edges"]["b"]["failed"] is True


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"miss_limit": 0}, "control.miss_limit"),
        ({"session_id": -1}, "control.session_id"),
        ({"group": {"group": "10.1.1.1"}}, "control.group.group"),
        ({"group": {"port": 0}}, "control.group.port"),
        ({"sync_interval_s": 0}, "control.sync_interval_s"),
        ({"misslimit": 3}, "control.misslimit"),
    ],
)
def test_bad_control_section_names_the_field(edges, bad: dict, field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        validate(DnsConfig, {**dns_config(edges=specs(edges)), "control": bad}, "dns.yaml")
    assert f"dns.yaml: {field}:" in str(ei.value)
    rcfg = {"mapping": {"regions": REGIONS, "edges": specs(edges)}, "control": bad}
    with pytest.raises(ConfigError) as ei:
        validate(RedirectorConfig, rcfg, "redirector.yaml")
    assert f"redirector.yaml: {field}:" in str(ei.value)


def test_cdn_options_multicast_wires_control_into_dns_and_redirector(tmp_path) -> None:
    from types import SimpleNamespace

    from testbed.net.launch import CdnOptions, CdnServices
    from testbed.net.spec import load_topology

    topo = load_topology("mini")
    addrs = topo.addresses()
    cn = SimpleNamespace(topo=topo, run_dir=tmp_path, ip=lambda n: addrs[n], mcast=plan_mcast(topo))
    svc = CdnServices(cn, CdnOptions(multicast=True, control_miss_limit=4))
    edge = validate(
        __import__("testbed.services.edge", fromlist=["EdgeConfig"]).EdgeConfig, svc.edge_config("e1"), "e1"
    )
    d = validate(DnsConfig, svc.dns_config("dns1"), "dns1")
    r = validate(RedirectorConfig, svc.redirector_config("redir"), "redir")
    for c, host in ((d.control, "dns1"), (r.control, "redir")):
        assert c is not None and c.miss_limit == 4 and c.group.iface_addr == addrs[host]
        assert edge.control is not None
        assert (c.group.group, c.group.port, c.session_id, c.key) == (
            edge.control.group.group,
            edge.control.group.port,
            edge.control.session_id,
            edge.control.key,
        )
    plain = CdnServices(cn, CdnOptions())
    assert "control" not in plain.dns_config("dns1") and "control" not in plain.redirector_config("redir")

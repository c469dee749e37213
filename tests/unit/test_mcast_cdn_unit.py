"""Multicast wired into the real edge and origin: config sections, push -> cache hit, update -> purge.

The origin's sender and the edges' receivers are the real engines inside the real (loopback) services;
only the datagram transport is replaced by an in-memory, optionally lossy, fan-out (the socket driver is
:mod:`testbed.services.mcast.sockets`'s, exercised in the Mininet tier).
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import pytest
from cdn_helpers import start_edge, start_origin

from contract.config import ConfigError, validate
from testbed.net.mcast_plan import plan_mcast
from testbed.services.edge import EdgeConfig
from testbed.services.mcast.cdn import EdgeIngest, EdgeLoad, OriginIngest
from testbed.services.origin import OriginConfig

INGEST = {"group": {"group": "239.1.1.1", "port": 7400, "iface_addr": "127.0.0.1"}, "key": "k"}


# ---------------------------------------------------------------------------------------------- configs


def test_edge_config_sections_parse() -> None:
    cfg = validate(
        EdgeConfig,
        {
            "origin_url": "http://127.0.0.1:1",
            "ingest": {**INGEST, "sender_addr": "127.0.0.2", "nack_backoff_s": 0.01},
            "control": {"group": {"group": "239.10.0.2", "port": 7401}, "interval_s": 0.2},
        },
        "edge.yaml",
    )
    assert cfg.ingest is not None and cfg.ingest.group.group == "239.1.1.1"
    assert cfg.ingest.sender_addr == "127.0.0.2" and cfg.ingest.feedback_port == 7402
    assert cfg.control is not None and cfg.control.interval_s == 0.2
    assert validate(EdgeConfig, {"origin_url": "http://127.0.0.1:1"}, "e").ingest is None


@pytest.mark.parametrize(
    ("section", "bad", "field"),
    [
        ("ingest", {"group": {"group": "10.0.0.1"}}, "ingest.group.group"),
        ("ingest", {"sender_addr": "239.1.1.1"}, "ingest.sender_addr"),
        ("ingest", {"nack_retry_s": 0}, "ingest.nack_retry_s"),
        ("ingest", {"group": {"iface_addr": "eth0"}}, "ingest.group.iface_addr"),
        ("ingest", {"bogus": 1}, "ingest.bogus"),
        ("control", {"interval_s": -1}, "control.interval_s"),
        ("control", {"addr": "nowhere"}, "control.addr"),
        ("control", {"group": {"port": 70000}}, "control.group.port"),
    ],
)
def test_bad_edge_config_names_the_field(section: str, bad: dict, field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        validate(EdgeConfig, {"origin_url": "http://127.0.0.1:1", section: bad}, "edge.yaml")
    assert f"edge.yaml: {field}:" in str(ei.value)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"on_update": "explode"}, "ingest.on_update"),
        ({"feedback_port": 0}, "ingest.feedback_port"),
        ({"chunk_size": 10}, "ingest.chunk_size"),
        ({"session_id": -1}, "ingest.session_id"),
        ({"group": {"group": "224.0.0.300"}}, "ingest.group.group"),
    ],
)
def test_bad_origin_config_names_the_field(bad: dict, field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        validate(OriginConfig, {"ingest": bad}, "origin.yaml")
    assert f"origin.yaml: {field}:" in str(ei.value)


def test_edge_load_sample_from_stats() -> None:
    t = [0.0]
    stats = {"hits": 0, "misses": 0, "bytes_from_cache": 0, "store": {"bytes_used": 0, "capacity_bytes": 100}}
    load = EdgeLoad(lambda: stats, clock=lambda: t[0])
    assert load().requests_per_s == 0
    stats.update(
        hits=30,
        misses=10,
        bytes_from_cache=5000,
        store={"bytes_used": 25, "capacity_bytes": 100, "objects": 3},
    )
    t[0] = 2.0
    s = load()
    assert s.requests_per_s == pytest.approx(20.0)
    assert s.bytes_served == 5000 and s.cache_fill == pytest.approx(0.25) and s.cache_objects == 3


# ---------------------------------------------------------------------------------------------- wiring


class Fanout:
    """In-memory multicast: origin -> every edge (each edge drops datagrams per its own pattern),
    edge NACKs -> origin (unicast feedback)."""

    def __init__(self, origin: OriginIngest, edges: list[EdgeIngest], drop_every: dict[int, int]) -> None:
        self.origin, self.edges, self.drop_every = origin, edges, drop_every
        self.sent = 0
        origin.tx.transmit = self.down
        for e in edges:
            e.rx.transmit = origin.tx.datagram_received

    def down(self, data: bytes) -> None:
        self.sent += 1
        for i, e in enumerate(self.edges):
            k = self.drop_every.get(i)
            if k and (self.sent + i) % k == 0:
                continue
            e.rx.datagram_received(data)

    async def settle(self, done, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            self.origin.tx.poll()
            for e in self.edges:
                e.rx.poll()
            if done():
                return
            await asyncio.sleep(0.002)
        raise AssertionError("multicast did not settle")


@pytest.fixture
async def cdn(monkeypatch):
    async def no_socket(self, stop):  # the in-memory Fanout is the transport here
        await stop.wait()

    monkeypatch.setattr(EdgeIngest, "run", no_socket)
    monkeypatch.setattr(OriginIngest, "run", no_socket)
    origin = await start_origin(ingest={**INGEST, "rate_mbps": 0, "report_interval_s": 0.05})
    edges = [
        await start_edge(
            origin.url, name=f"e{i}", ingest={**INGEST, "nack_backoff_s": 0.005, "nack_retry_s": 0.03}
        )
        for i in range(2)
    ]
    net = Fanout(origin.ingest, [e.ingest for e in edges], {1: 7})  # edge 1 loses every 7th datagram
    async with aiohttp.ClientSession() as http:
        yield origin, edges, net, http
    for e in edges:
        await e.close()
    await origin.close()


async def test_push_lands_in_every_edge_as_hit_without_origin_requests(cdn) -> None:
    origin, edges, net, http = cdn
    objs = [o for o in origin.catalog.objects if o.size > 3000][:6]
    async with http.post(origin.url + "/_origin/push", json={"paths": [o.path for o in objs]}) as r:
        assert r.status == 200
        res = await r.json()
    assert [p["path"] for p in res["pushed"]] == [o.path for o in objs] and res["unknown"] == []
    await net.settle(lambda: all(e.ingest.rx.stats.delivered == len(objs) for e in edges))
    for e in edges:
        for o in objs:
            async with http.get(e.url + o.path) as r:
                body = await r.read()
                assert r.headers["X-Cache"] == "HIT", (e.name, o.path)
                assert hashlib.sha256(body).digest() == hashlib.sha256(origin.body(o)).digest()
                assert r.headers["ETag"] == origin.catalog.etag(o, 0)
    async with http.get(origin.url + "/_origin/stats") as r:
        ostats = await r.json()
    assert ostats["requests"] == 0
    assert ostats["ingest"]["objects_pushed"] == len(objs)
    async with http.get(edges[1].url + "/_cdn/stats") as r:
        lossy = (await r.json())["ingest"]
    assert lossy["objects_received"] == len(objs) and lossy["repairs"] > 0 and lossy["nacks_sent"] > 0
    assert ostats["ingest"]["repair_packets"] > 0


async def test_update_invalidates_every_edge_copy(cdn) -> None:
    origin, edges, net, http = cdn
    obj = next(o for o in origin.catalog.objects if o.cls == "image")
    async with http.post(origin.url + "/_origin/push", json={"paths": [obj.path]}) as r:
        assert r.status == 200
    await net.settle(lambda: all(e.ingest.rx.stats.delivered == 1 for e in edges))
    async with http.post(origin.url + "/_origin/update" + obj.path) as r:
        upd = await r.json()
    assert upd["version"] == 1 and "inval_id" in upd["multicast"]
    await net.settle(lambda: all(e.ingest.rx.stats.invalidations_applied == 1 for e in edges))
    for e in edges:
        async with http.get(e.url + obj.path) as r:
            body = await r.read()
            assert r.headers["X-Cache"] == "MISS"
            assert r.headers["ETag"] == origin.catalog.etag(obj, 1)
            assert body == origin.body(obj)
        async with http.get(e.url + "/_cdn/stats") as r:
            st = (await r.json())["ingest"]
        assert st["invalidations_applied"] == 1 and st["purged"] == 1
        assert st["inval_latency_s"]["count"] == 1 and st["inval_latency_s"]["last"] >= 0


async def test_bad_push_requests_are_answered_and_origin_keeps_serving(cdn) -> None:
    origin, _edges, _net, http = cdn
    for body in (
        b"not json",
        b"[1]",
        json.dumps({"paths": []}).encode(),
        json.dumps({"paths": [3]}).encode(),
        json.dumps({"paths": ["/x"], "extra": 1}).encode(),
    ):
        async with http.post(origin.url + "/_origin/push", data=body) as r:
            assert r.status == 400, body
            assert "bad push request" in (await r.json())["error"]
    async with http.post(origin.url + "/_origin/push", json={"paths": ["/no/such"]}) as r:
        assert r.status == 404 and (await r.json())["unknown"] == ["/no/such"]
    async with http.get(origin.url + "/_origin/health") as r:
        assert r.status == 200


async def test_push_without_ingest_is_refused() -> None:
    origin = await start_origin()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(origin.url + "/_origin/push", json={"all": True}) as r,
        ):
            assert r.status == 409 and "not configured" in (await r.json())["error"]
    finally:
        await origin.close()


async def test_forged_datagrams_are_counted_by_reason_in_edge_stats(cdn) -> None:
    _origin, edges, _net, http = cdn
    rx = edges[0].ingest.rx
    rx.datagram_received(b"\x00" * 10)
    rx.datagram_received(b"garbage that is long enough to look like a header" * 2)
    async with http.get(edges[0].url + "/_cdn/stats") as r:
        st = (await r.json())["ingest"]
    assert sum(st["errors"].values()) == 2 and st["objects_received"] == 0
    async with http.get(edges[0].url + "/_cdn/health") as r:
        assert r.status == 200


# ---------------------------------------------------------------------------------------------- orchestration


def _fake_net(tmp_path, topo):
    from types import SimpleNamespace

    addrs = topo.addresses()
    return SimpleNamespace(topo=topo, run_dir=tmp_path, ip=lambda n: addrs[n], mcast=plan_mcast(topo))


def test_cdn_options_multicast_wires_valid_configs_from_the_topology(tmp_path) -> None:
    from testbed.net.launch import CdnOptions, CdnServices
    from testbed.net.spec import load_topology
    from testbed.services.mcast.control import ControlConfig

    topo = load_topology("mini")
    cn = _fake_net(tmp_path, topo)
    svc = CdnServices(cn, CdnOptions(multicast=True))
    assert (svc.ingest_group, svc.control_group) == ("239.1.1.1", "239.10.0.2")
    o = validate(OriginConfig, svc.origin_config(), "origin")
    assert o.ingest is not None and o.ingest.group.iface_addr == cn.ip("origin") and o.ingest.key
    for e in svc.edges:
        c = validate(EdgeConfig, svc.edge_config(e), e)
        assert c.ingest is not None and c.ingest.group.group == "239.1.1.1"
        assert c.ingest.group.iface_addr == cn.ip(e) and c.ingest.sender_addr == cn.ip("origin")
        assert c.ingest.key == o.ingest.key and c.ingest.feedback_port == o.ingest.feedback_port
        assert c.control is not None and c.control.group.group == "239.10.0.2" and c.control.addr == cn.ip(e)
    lst = validate(ControlConfig, svc.control_listener_config("redir", tmp_path / "n.json"), "listener")
    assert lst.group.group == "239.10.0.2" and lst.key == o.ingest.key
    # off by default: the edges and origin get no multicast sections
    plain = CdnServices(cn, CdnOptions())
    assert "ingest" not in plain.origin_config() and "ingest" not in plain.edge_config("e1")


def test_cdn_options_multicast_needs_an_origin_group(tmp_path) -> None:
    from testbed.net.launch import CdnOptions, CdnServices
    from testbed.net.spec import load_topology

    topo = load_topology("mini").model_copy(update={"multicast": []})
    with pytest.raises(ValueError, match="multicast group whose source is the origin"):
        CdnServices(_fake_net(tmp_path, topo), CdnOptions(multicast=True))


async def test_update_with_on_update_push_refreshes_edges_in_place(monkeypatch) -> None:
    async def no_socket(self, stop):
        await stop.wait()

    monkeypatch.setattr(EdgeIngest, "run", no_socket)
    monkeypatch.setattr(OriginIngest, "run", no_socket)
    origin = await start_origin(ingest={**INGEST, "rate_mbps": 0, "on_update": "push"})
    edge = await start_edge(origin.url, ingest=INGEST)
    net = Fanout(origin.ingest, [edge.ingest], {})
    try:
        obj = next(o for o in origin.catalog.objects if o.cls == "js")
        async with aiohttp.ClientSession() as http:
            async with http.post(origin.url + "/_origin/update" + obj.path) as r:
                upd = await r.json()
            assert "pushed" in upd["multicast"]
            await net.settle(lambda: edge.ingest.rx.stats.delivered == 1)
            async with http.get(edge.url + obj.path) as r:
                assert r.headers["X-Cache"] == "HIT" and r.headers["ETag"] == origin.catalog.etag(obj, 1)
                assert await r.read() == origin.body(obj)
        assert origin.requests == 0
    finally:
        await edge.close()
        await origin.close()

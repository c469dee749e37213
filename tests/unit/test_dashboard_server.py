"""The dashboard's server (testbed.web.server) and view (testbed.web.view) on loopback, with a double of
the network: every message of the event stream validates against contract.dashboard; actions need the
page's token, name what is wrong in a bad request, and go through the services' own methods."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from contract.dashboard import (
    Action,
    ClientState,
    EdgeState,
    StateMsg,
    TimelineEvent,
    TopologyMsg,
)
from testbed.net.spec import load_topology
from testbed.web import view
from testbed.web.server import TOKEN_HEADER, Dashboard

MODELS = {"topology": TopologyMsg, "state": StateMsg, "event": TimelineEvent}


# -- view (pure) --------------------------------------------------------------------------------------
def test_globe_is_drawn_on_a_map_and_mini_by_force():
    globe = load_topology("globe")
    msg = view.topology_msg(globe, globe.addresses())
    assert msg.geo and msg.methods == ["anycast", "dns", "redirect"]
    assert len(msg.nodes) == len(globe.switches) + len(globe.hosts)
    assert len(msg.links) == len(globe.links) + len(globe.hosts)  # switch links and access links
    s_eu = next(n for n in msg.nodes if n.id == "s_eu")
    assert (s_eu.lat, s_eu.lon) == (51.51, -0.13)
    assert not view.topology_msg(load_topology("mini"), {}).geo


def test_edge_health_from_failure_controller_and_stats():
    st = {
        "hits": 30,
        "misses": 10,
        "uncachable": 0,
        "bytes_from_cache": 500,
        "bytes_from_origin": 100,
        "store": {"bytes_used": 4096},
    }
    prev = view.edge_state("e1", {"hits": 20, "misses": 10}, None, None, [], None, 1.0)
    e = view.edge_state("e1", st, {"healthy": True, "load": 0.25}, None, ["s1"], prev, 2.0)
    assert (e.health, e.requests, e.rps, e.hit_ratio, e.bytes_served, e.cache_bytes, e.load) == (
        "up",
        40,
        5.0,
        0.75,
        600,
        4096,
        0.25,
    )
    assert view.edge_state("e1", None, None, "host", [], e, 1.0).health == "failed"
    down = view.edge_state("e1", st, {"healthy": False, "reason": "probe timeout"}, None, [], e, 1.0)
    assert (down.health, down.reason) == ("down", "probe timeout")
    assert (
        view.edge_state("e1", st, {"healthy": False, "drained": True}, None, [], e, 1.0).health == "drained"
    )
    gone = view.edge_state("e1", None, None, None, [], e, 1.0)
    assert (gone.health, gone.requests, gone.rps) == ("unknown", 40, 0.0)
    restarted = view.edge_state("e1", {"hits": 1, "misses": 0}, None, None, [], e, 1.0)
    assert restarted.rps == 0.0 and restarted.requests == 1  # counters reset: no negative rate


def _state(
    seq: int,
    e2: str = "up",
    c1: dict[str, Any] | None = None,
    down: list[str] | None = None,
    ttl: int | None = None,
) -> StateMsg:
    return StateMsg(
        seq=seq,
        time=float(seq),
        links_down=down or [],
        edges=[EdgeState(name="e1", health="up"), EdgeState(name="e2", health=e2)],
        clients=[ClientState(name="c1", dns_ttl=ttl, **(c1 or {"anycast": "e2", "dns": "e2"}))],
    )


def test_timeline_names_each_change():
    a = _state(0, ttl=5)
    b = _state(1, e2="failed", c1={"anycast": "e1", "dns": "e2"}, down=["s1|s2"], ttl=30)
    texts = [(k, t) for k, t, _ in view.timeline(a, b)]
    assert ("failure", "edge e2: up -> failed") in texts
    assert ("failure", "link s1-s2 down") in texts
    assert ("route", "c1: anycast e2 -> e1") in texts
    assert ("dns", "c1: DNS answer expired and renewed: e2 (TTL 30 s)") in texts
    back = [(k, t) for k, t, _ in view.timeline(b, _state(2))]
    assert ("recovery", "edge e2: failed -> up") in back and ("recovery", "link s1-s2 up") in back
    assert view.timeline(None, a) == [] and view.timeline(a, a) == []


def test_an_action_names_what_it_lacks():
    with pytest.raises(ValueError, match="needs host"):
        Action(action="fail")
    with pytest.raises(ValueError, match="must start with /"):
        Action(action="purge", path="img/1.jpg")
    with pytest.raises(ValueError, match="extra"):
        Action.model_validate({"action": "recover", "host": "e1", "force": True})


# -- the server, with a double of the network ---------------------------------------------------------
class FakeServices:
    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self.calls: list[tuple] = []
        self.admin_token = "t" * 24

    def fail(self, host: str, kind: str = "process") -> str:
        if kind not in ("process", "host", "link"):
            raise ValueError(f"unknown failure kind {kind!r}")
        self.calls.append(("fail", host, kind))
        self.failed[host] = kind
        return "clients move to another edge"

    def recover(self, host: str, kind: str = "process") -> None:
        self.calls.append(("recover", host, kind))
        self.failed.pop(host, None)

    def purge(self, paths: list[str], edges: list[str] | None = None) -> dict[str, Any]:
        self.calls.append(("purge", tuple(paths), edges))
        return {e: {"purged": e == "e1"} for e in edges or ["e1", "e2"]}


class FakeNet:
    def __init__(self) -> None:
        self.links: list[tuple[str, str, str]] = []

    def configLinkStatus(self, a: str, b: str, status: str) -> None:  # noqa: N802 - Mininet's name
        self.links.append((a, b, status))


class FakeCdn:
    def __init__(self) -> None:
        self.topo = load_topology("mini")
        self.addresses = self.topo.addresses()
        self.services = FakeServices()
        self.net = FakeNet()
        self.lock = threading.RLock()
        self.controller_mode = "standalone"


class FakeSampler:
    """States from the double's failure record: e2 failed when the services say so."""

    def __init__(self, cn: FakeCdn) -> None:
        self.cn, self.seq, self.closed = cn, 0, False

    def sample(self, failed: dict[str, str], experiment: Any) -> StateMsg:
        self.seq += 1
        edges = [
            EdgeState(name=e, health="failed" if e in failed else "up", failed=failed.get(e))
            for e in ("e1", "e2")
        ]
        return StateMsg(
            seq=self.seq,
            time=time.time(),
            edges=edges,
            clients=[ClientState(name="c2", anycast="e1" if "e2" in failed else "e2")],
            experiment=experiment,
        )

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def dash():
    d = Dashboard(port=0, interval_s=0.1)
    d.start()
    cn = FakeCdn()
    d.attach(cn, sampler=FakeSampler(cn))
    yield d, cn
    d.stop()


def _post(d: Dashboard, body: Any, token: str | None = None, host: str | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(d.url + "api/action", data=data, method="POST")
    if token is not None:
        req.add_header(TOKEN_HEADER, token)
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Stream:
    """Reads the event stream (HTTP/1.0: no chunks, ends when the server closes) in a thread; each message
    is validated against its contract model."""

    def __init__(self, d: Dashboard) -> None:
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        self.sock.sendall(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{d.port}\r\n\r\n".encode())
        self.messages: list[tuple[str, Any]] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event = None
        try:
            f = self.sock.makefile("rb")
            while f.readline() not in (b"\r\n", b""):  # the response's header
                pass
            for raw in f:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    try:
                        self.messages.append((event, MODELS[event].model_validate_json(line[6:])))
                    except Exception as e:  # noqa: BLE001 - reported by the test
                        self.errors.append(f"{event}: {e}")
        except (OSError, ValueError):  # closed by the test
            pass

    def wait(self, pred, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.messages):
                if pred(m):
                    return m
            time.sleep(0.02)
        raise AssertionError(
            f"no such message in {timeout} s; got {[(m[0], getattr(m[1], 'text', '')) for m in self.messages if m[0] != 'state']}"
        )

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_the_stream_speaks_the_contract_and_an_action_shows_within_a_second(dash):
    d, cn = dash
    s = Stream(d)
    try:
        topo = s.wait(lambda m: m[0] == "topology")[1]
        assert {n.id for n in topo.nodes} >= {"s1", "s2", "e1", "e2", "c1", "c2", "origin"}
        s.wait(lambda m: m[0] == "state")
        code, ans = _post(d, {"action": "fail", "host": "e2", "kind": "host"}, d.token)
        assert code == 200 and ans["ok"] and "e2: host failure injected" in ans["message"]
        t0 = time.monotonic()
        s.wait(
            lambda m: m[0] == "state" and any(e.name == "e2" and e.health == "failed" for e in m[1].edges),
            timeout=1.0,
        )
        assert time.monotonic() - t0 < 1.0
        s.wait(lambda m: m[0] == "event" and m[1].text == "edge e2: up -> failed (host)")
        s.wait(lambda m: m[0] == "event" and m[1].text == "c2: anycast e2 -> e1")
        s.wait(
            lambda m: m[0] == "event" and m[1].kind == "action" and "requested: fail e2 (host)" in m[1].text
        )
        assert cn.services.calls == [("fail", "e2", "host")]
        assert _post(d, {"action": "recover", "host": "e2"}, d.token)[0] == 200
        assert cn.services.calls[-1] == ("recover", "e2", "host")  # the kind it failed with
        assert s.errors == []
    finally:
        s.close()


def test_actions_need_the_token_and_name_what_is_wrong(dash):
    d, cn = dash
    assert _post(d, {"action": "fail", "host": "e1"})[0] == 403
    assert _post(d, {"action": "fail", "host": "e1"}, "wrong")[0] == 403
    code, ans = _post(d, {"action": "fail"}, d.token)
    assert code == 400 and "needs host" in ans["error"]
    code, ans = _post(d, b"{not json", d.token)
    assert code == 400 and "not JSON" in ans["error"]
    code, ans = _post(d, {"action": "explode", "host": "e1"}, d.token)
    assert code == 400 and "action" in ans["error"]
    code, ans = _post(d, {"action": "fail", "host": "nosuch"}, d.token)
    assert code == 400 and "no host named 'nosuch'" in ans["error"]
    code, ans = _post(d, {"action": "link_down", "link": "s1|s9"}, d.token)
    assert code == 400 and "no link 's1|s9'" in ans["error"]
    assert cn.services.calls == [] and cn.net.links == []
    # and it keeps serving: a good action after the bad ones works
    code, ans = _post(d, {"action": "link_down", "link": "s1|s2"}, d.token)
    assert code == 200 and cn.net.links == [("s1", "s2", "down")]
    code, ans = _post(d, {"action": "purge", "path": "/img/img0001.jpg"}, d.token)
    assert code == 200 and ans["message"] == "purged /img/img0001.jpg from e1"
    code, ans = _post(d, {"action": "drain", "host": "e1"}, d.token)
    assert code == 400 and "Ryu controller" in ans["error"]


def test_another_host_name_is_refused(dash):
    d, _ = dash
    code, ans = _post(d, {"action": "recover", "host": "e1"}, d.token, host=f"evil.example:{d.port}")
    assert code == 421 and "127.0.0.1" in ans["error"]


def test_read_only_during_an_experiment_and_the_page_gets_the_token(dash):
    d, cn = dash
    d.attach(cn, actions=False, sampler=FakeSampler(cn))
    code, ans = _post(d, {"action": "fail", "host": "e1"}, d.token)
    assert code == 403 and "read-only" in ans["error"]
    d.report_experiment("selection", 0.5, "methods 1/2", {"steps done": 1})
    s = Stream(d)  # the network is sampled while a page watches
    try:
        s.wait(lambda m: m[0] == "state" and m[1].experiment is not None)
    finally:
        s.close()
    snap = json.loads(urllib.request.urlopen(d.url + "api/state", timeout=5).read())
    assert snap["state"]["experiment"] == {
        "name": "selection",
        "progress": 0.5,
        "phase": "methods 1/2",
        "figures": {"steps done": 1},
    }
    assert snap["topology"]["actions"] is False
    html = urllib.request.urlopen(d.url, timeout=5).read().decode()
    assert d.token in html and "{{TOKEN}}" not in html


def test_detach_stops_sampling_and_says_so(dash):
    d, cn = dash
    s = Stream(d)
    try:
        s.wait(lambda m: m[0] == "state")
        d.detach(cn)
        s.wait(lambda m: m[0] == "event" and m[1].text == "network mini stopped")
        n = len([m for m in s.messages if m[0] == "state"])
        time.sleep(0.4)  # four sampling periods with nothing attached
        assert len([m for m in s.messages if m[0] == "state"]) <= n + 1
        code, ans = _post(d, {"action": "recover", "host": "e1"}, d.token)
        assert code == 409 and "no network" in ans["error"]
    finally:
        s.close()


def test_a_taken_port_is_a_clear_error(dash):
    d, _ = dash
    with pytest.raises(OSError):
        Dashboard(port=d.port).start()


def test_cdnlab_run_web_follows_each_network_read_only(monkeypatch, tmp_path, capsys):
    """`cdnlab run NAME --web`: the dashboard shows each network the experiment builds, read-only, with the
    experiment's progress, and lets go of the build hook when the run ends."""
    import re
    import types

    import experiments.framework as framework
    import testbed.web.sampler as sampler_module
    from experiments import cli
    from testbed.net.build import NETWORK_LISTENERS

    monkeypatch.setattr(sampler_module, "Sampler", lambda cn, probe_every=2: FakeSampler(cn))
    seen: dict[str, Any] = {}

    def run_experiment(name: str, out: Any, *, progress: Any = None, **_: Any) -> dict[str, Any]:
        url = re.search(r"dashboard on (http://\S+)", capsys.readouterr().out).group(1)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        cn = FakeCdn()
        for listener in list(NETWORK_LISTENERS):  # what CdnNet.start() does
            listener("up", cn)
        task = progress.add_task("methods", total=2)
        progress.advance(task)
        s = Stream(types.SimpleNamespace(port=port))
        try:
            seen["topology"] = s.wait(lambda m: m[0] == "topology")[1]
            seen["state"] = s.wait(lambda m: m[0] == "state" and m[1].experiment is not None)[1]
            html = urllib.request.urlopen(url, timeout=5).read().decode()
            token = re.search(r'name="cdnlab-token" content="([^"]+)"', html).group(1)
            seen["refused"] = _post(types.SimpleNamespace(url=url), {"action": "fail", "host": "e1"}, token)
        finally:
            s.close()
        for listener in list(NETWORK_LISTENERS):  # what CdnNet.stop() does
            listener("down", cn)
        return {"summary": "done"}

    monkeypatch.setattr(framework, "run_experiment", run_experiment)
    before = list(NETWORK_LISTENERS)
    assert cli.main(["selection", "--web", "0", "--no-progress", "--out", str(tmp_path)]) == 0
    assert seen["topology"].name == "mini" and seen["topology"].actions is False
    exp = seen["state"].experiment
    assert (exp.name, exp.progress, exp.phase) == ("selection", 0.5, "methods 1/2")
    assert seen["refused"][0] == 403 and "read-only" in seen["refused"][1]["error"]  # the experiment's network
    assert NETWORK_LISTENERS == before


def test_an_experiment_without_a_network_still_shows_its_progress():
    """zipf builds no network; between an experiment's networks there is none either: the page still gets
    the experiment's progress once a second."""
    d = Dashboard(port=0, interval_s=0.1)
    d.start()
    try:
        d.report_experiment("zipf", 0.25, "zipf: replaying traces 6/24", {"latest hit ratio": "lru: 0.412"})
        s = Stream(d)
        try:
            st = s.wait(lambda m: m[0] == "state")[1]
            assert st.edges == [] and st.clients == [] and st.experiment.name == "zipf"
            assert st.experiment.figures == {"latest hit ratio": "lru: 0.412"}
            assert s.errors == []
        finally:
            s.close()
    finally:
        d.stop()

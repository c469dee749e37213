"""The controller against real userspace OVS switches in Mininet (needs root).

A triangle (cyclic) topology: hch1..3 clients on hc1..3, anycast members hch4 (hc1) and hch5 (hc3)
running a tiny HTTP server that answers its own name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from minibuild import HTTP_SERVER, MCAST_RECEIVER, MCAST_SENDER, build, dump_flows

from contract.netview import NetView
from controller.examples import triangle
from testbed.util import free_port, timeout_scale, wait_tcp, wait_until

pytestmark = [pytest.mark.mininet, pytest.mark.vm]
VIP = "10.0.0.100"

RECEIVER, SENDER = MCAST_RECEIVER, MCAST_SENDER


KEEPALIVE_CLIENT = r"""
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=float(sys.argv[2]))
def ask():
    conn.request("GET", "/")
    return conn.getresponse().read().decode()
print(ask(), flush=True)
sys.stdin.readline()
try:
    conn.auto_open = 0  # never reconnect silently: the same TCP connection or an error
    print(ask(), flush=True)
except (OSError, http.client.HTTPException) as e:
    print("error", type(e).__name__, flush=True)
"""


def scaled_probes(view: NetView, scale: float) -> NetView:
    """The view with its liveness probes' interval and timeout stretched by ``scale``: under TCG (about
    4x slower) a 60 ms SYN round trip through switch and controller can time out twice and withdraw a
    live member, deleting its affinity flows."""
    if scale == 1:
        return view
    data = view.model_dump(mode="json")
    for svc in data["anycast"]:
        svc["probe"]["interval_ms"] *= scale
        svc["probe"]["timeout_ms"] *= scale
    return NetView.model_validate(data)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rest_port = free_port()
        self.of_port = free_port()
        self.view = scaled_probes(triangle(rest_port=self.rest_port), timeout_scale())
        vp = tmp / "view.json"
        vp.write_text(json.dumps(self.view.model_dump(mode="json")))
        self.log = tmp / "controller.log"
        self.ctl = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "--view",
                str(vp),
                "--of-port",
                str(self.of_port),
                "--log",
                str(self.log),
            ]
        )
        self.net = None
        self.servers: dict[str, object] = {}

    def rest(self, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=3) as r:
            return json.loads(r.read())

    def start_server(self, name: str) -> None:
        h = self.net.get(name)
        self.servers[name] = h.popen([sys.executable, "-c", HTTP_SERVER, name, "80"])

    def stop_server(self, name: str) -> None:
        p = self.servers.pop(name)
        p.kill()
        p.wait()

    def get(self, client: str, url: str = f"http://{VIP}/") -> str:
        return self.net.get(client).cmd(f"curl -s --max-time {2 * timeout_scale():g} {url}").strip()

    def converges(self, client: str, want: str) -> bool:
        """The controller's REST state can be a few ms ahead of the switches' tables (and a connection
        opened during a change of member is reset, by design in destination mode): poll."""
        wait_until(lambda: self.get(client) == want, 5, what=f"{client} -> VIP answered by {want}")
        return True

    def member(self, name: str) -> dict:
        return self.rest("/anycast")["services"]["web"]["members"][name]

    def withdrawals(self) -> list[str]:
        """The controller's log lines saying a member was withdrawn (a cause of broken affinity flows)."""
        text = self.log.read_text() if self.log.exists() else ""
        return [ln for ln in text.splitlines() if "withdrawn" in ln]

    def close(self) -> None:
        for name in list(self.servers):
            self.stop_server(name)
        if self.net is not None:
            self.net.stop()
        self.ctl.terminate()
        try:
            self.ctl.wait(10)
        except subprocess.TimeoutExpired:
            self.ctl.kill()
            self.ctl.wait()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, emulation) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("ctl"))
    try:
        wait_tcp("127.0.0.1", e.rest_port, timeout=20)
        e.net = build(e.view, e.of_port, datapath=emulation.datapath)
        wait_until(
            lambda: all(s["connected"] for s in e.rest("/topology")["switches"]),
            20,
            what="switches connected",
        )
        for m in ("hch4", "hch5"):
            e.start_server(m)
        wait_until(lambda: all(e.member(m)["healthy"] for m in ("hch4", "hch5")), 20, what="members healthy")
        yield e
    finally:
        e.close()


def _ping(env: Env, a: str, b: str) -> bool:
    return " 0% packet loss" in env.net.get(a).cmd(f"ping -c1 -W1 {env.net.get(b).IP()}")


def _switch_tx_packets(env: Env) -> int:
    total = 0
    for s in env.view.switches:
        out = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", s.name], capture_output=True, text=True
        ).stdout
        total += sum(int(x.split("=")[1].rstrip(",")) for x in out.split() if x.startswith("pkts=")) // 2
    return total


def test_all_pairs_ping_on_cycle_without_storm(env: Env) -> None:
    before = _switch_tx_packets(env)
    names = [h.name for h in env.view.hosts]
    failed = [(a, b) for a in names for b in names if a != b and not _ping(env, a, b)]
    assert failed == []
    # 20 pings = 40 ICMP packets crossing at most 3 switches (+ LLDP, probes, ARP replies): a storm would be
    # orders of magnitude more
    assert _switch_tx_packets(env) - before < 5000


def test_lldp_sees_exactly_the_configured_links(env: Env) -> None:
    def clean() -> bool:
        t = env.rest("/topology")
        return t["lldp_checked"] and t["lldp_mismatches"] == []

    wait_until(clean, 20, interval=0.5, what="LLDP agrees with the view")


def test_vip_reaches_nearest_member(env: Env) -> None:
    choice = env.rest("/anycast")["services"]["web"]["choice"]
    assert choice == {"hc1": "hch4", "hc2": "hch5", "hc3": "hch5"}
    assert [env.get(c) for c in ("hch1", "hch2", "hch3")] == ["hch4", "hch5", "hch5"]


def test_killed_server_is_withdrawn_and_restored(env: Env) -> None:
    env.stop_server("hch4")
    wait_until(lambda: not env.member("hch4")["alive"], 5, what="hch4 withdrawn")
    assert "RST" in env.member("hch4")["reason"]
    assert env.converges("hch1", "hch5")
    env.start_server("hch4")
    wait_until(lambda: env.member("hch4")["healthy"], 5, what="hch4 restored")
    assert env.converges("hch1", "hch4")


def test_drain_via_rest(env: Env) -> None:
    r = env.rest("/anycast/web/drain/hch5", {})
    assert r["choice"] == {"hc1": "hch4", "hc2": "hch4", "hc3": "hch4"}
    assert env.converges("hch3", "hch4")
    env.rest("/anycast/web/restore/hch5", {})
    assert env.converges("hch3", "hch5")


def test_link_down_reroutes(env: Env) -> None:
    env.net.configLinkStatus("hc2", "hc3", "down")
    try:
        wait_until(
            lambda: (
                not [lk for lk in env.rest("/topology")["links"] if lk["a"] == "hc2" and lk["b"] == "hc3"][0][
                    "up"
                ]
            ),
            5,
            what="link hc2-hc3 seen down",
        )
        wait_until(
            lambda: env.rest("/anycast")["services"]["web"]["choice"]["hc2"] == "hch4",
            5,
            what="hc2's choice recomputed",
        )  # the topology view can be a moment ahead of the choice
        assert env.converges("hch2", "hch4")
        assert _ping(env, "hch2", "hch3")  # via hc1
    finally:
        env.net.configLinkStatus("hc2", "hc3", "up")
    wait_until(
        lambda: env.rest("/anycast")["services"]["web"]["choice"]["hc2"] == "hch5", 5, what="link back"
    )
    assert env.converges("hch2", "hch5")


def test_multicast_reaches_joined_members_only(env: Env) -> None:
    group, port = "239.5.5.5", 5005
    outs = {n: env.tmp / f"mc-{n}.txt" for n in ("hch2", "hch3", "hch5")}
    for p in outs.values():
        p.write_text("")
    procs = {}
    try:
        for n in ("hch2", "hch3"):
            h = env.net.get(n)
            procs[n] = h.popen([sys.executable, "-c", RECEIVER, group, str(port), h.IP(), str(outs[n])])
        # hch5 does not join: capture what its NIC receives (the kernel would filter it anyway)
        h5 = env.net.get("hch5")
        procs["hch5"] = h5.popen(
            ["tcpdump", "-l", "-n", "-i", "hch5-eth0", "udp", "and", "dst", group],
            stdout=open(outs["hch5"], "w"),
            stderr=subprocess.DEVNULL,
        )

        def members() -> set[str]:
            g = env.rest("/multicast")["groups"].get(group, {})
            return set(g.get("igmp_members", {}))

        wait_until(lambda: members() == {"hch2", "hch3"}, 10, what="IGMP joins seen")
        h1 = env.net.get("hch1")
        h1.cmd(f"{sys.executable} -c '{SENDER}' {group} {port} {h1.IP()} a 10")
        wait_until(
            lambda: outs["hch2"].read_text().count("a-") == 10 and outs["hch3"].read_text().count("a-") == 10,
            5,
            what="datagrams at members",
        )
        # hch3 leaves (its socket closes: the kernel sends a leave report)
        procs.pop("hch3").kill()
        wait_until(lambda: members() == {"hch2"}, 10, what="IGMP leave seen")
        h1.cmd(f"{sys.executable} -c '{SENDER}' {group} {port} {h1.IP()} b 10")
        wait_until(lambda: outs["hch2"].read_text().count("b-") == 10, 5, what="second burst at hch2")
        assert "b-" not in outs["hch3"].read_text()
        tree = [t for t in env.rest("/multicast")["trees"] if t["group"] == group and t["source"] == "hch1"]
        assert tree and tree[0]["members"] == ["hch2"]
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    assert outs["hch5"].read_text().count(group) == 0


@pytest.mark.parametrize("mode", ["affinity", "destination"])
def test_established_connection_across_drain(env: Env, mode: str) -> None:
    """affinity: a drained member keeps serving its established connection; destination: it breaks."""
    env.rest("/anycast/mode", {"mode": mode})
    vmac = env.view.anycast[0].vmac.lower()

    def ingress_modes() -> set[str]:  # what hch1's switch does with a new connection to the VIP
        rules = [f for f in dump_flows("hc1") if f"nw_dst={VIP}" in f and f"dl_dst={vmac}" in f]
        return {"affinity" if "CONTROLLER" in f else "destination" for f in rules}

    # the REST answer comes before the switches have the new rules: connect only once they do
    wait_until(lambda: ingress_modes() == {mode}, 10, what=f"{mode} ingress rules on hc1")
    client = env.net.get("hch1").popen(
        [sys.executable, "-c", KEEPALIVE_CLIENT, VIP, str(3 * timeout_scale())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "hch4"
        env.rest("/anycast/web/drain/hch4", {})
        assert env.converges("hch1", "hch5")  # new connections go to the next member
        client.stdin.write("\n")
        client.stdin.flush()
        second = client.stdout.readline().strip()
        if mode == "affinity":
            assert second == "hch4", f"the drained member's connection broke; controller: {env.withdrawals()}"
        else:
            assert second.startswith("error")  # the next member never saw this connection: RST
    finally:
        client.kill()
        client.wait()
        env.rest("/anycast/web/restore/hch4", {})
        env.rest("/anycast/mode", {"mode": "destination"})

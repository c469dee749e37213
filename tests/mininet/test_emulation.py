"""The emulation core on real networks: builds, reachability, delays, bandwidth, link state, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.net import host_env, netem_watch, relay_watch
from testbed.net.containment import guard_routes
from testbed.net.spec import load_topology, parse_topology
from testbed.net.state import all_states
from testbed.util import wait_until

pytestmark = pytest.mark.mininet
ROOT = Path(__file__).resolve().parents[2]


def _bridges() -> set[str]:
    return set(host_env.run(["ovs-vsctl", "list-br"]).stdout.split())


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _guard_routes() -> set[tuple[str, int]]:
    return {(r.dst, r.metric) for r in guard_routes()}


def _two_host(delay_ms: float = 0, bw: float | None = None, loss: float = 0) -> object:
    link = {"delay_ms": delay_ms, "loss_pct": loss}
    if bw:
        link["bw_mbit"] = bw
    return parse_topology({
        "name": "pair", "subnet": "10.9.0.0/24",
        "switches": [{"name": "tp1"}],
        "hosts": [{"name": "tph1", "role": "client", "switch": "tp1", "link": link},
                  {"name": "tph2", "role": "edge", "switch": "tp1"}],
    }, "pair")


def test_globe_builds_and_every_client_reaches_every_edge(cdn_net) -> None:
    cn = cdn_net("globe")
    t = cn.topo
    clients = [h.name for h in t.hosts_with("client")]
    edges = [h.name for h in t.hosts_with("edge")]
    for c in clients:
        wait_until(lambda c=c: cn.reachable_from(c, edges) == set(edges), 30, 0.2,
                   what=f"{c} reaches every edge")


def test_rtt_matches_configured_path_delay(cdn_net, exact_timing) -> None:
    cn = cdn_net("globe")
    t = cn.topo
    for src, dst in [("c_na1", "e_na"), ("c_na1", "e_eu"), ("c_eu1", "e_as"), ("c_sa1", "e_as")]:
        expected = 2 * t.path_delay_ms(src, dst)
        cn.reachable_from(src, [dst])  # warm ARP / flows
        got = cn.ping_rtt_ms(src, cn.ip(dst), count=10, interval=0.05)
        assert got is not None, f"{src} -> {dst}: no answer"
        assert got >= expected - 0.5, f"{src}->{dst}: {got} ms, shorter than {expected} ms"  # TCG too
        if exact_timing:
            assert abs(got - expected) <= max(3.0, 0.05 * expected), f"{src}->{dst}: {got} ms vs {expected} ms"


def test_bandwidth_cap_is_honoured(cdn_net, exact_timing) -> None:
    cn = cdn_net(_two_host(delay_ms=5, bw=20))
    h1, h2 = cn.host("tph1"), cn.host("tph2")
    srv = h2.popen(["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "5201" in h2.cmd("ss -ltn"), 10, what="iperf3 listening")
        out = h1.cmd(f"iperf3 -c {cn.ip('tph2')} -p 5201 -t 4 -O 1 -J")
        res = json.loads(out[out.index("{"):])
        mbps = res["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.kill()
        srv.wait()
    assert mbps <= 20 * 1.05, f"{mbps:.1f} Mbit/s through a 20 Mbit/s link"  # never above the cap (TCG too)
    if exact_timing:  # TCG's emulated CPU may not fill the link
        assert 20 * 0.85 <= mbps, f"{mbps:.1f} Mbit/s through a 20 Mbit/s link"


def test_full_loss_drops_everything(cdn_net) -> None:
    cn = cdn_net(_two_host(delay_ms=1, loss=100))
    assert cn.ping_rtt_ms("tph1", cn.ip("tph2"), count=5) is None


@pytest.mark.vm
def test_link_down_and_up(cdn_net) -> None:
    cn = cdn_net("mini")
    wait_until(lambda: cn.reachable_from("c1", ["e2"]) == {"e2"}, 30, 0.2, what="c1 reaches e2")
    cn.net.configLinkStatus("s1", "s2", "down")
    assert cn.reachable_from("c1", ["e2", "e1"]) == {"e1"}
    cn.net.configLinkStatus("s1", "s2", "up")
    wait_until(lambda: cn.reachable_from("c1", ["e2"]) == {"e2"}, 30, 0.2, what="c1 reaches e2 again")
    # `cdnlab doctor` sees this running network's links from outside: the kernel's netem counters, or the
    # relays' own
    if cn.link_mode == "netem":
        runs = {r["run_id"]: r for r in netem_watch.running_netem()}
        seen = runs[cn.state.run_id]
        assert seen["directions"] >= 2 * len(cn.topo.links) and seen["frames"] > 0, seen
    else:
        runs = {r["run_id"]: r for r in relay_watch.running_relays()}
        assert runs[cn.state.run_id]["tx"] > 0, runs


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if os.path.exists(f"/proc/{p}") and "zombie" not in _status(p)}


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


@pytest.mark.vm
def test_normal_stop_leaves_nothing(cdn_net) -> None:
    before_br, before_links = _bridges(), _links()
    cn = cdn_net("mini")
    assert {"s1", "s2"} <= _bridges()
    pids = {t.pid for t in cn.state.pids}
    roles = {t.role.split()[0] for t in cn.state.pids}
    assert "host" in roles, roles  # host shells are tracked, and the relays when the links need them
    assert ("relay" in roles) == (cn.link_mode == "relay"), (roles, cn.link_mode)
    assert _alive(pids) == pids
    run_id = cn.state.run_id
    cn.stop()
    assert _bridges() == before_br
    wait_until(lambda: _links() <= before_links, 10, what="no new interfaces")
    wait_until(lambda: not _alive(pids), 10, what="no emulation processes")
    assert run_id not in {s.run_id for s in all_states()}


BUILD_AND_HANG = """
import sys, time
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import load_topology
from testbed.net.launch import start_services
cn = CdnNet(load_topology("mini"), BuildOptions()).start()
start_services(cn)  # service processes are recorded too, and must not outlive a SIGKILLed parent
print("READY", cn.state.run_id, flush=True)
time.sleep(600)
"""


def test_sigkill_then_clean_leaves_nothing() -> None:
    before_br, before_links = _bridges(), _links()
    p = subprocess.Popen([sys.executable, "-c", BUILD_AND_HANG], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY"), line
        assert {"s1", "s2"} <= _bridges()
        state = next(s for s in all_states() if s.run_id == line.split()[1])
        pids = {t.pid for t in state.pids}
        assert {"origin", "edge", "dns", "resolver", "redirector"} <= {t.role.split()[0] for t in state.pids}
        routes = {(r["dst"], r["metric"]) for r in state.routes}
        assert {d for d, _ in routes} == {"10.0.0.0/24"} and routes <= _guard_routes()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "clean"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "removed bridge s1" in r.stdout
    assert "removed guard route unreachable 10.0.0.0/24" in r.stdout
    assert not routes & _guard_routes()
    assert _bridges() == before_br
    wait_until(lambda: _links() <= before_links, 10, what="no interfaces left")
    wait_until(lambda: not _alive(pids), 10, what="no emulation processes left")
    assert not [s for s in all_states() if s.run_id == line.split()[1]]


def test_globe_topology_file_is_the_one_built(cdn_net) -> None:
    t = load_topology("globe")
    cn = cdn_net(t)
    assert {s.name for s in cn.net.switches} == {s.name for s in t.switches}
    assert {h.name for h in cn.net.hosts} == {h.name for h in t.hosts}
    for h in t.hosts:
        assert cn.host(h.name).IP() == cn.ip(h.name)

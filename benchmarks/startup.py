"""``cdnlab bench startup --json``: build, start and all-pairs-reachable time for a 100-host topology,
against bare Mininet building the same shape in the same run.

Shape: a chain of 10 switches with 10 hosts each, no link shaping. cdnlab builds it through its builder
(controller: Ryu where importable); bare Mininet uses OVS standalone learning switches on the same
datapath. Reachability: every host pings every other host with fping, all hosts at once.
Last line: one JSON object with keys ``hosts``, ``seconds``, ``bare_seconds``, ``ratio``.
Targets (issue #2): ratio <= 1.3; 100 hosts up in <= 30 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from testbed.net import host_env
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import parse_topology


def shape(n_switches: int, per_switch: int) -> dict:
    sw = [f"bs{i}" for i in range(1, n_switches + 1)]
    hosts = [{"name": f"bh{i}_{j}", "role": "client", "switch": s}
             for i, s in enumerate(sw, 1) for j in range(1, per_switch + 1)]
    links = [{"a": a, "b": b} for a, b in zip(sw, sw[1:], strict=False)]
    return {"name": "bench", "subnet": "10.77.0.0/16", "switches": [{"name": s} for s in sw],
            "hosts": hosts, "links": links}


def all_pairs(nodes_ips: list[tuple[object, str]], timeout: float = 120.0) -> None:
    """Poll until every host answers a ping from every other host.

    Each round, every host that still misses someone runs one ``fping`` over the addresses it still
    misses; the rounds run on all hosts at once (Mininet's sendCmd/waitOutput).
    """
    ips = [ip for _, ip in nodes_ips]
    todo = {id(n): set(ips) - {ip} for n, ip in nodes_ips}
    deadline = time.monotonic() + timeout
    while any(todo.values()):
        busy = [(n, ip) for n, ip in nodes_ips if todo[id(n)]]
        for n, _ in busy:
            targets = sorted(todo[id(n)])
            n.cmd(f"printf '%s\\n' {' '.join(targets)} > /tmp/cdnlab-fping-{n.name}")
            n.sendCmd(f"fping -a -q -r 1 -t 500 -f /tmp/cdnlab-fping-{n.name} 2>/dev/null; "
                      f"rm -f /tmp/cdnlab-fping-{n.name}")
        for n, _ in busy:
            alive = set(n.waitOutput().split())
            todo[id(n)] -= alive
        if any(todo.values()) and time.monotonic() > deadline:
            missing = sum(len(v) for v in todo.values())
            raise TimeoutError(f"{missing} host pairs still unreachable after {timeout:.0f}s")


def run_cdnlab(spec: dict, controller: str) -> tuple[float, str]:
    topo = parse_topology(spec, "bench")
    t0 = time.monotonic()
    with CdnNet(topo, BuildOptions(controller=controller)) as cn:
        all_pairs([(cn.host(h.name), cn.ip(h.name)) for h in topo.hosts])
        return time.monotonic() - t0, cn.controller_mode


def run_bare(spec: dict) -> float:
    from functools import partial

    from mininet.net import Mininet
    from mininet.node import OVSSwitch
    from mininet.topo import Topo

    topo = parse_topology(spec, "bench")
    addrs = topo.addresses()
    t = Topo()
    for i, s in enumerate(topo.switches, 1):
        t.addSwitch(s.name, dpid="%016x" % i)  # noqa: UP031
    for h in topo.hosts:
        t.addHost(h.name, ip=f"{addrs[h.name]}/16")
        t.addLink(h.name, h.switch)
    for ln in topo.links:
        t.addLink(ln.a, ln.b)
    dp = host_env.ovs_datapath()
    t0 = time.monotonic()
    net = Mininet(topo=t, switch=partial(OVSSwitch, datapath=dp, failMode="standalone"), controller=None)
    try:
        net.start()
        all_pairs([(net.get(h.name), addrs[h.name]) for h in topo.hosts])
        return time.monotonic() - t0
    finally:
        net.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench startup", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--switches", type=int, default=10)
    ap.add_argument("--hosts-per-switch", type=int, default=10)
    ap.add_argument("--controller", default="auto", choices=["auto", "ryu", "standalone"])
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("cdnlab bench startup: needs root")
        return 1
    from mininet.log import setLogLevel

    setLogLevel("warning")
    spec = shape(args.switches, args.hosts_per_switch)
    n = args.switches * args.hosts_per_switch
    bare = run_bare(spec)
    ours, mode = run_cdnlab(spec, args.controller)
    ratio = ours / bare
    print(f"{n} hosts, {args.switches} switches: cdnlab ({mode}) {ours:.1f} s, bare Mininet {bare:.1f} s, "
          f"ratio {ratio:.2f} (target <= 1.3; <= 30 s)")
    result = {"hosts": n, "seconds": round(ours, 2), "bare_seconds": round(bare, 2), "ratio": round(ratio, 3),
              "controller": mode}
    print(json.dumps(result))
    return 0

"""``cdnlab bench startup [--topo FILE] --json``: build any topology with every link shaped, time it to
all pairs reachable and count what it costs, against bare Mininet building the same network in the same run.

cdnlab builds the spec through its own builder (controller: Ryu where importable) with *every* link
emulated: links the spec leaves unshaped get ``--delay-ms`` (default 1 ms) so the link emulation is what
is measured. Bare Mininet builds the same hosts, switches and links as plain veth pairs, OVS standalone
learning switches on the same datapath, and gets the builder's platform settings: TX/GRO offloads off on
every interface and the socket-buffer sysctls the userspace datapath needs (``host_env``). Learning
switches cannot run a looped graph, so on a graph with cycles bare Mininet leaves out the switch links
outside one spanning tree (``bare_links`` says how many it built), and its hosts get static ARP entries
(cdnlab's controller answers ARP itself; flooding ARP through a large tree of learning switches does not
converge).

Reachability: every pair of hosts exchanges a ping (fping, all hosts at once, paced to ``--pps`` pings a
second in all, default 1000), until all pairs answered.
``rss_mb`` sums the resident memory of every process the run started (host shells and their children,
relay processes, the controller); Open vSwitch's daemons are shared and left out of both.

Runs alternate which of the two builds first. Without ``--topo`` the shape is a chain of 10 switches with
10 hosts each (100 hosts). Any failure of either build is an error (exit 1), never a figure.

Last line: one JSON object with ``hosts``, ``links``, ``seconds``, ``rss_mb``, ``relay_procs`` (medians over
the runs; cdnlab), ``servers`` (how many servers cdnlab's network spans: ``--servers A,B``), ``bare_seconds``, ``bare_rss_mb``, ``bare_links``, ``ratio`` (of the medians),
``ratios`` (per run), ``runs``, ``controller`` and ``targets_met``.
Targets (issue #11): 100 hosts in <= 30 s and <= 1.3x bare Mininet, in 5 runs of 5; a 197-PoP graph up in
<= 180 s with <= 4 GiB for all its processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from testbed.measure.proctree import children, descendants, vm_rss_kb
from testbed.net import host_env
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import Topology, load_topology, parse_topology
from testbed.net.up import servers_arg

TARGET_SECONDS_100 = 30.0
TARGET_RATIO = 1.3


def chain(n_switches: int, per_switch: int) -> dict:
    """A chain of switches with hosts on each (the default shape)."""
    sw = [f"bs{i}" for i in range(1, n_switches + 1)]
    hosts = [{"name": f"bh{i}_{j}", "role": "client", "switch": s}
             for i, s in enumerate(sw, 1) for j in range(1, per_switch + 1)]
    links = [{"a": a, "b": b} for a, b in zip(sw, sw[1:], strict=False)]
    return {"name": "bench", "subnet": "10.77.0.0/16", "switches": [{"name": s} for s in sw],
            "hosts": hosts, "links": links}


def shape_every_link(topo: Topology, delay_ms: float) -> Topology:
    """The topology with ``delay_ms`` on every link (host links included) that has no delay or loss."""

    def shaped(p):
        if p.delay_ms or p.delay_ms_ba or p.loss_pct:
            return p
        return p.model_copy(update={"delay_ms": delay_ms})

    hosts = [h.model_copy(update={"link": shaped(h.link)}) for h in topo.hosts]
    links = [shaped(ln) for ln in topo.links]
    return topo.model_copy(update={"hosts": hosts, "links": links})


def pair_targets(ips: list[str], i: int) -> list[str]:
    """The addresses host ``i`` pings: the next ``n // 2`` around the list. Every pair is covered once
    (twice, from both ends, for the pairs half-way round when ``n`` is even)."""
    n = len(ips)
    return [ips[(i + k) % n] for k in range(1, n // 2 + 1)]


def targets_for(topo: Topology, addrs: dict[str, str], pairs: str) -> dict[str, set[str]]:
    """Who must reach whom: ``all`` (every pair, each from one end: :func:`pair_targets`) or
    ``clients-edges`` (every client reaches every edge cache)."""
    names = [h.name for h in topo.hosts]
    if pairs == "all":
        ips = [addrs[n] for n in names]
        return {n: set(pair_targets(ips, i)) for i, n in enumerate(names)}
    if pairs == "clients-edges":
        edges = {addrs[h.name] for h in topo.hosts_with("edge")}
        if not edges:
            raise ValueError(f"topology {topo.name} has no edge caches to reach")
        return {h.name: set(edges) for h in topo.hosts_with("client")}
    raise ValueError(f"pairs must be all or clients-edges, not {pairs!r}")


def ping_timeout_ms(topo: Topology, targets: dict[str, set[str]], addrs: dict[str, str]) -> int:
    """fping's per-ping timeout: twice the longest path RTT among the pairs plus a second, at least 500 ms
    (an imported graph's paths run to hundreds of ms, and each emulated hop adds its own latency)."""
    import networkx as nx

    g = topo.graph()
    name_of = {ip: n for n, ip in addrs.items()}
    worst = 0.0
    for src, ips in targets.items():
        dist = nx.single_source_dijkstra_path_length(g, src, weight="delay_ms")
        worst = max([worst, *(2 * dist.get(name_of[ip], 0.0) for ip in ips)])
    return max(500, round(2 * worst + 1000))


def all_pairs(nodes: dict[str, Any], targets: dict[str, set[str]], timeout: float = 180.0,
              pps: float = 1000.0, ping_timeout: int = 500) -> None:
    """Poll until every host of ``targets`` has had a ping answered by each of its targets (a reply proves
    both directions work).

    Each round, every host that still misses someone runs one ``fping`` over the addresses it still
    misses, all hosts at once (Mininet's sendCmd/waitOutput), paced so that together they offer about
    ``pps`` pings a second. Unpaced, 100 hosts offer 10,000 a second: more than a 2-core machine can
    switch, so queues grow to seconds and the check measures the overload instead of the network.
    """
    todo = {name: set(ips) for name, ips in targets.items() if ips}
    interval_ms = max(1, round(1000 * len(todo) / pps))
    deadline = time.monotonic() + timeout
    while any(todo.values()):
        busy = [name for name, ips in todo.items() if ips]
        for name in busy:
            n = nodes[name]
            n.cmd(f"printf '%s\\n' {' '.join(sorted(todo[name]))} > /tmp/cdnlab-fping-{n.name}")
            n.sendCmd(f"fping -a -q -r 1 -t {ping_timeout} -i {interval_ms} -f /tmp/cdnlab-fping-{n.name} 2>/dev/null; "
                      f"rm -f /tmp/cdnlab-fping-{n.name}")
        for name in busy:
            todo[name] -= set(nodes[name].waitOutput().split())
        if any(todo.values()) and time.monotonic() > deadline:
            missing = sum(len(v) for v in todo.values())
            raise TimeoutError(f"{missing} host pairs still unreachable after {timeout:.0f}s")


def rss_mb(roots: list[int]) -> float:
    """Resident memory of ``roots`` and all their descendants, in MiB (each process counted once)."""
    total_kb = 0
    for pid in descendants(roots, children()):
        try:
            total_kb += vm_rss_kb(Path(f"/proc/{pid}/status").read_text())
        except OSError:  # gone since the listing
            pass
    return round(total_kb / 1024, 1)


def run_cdnlab(topo: Topology, controller: str, timeout: float, pps: float, pairs: str,
               servers: tuple[str, ...] = ()) -> dict[str, Any]:
    from testbed.net.links import relay_pids

    t0 = time.monotonic()
    with CdnNet(topo, BuildOptions(controller=controller, links="auto", connect_timeout=timeout,
                                   servers=servers)) as cn:
        built = time.monotonic() - t0
        targets = targets_for(topo, cn.addresses, pairs)
        all_pairs({h.name: cn.host(h.name) for h in topo.hosts}, targets, timeout, pps,
                  ping_timeout_ms(topo, targets, cn.addresses))
        seconds = time.monotonic() - t0
        relays = relay_pids(cn.net)
        roots = [n.pid for n in cn.net.hosts if not getattr(n, "isRemote", False)] + relays
        if cn.controller_proc is not None:
            roots.append(cn.controller_proc.pid)
        return {"seconds": seconds, "build_seconds": built, "rss_mb": rss_mb(roots), "relay_procs": len(relays),
                "links": len(cn.net.links), "controller": cn.controller_mode, "link_mode": cn.link_mode,
                "servers": len(servers) or 1}


def spanning_switch_links(topo: Topology) -> list:
    """The switch links of one spanning forest of the switch graph (learning switches cannot run loops)."""
    import networkx as nx

    g = nx.MultiGraph()
    g.add_nodes_from(s.name for s in topo.switches)
    for i, ln in enumerate(topo.links):
        g.add_edge(ln.a, ln.b, key=i)
    keep = {k for _a, _b, k in nx.minimum_spanning_edges(g, algorithm="kruskal", keys=True, data=False)}
    return [ln for i, ln in enumerate(topo.links) if i in keep]


def run_bare(topo: Topology, timeout: float, pps: float, pairs: str) -> dict[str, Any]:
    """Bare Mininet: same nodes and links (a spanning tree of the switch links), the builder's settings."""
    from mininet.net import Mininet
    from mininet.node import OVSSwitch
    from mininet.topo import Topo

    addrs = topo.addresses()
    plen = topo.subnet.split("/")[1]
    t = Topo()
    for i, s in enumerate(topo.switches, 1):
        t.addSwitch(s.name, dpid="%016x" % i)  # noqa: UP031
    for h in topo.hosts:
        t.addHost(h.name, ip=f"{addrs[h.name]}/{plen}")
        t.addLink(h.name, h.switch)
    tree = spanning_switch_links(topo)
    for ln in tree:
        t.addLink(ln.a, ln.b)
    dp = host_env.ovs_datapath()
    saved = {}
    if dp == "user":  # the builder's platform settings: the userspace datapath drops on small buffers
        for k, v in host_env.USERSPACE_SYSCTLS.items():
            saved[k] = host_env.read_sysctl(k)
            if int(saved[k]) < v:
                host_env.write_sysctl(k, v)
    t0 = time.monotonic()
    # static ARP (Mininet's autoStaticArp), as cdnlab's controller answers ARP itself: without it, every
    # host's ARP requests flood the whole tree of learning switches (a 197-switch graph never converged)
    net = Mininet(topo=t, switch=partial(OVSSwitch, datapath=dp, failMode="standalone"), controller=None,
                  build=False, autoStaticArp=True)
    try:
        net.build()
        host_env.offloads_off_network(net)  # as the builder does
        net.start()
        built = time.monotonic() - t0
        targets = targets_for(topo, addrs, pairs)
        all_pairs({h.name: net.get(h.name) for h in topo.hosts}, targets, timeout, pps,
                  ping_timeout_ms(topo, targets, addrs))
        seconds = time.monotonic() - t0
        return {"seconds": seconds, "build_seconds": built, "rss_mb": rss_mb([n.pid for n in net.hosts]),
                "links": len(net.links)}
    finally:
        net.stop()
        for k, v in saved.items():
            host_env.write_sysctl(k, v)


def summarize(topo: Topology, ours: list[dict], bare: list[dict], pairs: str = "all") -> dict[str, Any]:
    """The JSON result (pure): medians, per-run ratios and whether the targets were met."""
    med = statistics.median
    seconds = med(r["seconds"] for r in ours)
    out: dict[str, Any] = {
        "topo": topo.name, "hosts": len(topo.hosts), "links": ours[0]["links"],
        "seconds": round(seconds, 2), "rss_mb": round(med(r["rss_mb"] for r in ours), 1),
        "relay_procs": ours[0]["relay_procs"], "controller": ours[0]["controller"],
        "link_mode": ours[0]["link_mode"], "runs": len(ours), "pairs": pairs,
        "servers": ours[0].get("servers", 1),
        "seconds_runs": [round(r["seconds"], 2) for r in ours],
        "build_seconds": round(med(r["build_seconds"] for r in ours), 2),
    }
    if bare:
        bare_s = med(r["seconds"] for r in bare)
        ratios = [round(o["seconds"] / b["seconds"], 3) for o, b in zip(ours, bare, strict=True)]
        out.update(bare_seconds=round(bare_s, 2), bare_rss_mb=round(med(r["rss_mb"] for r in bare), 1),
                   bare_links=bare[0]["links"], ratio=round(seconds / bare_s, 3), ratios=ratios,
                   bare_seconds_runs=[round(r["seconds"], 2) for r in bare],
                   bare_build_seconds=round(med(r["build_seconds"] for r in bare), 2))
    met: dict[str, bool] = {}
    if len(topo.hosts) <= 100:
        met["seconds_le_30_every_run"] = all(r["seconds"] <= TARGET_SECONDS_100 for r in ours)
        if bare:
            met["ratio_le_1.3_every_run"] = all(x <= TARGET_RATIO for x in out["ratios"])
    else:
        met["seconds_le_180_every_run"] = all(r["seconds"] <= 180.0 for r in ours)
        met["rss_le_4GiB_every_run"] = all(r["rss_mb"] <= 4096 for r in ours)
    out["targets_met"] = met
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench startup", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    ap.add_argument("--topo", help="topology name or YAML file (default: a chain of switches with hosts)")
    ap.add_argument("--switches", type=int, default=10, help="default shape: switches in the chain")
    ap.add_argument("--hosts-per-switch", type=int, default=10, help="default shape: hosts per switch")
    ap.add_argument("--delay-ms", type=float, default=1.0, help="delay given to links the spec leaves unshaped")
    ap.add_argument("--runs", type=int, default=5, help="runs of each build, order alternated (default 5)")
    ap.add_argument("--no-baseline", action="store_true", help="skip bare Mininet (no ratio)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to all pairs reachable, per build")
    ap.add_argument("--pairs", choices=["all", "clients-edges"], default="all",
                    help="who must reach whom before the clock stops (default: every pair of hosts)")
    ap.add_argument("--pps", type=float, default=1000.0, help="pings a second all hosts offer together")
    ap.add_argument("--controller", default="auto", choices=["auto", "ryu", "standalone"])
    ap.add_argument("--servers", metavar="A,B,...", type=servers_arg, default=(),
                    help="build cdnlab's network across these servers (the first is this machine; bare Mininet "
                    "stays on this machine); rss_mb counts this machine's processes only")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("cdnlab bench startup: needs root")
        return 1
    if args.runs < 1 or args.delay_ms <= 0 or args.pps <= 0:
        ap.error("--runs must be >= 1, --delay-ms and --pps > 0")
    from mininet.log import setLogLevel

    setLogLevel("warning")
    if args.topo:
        topo = load_topology(args.topo)
    else:
        topo = parse_topology(chain(args.switches, args.hosts_per_switch), "bench")
    topo = shape_every_link(topo, args.delay_ms)
    ours: list[dict] = []
    bare: list[dict] = []
    for i in range(args.runs):
        order = ["bare", "cdnlab"] if i % 2 == 0 else ["cdnlab", "bare"]
        for which in order:
            if which == "bare" and args.no_baseline:
                continue
            try:
                if which == "bare":
                    r = run_bare(topo, args.timeout, args.pps, args.pairs)
                else:
                    r = run_cdnlab(topo, args.controller, args.timeout, args.pps, args.pairs, args.servers)
            except Exception as e:  # a failed build is an error of the benchmark, never a figure
                print(f"cdnlab bench startup: run {i + 1}, {which} failed: {type(e).__name__}: {e}")
                return 1
            (bare if which == "bare" else ours).append(r)
            print(f"run {i + 1} {which:6s}: {r['seconds']:6.1f} s (built in {r['build_seconds']:.1f} s), "
                  f"{r['rss_mb']:7.1f} MiB, {r['links']} links"
                  + (f", {r['relay_procs']} relay processes" if which == "cdnlab" else ""), flush=True)
    result = summarize(topo, ours, bare, args.pairs)
    line = (f"{result['hosts']} hosts, {result['links']} shaped links: cdnlab {result['seconds']:.1f} s, "
            f"{result['rss_mb']:.0f} MiB, {result['relay_procs']} relay processes")
    if bare:
        line += (f"; bare Mininet {result['bare_seconds']:.1f} s ({result['bare_links']} links), "
                 f"ratio {result['ratio']:.2f} (per run {result['ratios']})")
    print(line)
    print(json.dumps(result))
    return 0

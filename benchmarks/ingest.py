"""``cdnlab bench ingest``: content ingest to K edges by multicast vs by K unicast copies.

Builds, with plain iproute2 (no controller), one network namespace for the origin and one per edge,
each joined by a veth pair to a Linux bridge that lives in a switch namespace of its own (names
``cdnh4-<run>-*``; all removed at the end, also on error). Optionally the origin's uplink is shaped to
``--uplink-mbit`` with ``tc tbf`` (a CDN origin's egress is the bottleneck multicast relieves).

The same object set is then replicated to the K edges twice:

* **multicast**: one :class:`~testbed.services.mcast.sender.IngestSender` in the origin namespace, K
  ``testbed.services.mcast.receiver_service`` services (NACK repair on); done when every receiver delivered every
  object (digest-checked);
* **unicast**: the origin opens one TCP connection per edge and sends every object over each; done when
  every edge acknowledged.

Measured per mode: origin egress bytes (tx of the origin's veth), bytes over all links (tx of both ends of
every veth pair, read from ``/sys/class/net/*/statistics``), completion time. Last line: JSON with
``origin_bytes_ratio``, ``link_bytes_ratio``, ``time_ratio`` (multicast / unicast), ``edges``.

``--emulated`` runs the same comparison through the real CDN over the SDN controller's multicast trees:
a Mininet network (a two-level tree of OVS switches named ``bi_*``, origin at the root, K edges at the
leaves, the static group origin -> edges), services started with ``CdnOptions(multicast=True)``:

* **multicast**: ``POST /_origin/push`` of N objects; done when every edge's ``/_cdn/stats`` ingest block
  counts them (each then serves them as cache hits);
* **unicast**: every edge pulls N other objects of the same size through itself (``GET`` on its own
  address: a miss fetched from the origin over HTTP), all edges at once; done when every pull finished.

Bytes come from the switch ports' OpenFlow counters (``ovs-ofctl dump-ports``): origin egress is what the
origin's switch port received from it; link bytes are the bytes every switch port transmitted plus what the
host-facing ports received (each link counted once per direction). Stats are read and pushes sent from
inside the hosts themselves, so no measurement traffic crosses a link.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from testbed.measure import link_bytes
from testbed.measure.replication import DRIVER, GROUP, MPORT, TPORT, UNICAST_SINK

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
SUBNET = "10.77.0"

def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=20)


class Topo:
    """origin + K edges, each on a veth to a bridge in a switch namespace; everything named cdnh4-<run>-*."""

    def __init__(self, k: int) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.k = k
        self.sw = f"cdnh4-{self.run}-sw"
        self.nodes = [f"cdnh4-{self.run}-o"] + [f"cdnh4-{self.run}-e{i}" for i in range(k)]
        self.addrs = [f"{SUBNET}.1"] + [f"{SUBNET}.{10 + i}" for i in range(k)]
        self.created: list[str] = []
        # (namespace, interface) of both ends of each link, origin's link first
        self.links: list[tuple[tuple[str, str], tuple[str, str]]] = []

    def build(self, uplink_mbit: float) -> str:
        sh("ip", "netns", "add", self.sw)
        self.created.append(self.sw)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(self.nodes, self.addrs, strict=True)):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            a, b = f"c4n{self.run}{i}", f"c4s{self.run}{i}"
            sh("ip", "link", "add", a, "netns", ns, "type", "veth", "peer", "name", b, "netns", self.sw)
            sh("ip", "-n", self.sw, "link", "set", b, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", a)
            sh("ip", "-n", ns, "link", "set", a, "up")
            sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", a)
            self.links.append(((ns, a), (self.sw, b)))
        shaping = "none"
        if uplink_mbit > 0:
            ns, dev = self.links[0][0]
            r = sh(
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                "rate", f"{uplink_mbit}mbit", "burst", "64kb", "latency", "100ms", check=False,
            )  # fmt: skip
            shaping = (
                f"tbf {uplink_mbit} Mbit/s" if r.returncode == 0 else f"none (tc failed: {r.stderr.strip()})"
            )
        return shaping

    def tx_bytes(self) -> list[int]:
        """tx bytes of both ends of every link, origin's link first: [o_node, o_switch, e0_node, ...]."""
        out = []
        for end in (e for link in self.links for e in link):
            ns, dev = end
            out.append(link_bytes.read_counter(dev, "tx_bytes", netns=ns))
        return out

    def destroy(self) -> None:
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created.clear()


def summary(results: dict[str, dict[str, Any]], k: int, **extra: Any) -> dict[str, Any]:
    """The benchmark's JSON line: multicast / unicast ratios (the public keys) plus ``extra``."""
    m, u = results["multicast"], results["unicast"]
    return {
        "origin_bytes_ratio": round(m["origin_bytes"] / max(1, u["origin_bytes"]), 4),
        "link_bytes_ratio": round(m["link_bytes"] / max(1, u["link_bytes"]), 4),
        "time_ratio": round(m["time_s"] / max(1e-9, u["time_s"]), 4),
        "edges": k,
        "complete": bool(m["complete"] and u["complete"]),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench ingest", description=__doc__.split("\n")[0])
    ap.add_argument("--edges", type=int, default=4)
    ap.add_argument("--objects", type=int, default=40)
    ap.add_argument("--size-kb", type=int, default=64, help="size of each object")
    ap.add_argument(
        "--uplink-mbit", type=float, default=100.0, help="shape the origin uplink (0: no shaping)"
    )
    ap.add_argument("--rate-mbit", type=float, default=90.0, help="multicast sender pacing")
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    ap.add_argument(
        "--emulated", action="store_true", help="run over the controller's multicast trees in Mininet"
    )
    args = ap.parse_args(argv)
    if args.emulated:
        return emulated(args)
    if os.geteuid() != 0:
        print("cdnlab bench ingest: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not shutil.which("ip"):
        print("cdnlab bench ingest: needs iproute2", file=sys.stderr)
        return 2
    k = max(1, min(args.edges, 16))
    n = max(1, min(args.objects, 500))
    tmp = Path(tempfile.mkdtemp(prefix="cdnlab-ingest-"))
    objdir = tmp / "objects"
    objdir.mkdir()
    rng = random.Random(1)
    for i in range(n):
        (objdir / f"obj{i:04d}.bin").write_bytes(rng.randbytes(args.size_kb * 1024))
    topo = Topo(k)
    procs: list[subprocess.Popen] = []

    def spawn(ns: str, *cmd: str, log: Path) -> subprocess.Popen:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, PY, *cmd], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        procs.append(p)
        return p

    try:
        shaping = topo.build(args.uplink_mbit)
        edges = topo.addrs[1:]
        for i in range(k):
            cfg = tmp / f"rx{i}.cfg.json"
            grp = {"group": GROUP, "port": MPORT, "iface_addr": edges[i], "ttl": 1, "loop": False}
            cfg.write_text(
                json.dumps(
                    {
                        "name": f"rx{i}",
                        "session_id": 9,
                        "group": grp,
                        "store_dir": str(tmp / f"mstore{i}"),
                        "stats_file": str(tmp / f"rx{i}.json"),
                        "log_file": str(tmp / f"rx{i}.log"),
                    }
                )
            )
            spawn(
                topo.nodes[1 + i],
                "-m",
                "testbed.services.mcast.receiver_service",
                "--config",
                str(cfg),
                log=tmp / f"rx{i}.out",
            )
            spawn(
                topo.nodes[1 + i],
                "-c",
                UNICAST_SINK,
                edges[i],
                str(TPORT),
                str(tmp / f"ustore{i}"),
                log=tmp / f"us{i}.out",
            )
        deadline = time.monotonic() + 20
        while not all(
            (tmp / f"rx{i}.json").exists() and (tmp / f"ustore{i}" / ".ready").exists() for i in range(k)
        ):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"edge services did not start (logs in {tmp})")
            time.sleep(0.05)
        results = {}
        for mode in ("multicast", "unicast"):
            before = topo.tx_bytes()
            r = sh(
                "ip", "netns", "exec", topo.nodes[0], PY, "-c", DRIVER, mode, str(objdir), ",".join(edges), str(tmp),
                str(args.rate_mbit), GROUP, str(MPORT), topo.addrs[0], str(TPORT), check=False,
            )  # fmt: skip
            if r.returncode != 0:
                raise RuntimeError(f"{mode} driver failed: {r.stderr[-2000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            after = topo.tx_bytes()
            d = [b - a for a, b in zip(before, after, strict=True)]
            res["origin_bytes"] = d[0]
            res["link_bytes"] = sum(d)
            results[mode] = res
        total = n * args.size_kb * 1024
        print(
            f"ingest of {n} objects x {args.size_kb} KiB ({total / 1e6:.1f} MB) to {k} edges; origin uplink shaping: {shaping}"
        )
        for mode, res in results.items():
            extra = (
                f", first pass sent in {res['sent_s'] * 1000:.0f} ms, {res['repairs']} repairs for {res['nacks']} NACKs"
                if mode == "multicast"
                else ""
            )
            print(
                f"  {mode:<9} time {res['time_s'] * 1000:8.1f} ms  origin egress {res['origin_bytes'] / 1e6:7.2f} MB"
                f"  all links {res['link_bytes'] / 1e6:7.2f} MB  complete={res['complete']}{extra}"
            )
        out = summary(results, k, shaping=shaping)
        print(json.dumps(out))
        return 0 if out["complete"] else 1
    finally:
        from testbed.util import stop_process

        for p in procs:  # all told first, so they stop side by side
            if p.poll() is None:
                p.terminate()
        for p in procs:
            stop_process(p)
        topo.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- --emulated


def emulated_topology(k: int) -> dict:
    """Origin at the root switch, two aggregation switches, four access switches; edge i on access i % 4."""
    sw = ["bi_r", "bi_a1", "bi_a2", "bi_x1", "bi_x2", "bi_x3", "bi_x4"]
    links = [("bi_r", "bi_a1"), ("bi_r", "bi_a2"), ("bi_a1", "bi_x1"), ("bi_a1", "bi_x2"),
             ("bi_a2", "bi_x3"), ("bi_a2", "bi_x4")]  # fmt: skip
    edges = [f"be{i}" for i in range(k)]
    hosts = [{"name": "borigin", "role": "origin", "switch": "bi_r"},
             {"name": "bclient", "role": "client", "switch": "bi_r"}]  # fmt: skip
    hosts += [{"name": e, "role": "edge", "switch": f"bi_x{i % 4 + 1}"} for i, e in enumerate(edges)]
    return {
        "name": "bench-ingest",
        "description": "cdnlab bench ingest --emulated",
        "subnet": "10.78.0.0/24",
        "switches": [{"name": s} for s in sw],
        "links": [{"a": a, "b": b} for a, b in links],
        "hosts": hosts,
        "multicast": [{"group": "239.10.0.1", "source": "borigin", "members": edges}],
    }


def port_counters(cn) -> dict[str, dict[str, tuple[int, int]]]:
    """switch -> interface name -> (rx_bytes, tx_bytes) from OpenFlow port stats."""
    import re

    out: dict[str, dict[str, tuple[int, int]]] = {}
    for s in cn.net.switches:
        names = {str(p): i.name for i, p in s.ports.items() if i.name != "lo"}
        r = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-ports", s.name)
        cur: dict[str, tuple[int, int]] = {}
        port = None
        rx = 0
        for line in r.stdout.splitlines():
            m = re.match(r"\s*port\s+\"?(\w+)\"?:\s*rx pkts=\d+, bytes=(\d+)", line)
            if m:
                port, rx = m.group(1), int(m.group(2))
                continue
            m = re.match(r"\s*tx pkts=\d+, bytes=(\d+)", line)
            if m and port is not None and port in names:
                cur[names[port]] = (rx, int(m.group(1)))
                port = None
        out[s.name] = cur
    return out


def emulated(args: argparse.Namespace) -> int:
    from testbed.net.build import BuildOptions, CdnNet
    from testbed.net.launch import HTTP_PORT, CdnOptions, CdnServices
    from testbed.net.spec import parse_topology
    from testbed.util import wait_until

    if os.geteuid() != 0:
        print("cdnlab bench ingest --emulated: needs root (Mininet)", file=sys.stderr)
        return 2
    k = max(1, min(args.edges, 8))
    n = max(1, min(args.objects, 200))
    size = args.size_kb * 1024
    topo = parse_topology(emulated_topology(k), "bench-ingest")
    catalog = {
        "objects": 2 * n,
        "size_distribution": "fixed",
        "fixed_bytes": size,
        "class_weights": {"image": 1},
    }
    opts = CdnOptions(multicast=True, roles=("origin", "edge"), catalog=catalog, heartbeat_interval=30.0,
                      mcast_rate_mbps=args.rate_mbit)  # fmt: skip
    with CdnNet(topo, BuildOptions()) as cn:
        svc = CdnServices(cn, opts).start()
        origin = svc.origin
        assert origin is not None
        paths = json.loads(cn.host(origin).cmd(f"curl -s http://{cn.ip(origin)}:{HTTP_PORT}/_origin/catalog"))
        allp = [o["path"] for o in paths["objects"]]
        uni, multi = allp[:n], allp[n:]
        host_ports = {}  # switch-side interface of every host's access link
        for h in topo.hosts:
            node, s = cn.host(h.name), cn.net.get(h.switch)
            host_ports[h.name] = node.connectionsTo(s)[0][1].name

        def measure(run) -> dict:
            before = port_counters(cn)
            t0 = time.monotonic()
            extra = run()
            dt = time.monotonic() - t0
            after = port_counters(cn)
            link = origin_b = 0
            hp = set(host_ports.values())
            for s, ports in after.items():
                for ifn, (rx, tx) in ports.items():
                    brx, btx = before[s].get(ifn, (0, 0))
                    link += tx - btx + (rx - brx if ifn in hp else 0)
                    if ifn == host_ports[origin]:
                        origin_b = rx - brx
            return {"time_s": dt, "origin_bytes": origin_b, "link_bytes": link, **extra}

        def received(e: str) -> int:
            try:
                return int(svc.service_stats(e)["ingest"]["objects_received"])
            except (RuntimeError, KeyError, TypeError, ValueError):
                return -1

        def multicast() -> dict:
            res = svc.push(multi, via=origin)
            ok = True
            try:
                wait_until(
                    lambda: all(received(e) >= n for e in svc.edges), 120, 0.05, what="multicast ingest"
                )
            except Exception:  # noqa: BLE001 - reported as incomplete
                ok = False
            ost = svc.service_stats(origin)
            ing = ost["ingest"]
            return {"complete": ok and len(res["pushed"]) == n, "repairs": ing["repair_packets"],
                    "nacks": ing["nacks_received"]}  # fmt: skip

        def unicast() -> dict:
            procs = []
            for e in svc.edges:
                cfgf = cn.run_dir / f"pull-{e}.curl"
                cfgf.write_text("".join(f'url = "http://{cn.ip(e)}:{HTTP_PORT}{p}"\noutput = "/dev/null"\n'
                                        for p in uni))  # fmt: skip
                procs.append(cn.popen(e, ["curl", "-s", "-f", "-K", str(cfgf)], f"pull-{e}"))
            ok = all(p.wait(120) == 0 for p in procs)
            misses = 0
            for e in svc.edges:
                st = svc.service_stats(e)
                misses += st["fetches"].get("origin", 0)
            return {"complete": ok and misses == n * k}

        results = {"multicast": measure(multicast), "unicast": measure(unicast)}
    total = n * size
    print(f"emulated ingest of {n} objects x {args.size_kb} KiB ({total / 1e6:.1f} MB) to {k} edges over the "
          f"controller's multicast tree (Mininet, {cn.link_mode} links, {cn.controller_mode} controller)")  # fmt: skip
    for mode, res in results.items():
        extra = f", {res['repairs']} repairs for {res['nacks']} NACKs" if mode == "multicast" else ""
        print(
            f"  {mode:<9} time {res['time_s'] * 1000:8.1f} ms  origin egress {res['origin_bytes'] / 1e6:7.2f} MB"
            f"  all links {res['link_bytes'] / 1e6:7.2f} MB  complete={res['complete']}{extra}"
        )
    out = summary(results, k, mode="emulated")
    print(json.dumps(out))
    return 0 if out["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())

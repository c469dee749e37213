"""Ingestion by multicast vs unicast as the number of edges grows: bytes on links against receivers.

The seeds' CDN overview: CDNs use multicast for content ingestion "without the need for individual
unicast streams from the origin server to each edge node". Here the origin of topology ``multicast`` (a
three-level binary tree of switches, eight edges at the leaves, every origin->edge path four links long)
replicates the same object set to K edges twice, for each K in ``edges``:

* **multicast**: the NACK-based reliable multicast sender of :mod:`testbed.services.mcast` (the driver
  script of ``benchmarks/ingest.py``) sends one stream to an IGMP-joined group; the K edges run
  ``testbed.services.mcast.receiver_service``; the Ryu controller builds the shortest-path tree from the
  IGMP joins (:mod:`controller.multicast`); done when every receiver delivered every object (digests);
* **unicast**: the origin opens one TCP connection per edge and sends every object over each.

The K receivers are spread over the tree (each next edge the one adding most links to the tree so far),
the case a CDN's geographically spread edges are in. Measured per mode from the byte counters of every
link (``/sys/class/net/<switch port>/statistics``: both directions of every switch-switch link, and the
switch side of every host link): total bytes over all links, and the origin's egress (bytes its switch
port received from it).

Chuang & Sirbu (INET 1998) found that a multicast tree to m receivers has L(m) ~ u m^0.8 links, u being
the mean unicast path length. Measured: L/u = (multicast link bytes / multicast origin bytes) /
(unicast link bytes / unicast origin bytes) (link copies per origin byte, normalised by the unicast path
length), and the exponent k of L/u = m^k fitted by least squares on log-log through the origin.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import Field

from experiments.common import emulate
from experiments.framework import ExperimentParams, Run, md_table, plt, read_results, write_report
from testbed.measure import link_bytes
from testbed.measure.replication import DRIVER, MPORT, TPORT, UNICAST_SINK
from testbed.net.spec import Role, Topology
from testbed.util import stop_process, wait_until


class Params(ExperimentParams):
    """``specs/multicast.yaml`` params."""

    edges: list[int] = Field(min_length=1)
    objects: int = Field(gt=0)
    object_kb: int = Field(gt=0)
    rate_mbit: int = Field(ge=0)
    timeout_s: int = Field(gt=0)


ROOT = Path(__file__).resolve().parents[1]
CHUANG_SIRBU = 0.8


def spread_order(topo: Topology, origin: str, edges: list[str]) -> list[str]:
    """Edges in the order that grows the origin's tree fastest: each next edge adds the most new links."""
    g = topo.graph()
    paths = {e: nx.shortest_path(g, origin, e) for e in edges}
    tree: set[frozenset[str]] = set()
    order: list[str] = []
    left = sorted(edges)
    while left:

        def added(e: str, tree: set[frozenset[str]] = tree) -> int:
            p = paths[e]
            return sum(1 for a, b in zip(p, p[1:], strict=False) if frozenset((a, b)) not in tree)

        best = max(left, key=lambda e: (added(e), -left.index(e)))
        p = paths[best]
        tree |= {frozenset((a, b)) for a, b in zip(p, p[1:], strict=False)}
        order.append(best)
        left.remove(best)
    return order


def tree_links(topo: Topology, origin: str, members: list[str]) -> int:
    """Links of the union of the shortest paths from origin to members (the multicast tree)."""
    g = topo.graph()
    links = set()
    for m in members:
        p = nx.shortest_path(g, origin, m)
        links |= {frozenset((a, b)) for a, b in zip(p, p[1:], strict=False)}
    return len(links)


def fit_exponent(ms: list[float], ratios: list[float]) -> float | None:
    """k of ratio = m^k by least squares on (ln m, ln ratio) through the origin."""
    pts = [(math.log(m), math.log(r)) for m, r in zip(ms, ratios, strict=True) if m > 1 and r > 0]
    if not pts:
        return None
    return sum(x * y for x, y in pts) / sum(x * x for x, _ in pts)


class LinkBytes:
    """Byte counters of every link of a built network, read from the switch-side interfaces (root ns)."""

    def __init__(self, cn: Any) -> None:
        self.ports: list[tuple[str, str, tuple[str, ...]]] = []  # (link, interface, counters)
        topo = cn.topo
        for ln in topo.links:
            ia, ib = cn.node(ln.a).connectionsTo(cn.node(ln.b))[0]
            self.ports += [
                (f"{ln.a}-{ln.b}", ia.name, ("tx_bytes",)),
                (f"{ln.a}-{ln.b}", ib.name, ("tx_bytes",)),
            ]
        for h in topo.hosts:
            _, isw = cn.node(h.name).connectionsTo(cn.node(h.switch))[0]
            self.ports.append((f"{h.name}-{h.switch}", isw.name, ("tx_bytes", "rx_bytes")))
        origin = next(h for h in topo.hosts if h.role == Role.origin)
        self.origin_port = cn.node(origin.name).connectionsTo(cn.node(origin.switch))[0][1].name

    @staticmethod
    def _read(intf: str, counter: str) -> int:
        return link_bytes.read_counter(intf, counter)

    def snapshot(self) -> dict[str, int]:
        snap = {"origin": self._read(self.origin_port, "rx_bytes")}
        for link, intf, counters in self.ports:
            snap[link] = snap.get(link, 0) + sum(self._read(intf, c) for c in counters)
        return snap


def _objects(d: Path, n: int, size_kb: int, seed: int) -> int:
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        (d / f"obj{i:04d}.bin").write_bytes(rng.randbytes(size_kb * 1024))
    return n * size_kb * 1024


def _stop(cn: Any, keys: list[str]) -> None:
    for k in keys:
        p = cn.procs.pop(k, None)
        if p is None:
            continue
        stop_process(p)
        if cn.state is not None:
            cn.state.forget_pid(p.pid)


def _members(cn: Any, group: str) -> set[str]:
    try:
        g = cn.rest("/multicast").get("groups", {}).get(group, {})
    except OSError:
        return set()
    return set(g.get("igmp_members", {}))


def run(r: Run) -> dict[str, Any]:
    p = r.params
    ks = [int(k) for k in p["edges"]]
    rows: list[dict[str, Any]] = []
    with emulate(r, services=False) as (cn, _):
        topo = cn.topo
        if cn.controller_mode != "ryu":
            raise RuntimeError(
                "the multicast experiment needs the Ryu controller (multicast trees from IGMP)"
            )
        origin = next(h.name for h in topo.hosts_with(Role.origin))
        order = spread_order(topo, origin, [h.name for h in topo.hosts_with(Role.edge)])
        if max(ks) > len(order):
            raise ValueError(f"edges: {max(ks)} > {len(order)} edges in topology {topo.name}")
        assert cn.run_dir is not None
        work = cn.run_dir / "ingest"
        total = _objects(work / "objects", int(p["objects"]), int(p["object_kb"]), r.seed)
        counters = LinkBytes(cn)
        for k in ks:
            members = order[:k]
            group = f"239.255.42.{k}"
            sd = work / f"k{k}"
            sd.mkdir(parents=True, exist_ok=True)
            keys = []
            for i, e in enumerate(members):
                cfg = {
                    "name": f"rx{i}",
                    "session_id": 9,
                    "store_dir": str(sd / f"mstore{i}"),
                    "group": {"group": group, "port": MPORT, "iface_addr": cn.ip(e), "ttl": 1, "loop": False},
                    "stats_file": str(sd / f"rx{i}.json"),
                    "log_file": str(sd / f"rx{i}.log"),
                }
                (sd / f"rx{i}.cfg.json").write_text(json.dumps(cfg))
                cn.popen(
                    e,
                    [
                        sys.executable,
                        "-m",
                        "testbed.services.mcast.receiver_service",
                        "--config",
                        str(sd / f"rx{i}.cfg.json"),
                    ],
                    role=f"rx{k}",
                    log_name=f"ingest/k{k}/rx{i}.out",
                )
                cn.popen(
                    e,
                    [sys.executable, "-c", UNICAST_SINK, cn.ip(e), str(TPORT), str(sd / f"ustore{i}")],
                    role=f"us{k}",
                    log_name=f"ingest/k{k}/us{i}.out",
                )
                keys += [f"{e}:rx{k}", f"{e}:us{k}"]
            try:
                wait_until(
                    lambda sd=sd, k=k: all(
                        (sd / f"rx{i}.json").exists() and (sd / f"ustore{i}" / ".ready").exists()
                        for i in range(k)
                    ),
                    30,
                    0.1,
                    what="receivers up",
                )
                wait_until(
                    lambda g=group, m=members: set(m) <= _members(cn, g),
                    20,
                    0.2,
                    what=f"IGMP joins of {members} at the controller",
                )
                for mode in ("multicast", "unicast"):
                    task = r.step(f"multicast: K={k} {mode}", total=1)
                    before = counters.snapshot()
                    t0 = time.monotonic()
                    proc = cn.host(origin).popen(
                        [
                            sys.executable,
                            "-c",
                            DRIVER,
                            mode,
                            str(work / "objects"),
                            ",".join(cn.ip(e) for e in members),
                            str(sd),
                            str(p["rate_mbit"]),
                            group,
                            str(MPORT),
                            cn.ip(origin),
                            str(TPORT),
                        ],
                        cwd=str(ROOT),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                    try:
                        out, err = proc.communicate(timeout=float(p["timeout_s"]))
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        out, err = proc.communicate()
                    elapsed = time.monotonic() - t0
                    after = counters.snapshot()
                    task.done()
                    r.figure(f"K={k} {mode}: seconds", round(elapsed, 2))
                    try:
                        res = json.loads(out.decode().strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        res = {"complete": False, "error": err.decode()[-500:]}
                    d = {key: after[key] - before[key] for key in after}
                    rows.append(
                        {
                            "edges": k,
                            "mode": mode,
                            "complete": bool(res.get("complete")),
                            "origin_bytes": d.pop("origin"),
                            "link_bytes": sum(d.values()),
                            "payload_bytes": total,
                            "time_s": round(float(res.get("time_s", elapsed)), 4),
                            "repairs": res.get("repairs", ""),
                            "nacks": res.get("nacks", ""),
                            "tree_links": tree_links(topo, origin, members)
                            if mode == "multicast"
                            else sum(len(nx.shortest_path(topo.graph(), origin, m)) - 1 for m in members),
                            "members": " ".join(members),
                            "error": res.get("error", ""),
                        }
                    )
            finally:
                _stop(cn, keys)
    r.csv("ingest", rows)
    return results_from(rows, ks)


def results_from(rows: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    by = {(int(x["edges"]), x["mode"]): x for x in rows}

    def col(mode: str, key: str) -> list[int]:
        return [int(by[(k, mode)][key]) for k in ks]

    mlb, ulb = col("multicast", "link_bytes"), col("unicast", "link_bytes")
    mob, uob = col("multicast", "origin_bytes"), col("unicast", "origin_bytes")
    # link copies per origin byte; unicast's is the mean path length u (in links)
    lu = [
        (ml / mo) / (ul / uo) if mo and uo and ul else 0.0
        for ml, mo, ul, uo in zip(mlb, mob, ulb, uob, strict=True)
    ]
    tl = col("multicast", "tree_links")
    ut = col("unicast", "tree_links")
    topo_lu = [t / (u / k) for t, u, k in zip(tl, ut, ks, strict=True)]
    out = {
        "edges": ks,
        "multicast_link_bytes": mlb,
        "unicast_link_bytes": ulb,
        "origin_bytes_multicast": mob,
        "origin_bytes_unicast": uob,
        "chuang_sirbu_exponent": _r(fit_exponent([float(k) for k in ks], lu)),
        "chuang_sirbu_exponent_topology": _r(fit_exponent([float(k) for k in ks], topo_lu)),
        "tree_over_unicast_path": [round(x, 4) for x in lu],
        "tree_over_unicast_path_topology": [round(x, 4) for x in topo_lu],
        "chuang_sirbu_law": [round(k**CHUANG_SIRBU, 4) for k in ks],
        "origin_bytes_ratio": [round(m / u, 4) if u else None for m, u in zip(mob, uob, strict=True)],
        "link_bytes_ratio": [round(m / u, 4) if u else None for m, u in zip(mlb, ulb, strict=True)],
        "complete": all(bool(x["complete"]) and str(x["complete"]) != "False" for x in rows),
        "time_s": {m: col_f(by, ks, m) for m in ("multicast", "unicast")},
    }
    out["summary"] = _summary(out)
    return out


def col_f(by: dict, ks: list[int], mode: str) -> list[float]:
    return [float(by[(k, mode)]["time_s"]) for k in ks]


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _summary(res: dict[str, Any]) -> str:
    lines = [
        f"{'K':>3}{'mcast links MB':>16}{'ucast links MB':>16}{'mcast origin MB':>17}{'ucast origin MB':>17}"
        f"{'L/u':>7}{'K^0.8':>7}"
    ]
    for i, k in enumerate(res["edges"]):
        lines.append(
            f"{k:>3}{res['multicast_link_bytes'][i] / 1e6:>16.2f}{res['unicast_link_bytes'][i] / 1e6:>16.2f}"
            f"{res['origin_bytes_multicast'][i] / 1e6:>17.2f}{res['origin_bytes_unicast'][i] / 1e6:>17.2f}"
            f"{res['tree_over_unicast_path'][i]:>7.2f}{res['chuang_sirbu_law'][i]:>7.2f}"
        )
    lines.append(
        f"fitted exponent k (L/u = K^k): {res['chuang_sirbu_exponent']} measured, "
        f"{res['chuang_sirbu_exponent_topology']} from the tree's links; Chuang-Sirbu: {CHUANG_SIRBU}"
    )
    return "\n".join(lines)


def report(out: Path) -> None:
    res = read_results(out)
    pyplot = plt()
    ks = res["edges"]
    fig, axes = pyplot.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(ks, [b / 1e6 for b in res["multicast_link_bytes"]], "o-", label="multicast")
    axes[0].plot(ks, [b / 1e6 for b in res["unicast_link_bytes"]], "s-", label="unicast")
    axes[0].set_title("bytes over all links", fontsize=10)
    axes[1].plot(ks, [b / 1e6 for b in res["origin_bytes_multicast"]], "o-", label="multicast")
    axes[1].plot(ks, [b / 1e6 for b in res["origin_bytes_unicast"]], "s-", label="unicast")
    axes[1].set_title("origin egress", fontsize=10)
    for ax in axes[:2]:
        ax.set_xlabel("edges K")
        ax.set_ylabel("MB")
        ax.set_xticks(ks)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    kk = [1 + i * (max(ks) - 1) / 50 for i in range(51)]
    axes[2].loglog(
        ks, res["tree_over_unicast_path"], "o-", label=f"measured (k={res['chuang_sirbu_exponent']})"
    )
    axes[2].loglog(ks, res["tree_over_unicast_path_topology"], "x--", label="tree links / path length")
    axes[2].loglog(kk, [k**CHUANG_SIRBU for k in kk], "k:", label="Chuang-Sirbu m^0.8")
    axes[2].loglog(kk, kk, color="grey", lw=0.8, label="unicast m^1")
    axes[2].set_xlabel("receivers m = K")
    axes[2].set_ylabel("L(m) / u")
    axes[2].set_title("multicast tree size", fontsize=10)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "multicast.png", dpi=120)
    pyplot.close(fig)
    rows = [
        {
            "k": k,
            "ml": res["multicast_link_bytes"][i] / 1e6,
            "ul": res["unicast_link_bytes"][i] / 1e6,
            "mo": res["origin_bytes_multicast"][i] / 1e6,
            "uo": res["origin_bytes_unicast"][i] / 1e6,
            "or": res["origin_bytes_ratio"][i],
            "lu": res["tree_over_unicast_path"][i],
            "law": res["chuang_sirbu_law"][i],
            "mt": res["time_s"]["multicast"][i],
            "ut": res["time_s"]["unicast"][i],
        }
        for i, k in enumerate(ks)
    ]
    table = md_table(
        rows,
        ["k", "ml", "ul", "mo", "uo", "or", "lu", "law", "mt", "ut"],
        [
            "K",
            "multicast link MB",
            "unicast link MB",
            "multicast origin MB",
            "unicast origin MB",
            "origin ratio",
            "L/u measured",
            "K^0.8",
            "multicast s",
            "unicast s",
        ],
    )
    notes = (
        f"Fitted exponent of L/u = K^k: **{res['chuang_sirbu_exponent']}** from the byte counters, "
        f"{res['chuang_sirbu_exponent_topology']} from the tree's link count; Chuang & Sirbu: 0.8 (for "
        "random receivers in large real and generated networks; here receivers are spread over a small "
        "binary tree, which shares the upper links sooner). Link bytes include headers, TCP ACKs (unicast), "
        "NACKs and sender reports (multicast), LLDP and IGMP. All transfers complete: "
        f"{res.get('complete')}."
    )
    write_report(
        out,
        "Multicast vs unicast ingestion",
        res,
        [("Result", table), ("Plot", "![multicast](multicast.png)"), ("Notes", notes)],
    )

"""Experiment ``hierarchy``: cooperative caching (independent edges, cluster, ICP siblings, parent).

Lecture slide 7 ("When a single cache isn't enough"): when the working set is larger than one cache,
caches cooperate — check local, then siblings (ICPv2, RFC 2186, over UDP with a short timeout), then
fetch through a parent. Slide 20 (Akamai): check the local cache, then other servers in the local
cluster, otherwise the primary (origin). :mod:`testbed.services.edge` implements all three; this
experiment runs them as real processes (``python -m testbed.services.origin/edge --config F``) on
loopback ports and drives each edge with its own clients' seeded Zipf requests for one shared catalog.

Arrangements (same edges, same per-edge capacity, same requests):

* ``independent``: every edge goes to the origin on a miss;
* ``cluster``: a miss is fetched from the object's *home* edge (rendezvous hashing over the cluster),
  which fetches from the origin on its own miss; the requesting edge keeps a copy too;
* ``icp``: a miss asks every sibling with ``ICP_OP_QUERY``; on ``ICP_OP_HIT`` the object is fetched from
  that sibling (``only-if-cached``), otherwise from the origin;
* ``parent``: a miss goes through a parent cache (as large as all edges together), which alone talks to
  the origin.

No delays are emulated: hit ratios and message counts do not depend on them (a full run under
emulation would add only the time each path costs).
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import Field

from contract.config import validate
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.measure.workload import Zipf
from testbed.net.service_plan import edge_fields, origin_fields
from testbed.services.catalog import Catalog, CatalogConfig
from testbed.services.edge.config import EdgeConfig, Peer
from testbed.services.origin import OriginConfig
from testbed.util import free_port, wait_tcp


class Params(ExperimentParams):
    """``specs/hierarchy.yaml`` params."""

    configs: list[Literal["independent", "cluster", "icp", "parent"]] = Field(min_length=1)
    edges: int = Field(ge=2)
    objects: int = Field(gt=0)
    object_bytes: int = Field(gt=0)
    alpha: float = Field(gt=0)
    requests_per_edge: int = Field(gt=0)
    edge_capacity_objects: int = Field(gt=0)
    parent_capacity_objects: int = Field(gt=0)
    entry_overhead_bytes: int = Field(ge=0)
    icp_timeout_ms: int = Field(gt=0)
    concurrency_per_edge: int = Field(gt=0)


CONFIGS = ("independent", "cluster", "icp", "parent")
HOST = "127.0.0.1"


@dataclass
class Service:
    name: str
    module: str  # testbed.services.origin | testbed.services.edge
    port: int
    config: OriginConfig | EdgeConfig  # the service's own model, validated when planned
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Processes:
    """Service processes started here, tracked by PID and stopped with SIGTERM (SIGKILL after a grace)."""

    run_dir: Path
    services: list[Service] = field(default_factory=list)

    def start(self, services: Sequence[Service], timeout: float = 20.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for s in services:
            cfg_path = self.run_dir / f"{s.name}.json"
            cfg = s.config.model_copy(update={"log_file": self.run_dir / f"{s.name}.log"})
            cfg_path.write_text(cfg.model_dump_json())
            out = (self.run_dir / f"{s.name}.out").open("w")
            s.proc = subprocess.Popen(
                [sys.executable, "-m", s.module, "--config", str(cfg_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            out.close()
            self.services.append(s)
        for s in services:
            try:
                wait_tcp(HOST, s.port, timeout)
            except TimeoutError:
                code = s.proc.poll() if s.proc else None
                log = (self.run_dir / f"{s.name}.out").read_text()[-800:]
                raise RuntimeError(f"{s.name} did not start on port {s.port} (exit {code}): {log}") from None

    def stop(self, grace: float = 5.0) -> None:
        for s in self.services:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in self.services:
            if s.proc is None:
                continue
            try:
                s.proc.wait(grace)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        self.services.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def catalog_config(p: dict[str, Any], seed: int) -> CatalogConfig:
    """Every object a cachable image (``public, max-age=3600``) of ``object_bytes``: capacity in objects
    is then exact, and no object's class keeps it out of a cache."""
    return CatalogConfig(
        seed=seed,
        objects=int(p["objects"]),
        size_distribution="fixed",
        fixed_bytes=int(p["object_bytes"]),
        class_weights={"image": 1.0},
    )


def plan(arrangement: str, p: dict[str, Any], seed: int) -> tuple[Service, list[Service], Service | None]:
    """(origin, edges, parent) with ports and configs (each its service's model, validated) for one
    arrangement, built on the fields the emulated CDN's origin and edges are
    (:func:`testbed.net.service_plan.origin_fields`, :func:`~testbed.net.service_plan.edge_fields`), on loopback
    ports."""
    if arrangement not in CONFIGS:
        raise ValueError(f"unknown arrangement {arrangement!r}; one of {', '.join(CONFIGS)}")
    n = int(p["edges"])
    entry = int(p["object_bytes"]) + int(p["entry_overhead_bytes"])
    port = free_port()
    origin = Service("origin", "testbed.services.origin", port,
                     validate(OriginConfig, origin_fields("origin", HOST, port, catalog_config(p, seed).model_dump()),
                              "hierarchy: origin"))
    names = [f"edge{i + 1}" for i in range(n)]
    ports = {e: free_port() for e in names}
    icp_ports = {e: free_port(socket.SOCK_DGRAM) for e in names} if arrangement == "icp" else {}
    parent = None
    if arrangement == "parent":
        port = free_port()
        parent = Service("parent", "testbed.services.edge", port, validate(EdgeConfig, edge_fields(
            "parent", HOST, port, origin.url, int(p["parent_capacity_objects"]) * entry, "none",
            Peer(name="parent", http_url=f"http://{HOST}:{port}"), []), "hierarchy: parent"))
    peers = {m: Peer(name=m, http_url=f"http://{HOST}:{ports[m]}", icp_host=HOST,
                     **({"icp_port": icp_ports[m]} if m in icp_ports else {})) for m in names}
    mode = {"independent": "none"}.get(arrangement, arrangement)
    edges = []
    for e in names:
        # the fields the emulated CDN's edges are built on (testbed.net.service_plan), on loopback ports
        cfg = edge_fields(e, HOST, ports[e], origin.url, int(p["edge_capacity_objects"]) * entry, mode, peers[e],
                          [peers[m] for m in names if m != e], parent.url if parent else None, icp_bind=HOST)
        cfg["icp_timeout_ms"] = int(p["icp_timeout_ms"])
        edges.append(Service(e, "testbed.services.edge", ports[e], validate(EdgeConfig, cfg, f"hierarchy: {e}")))
    return origin, edges, parent


def workloads(
    edges: Sequence[str], paths: Sequence[str], alpha: float, count: int, seed: int
) -> dict[str, list[tuple[int, str]]]:
    """Per edge: its clients' requests as (rank, path), Zipf(alpha) over the shared catalog (rank order),
    each edge's stream seeded separately (same for every arrangement)."""
    out = {}
    for e in edges:
        z = Zipf(len(paths), alpha, random.Random(f"{seed}:{e}"))
        ranks = [z.rank() for _ in range(count)]
        out[e] = [(k, paths[k - 1]) for k in ranks]
    return out


async def _drive(
    edges: dict[str, str], reqs: dict[str, list[tuple[int, str]]], concurrency: int
) -> list[dict[str, Any]]:
    """Send every edge its requests (``concurrency`` at a time per edge, all edges at once)."""
    rows: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client(edge: str, items: list[tuple[int, int, str]]) -> None:
            for seq, rank, path in items:
                row = {
                    "edge": edge,
                    "seq": seq,
                    "rank": rank,
                    "path": path,
                    "status": 0,
                    "x_cache": "",
                    "served_by": "",
                    "error": "",
                }
                try:
                    async with session.get(edges[edge] + path) as r:
                        await r.read()
                        row.update(
                            status=r.status,
                            x_cache=r.headers.get("X-Cache", ""),
                            served_by=r.headers.get("X-Served-By", ""),
                        )
                except (aiohttp.ClientError, TimeoutError) as e:
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)

        tasks = []
        for edge, items in reqs.items():
            numbered = [(i, k, path) for i, (k, path) in enumerate(items)]
            for c in range(concurrency):
                tasks.append(client(edge, numbered[c::concurrency]))
        await asyncio.gather(*tasks)
    return rows


async def _json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as r:
        return await r.json()


def messages(cache_stats: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Inter-cache messages from the caches' ``/_cdn/stats``: ICP datagrams (queries the clients sent,
    replies the servers sent — the client stops listening after the first HIT, so later replies are not
    in its own count) and HTTP exchanges between caches (request + response = 2 messages) to a cluster
    home, an ICP sibling or the parent."""
    m: Counter[str] = Counter()
    for st in cache_stats:
        ic = st.get("inter_cache", {})
        icp = ic.get("icp_client") or {}
        m["icp_queries"] += int(icp.get("queries_sent", 0))
        srv = ic.get("icp_server") or {}
        m["icp_replies"] += int(srv.get("hits_sent", 0)) + int(srv.get("misses_sent", 0))
        m["peer_fetches"] += int(ic.get("peer_fetches", 0))
        m["sibling_fetches"] += int(ic.get("sibling_fetches", 0))
        m["parent_fetches"] += int(st.get("fetches", {}).get("parent", 0))
    m["total"] = (
        m["icp_queries"]
        + m["icp_replies"]
        + 2 * (m["peer_fetches"] + m["sibling_fetches"] + m["parent_fetches"])
    )
    return dict(m)


def summarize(
    rows: Sequence[dict[str, Any]], origin_stats: dict[str, Any], cache_stats: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    n = len(rows)
    ok = [r for r in rows if not r["error"] and int(r["status"]) == 200]
    local_hits = sum(1 for r in ok if r["x_cache"] == "HIT")
    origin_requests = int(origin_stats["requests"])
    msgs = messages(cache_stats)
    origin_fetches = sum(int(st.get("fetches", {}).get("origin", 0)) for st in cache_stats)
    return {
        "requests": n,
        "ok": len(ok),
        "errors": n - len(ok),
        "local_hits": local_hits,
        "local_misses": len(ok) - local_hits,
        "local_hit_ratio": local_hits / n if n else 0.0,
        "origin_requests": origin_requests,
        "origin_fetches_by_caches": origin_fetches,
        # misses that did not reach the origin: served by a cluster home, sibling or parent, or joined a
        # fetch already under way at the edge (request collapsing, counted in ``collapsed``)
        "misses_absorbed": len(ok) - local_hits - origin_requests,
        "collapsed": sum(int(st.get("collapsed", 0)) for st in cache_stats if st.get("name") != "parent"),
        "hit_ratio": (n - origin_requests) / n if n else 0.0,
        "origin_bytes": int(origin_stats.get("bytes_sent", 0)),
        "intercache_messages": msgs["total"],
        "messages": msgs,
        "evictions": sum(int(st.get("store", {}).get("evictions", 0)) for st in cache_stats),
    }


def run_arrangement(
    r: Run, arrangement: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    p = r.params
    origin, edges, parent = plan(arrangement, p, r.seed)
    paths = [o.path for o in Catalog(catalog_config(p, r.seed)).objects]  # object i has rank i + 1
    reqs = workloads([e.name for e in edges], paths, float(p["alpha"]), int(p["requests_per_edge"]), r.seed)
    with Processes(r.out / "run" / arrangement) as procs:
        procs.start([origin, *([parent] if parent else [])])
        procs.start(edges)
        rows = asyncio.run(_drive({e.name: e.url for e in edges}, reqs, int(p["concurrency_per_edge"])))
        caches = [*edges, *([parent] if parent else [])]
        origin_stats = asyncio.run(_json(origin.url + "/_origin/stats"))
        cache_stats = [asyncio.run(_json(c.url + "/_cdn/stats")) for c in caches]
    for row in rows:
        row["config"] = arrangement
    cache_rows = []
    for st in cache_stats:
        msgs = messages([st])
        cache_rows.append(
            {
                "config": arrangement,
                "cache": st["name"],
                "hits": st["hits"],
                "misses": st["misses"],
                "fetches_origin": st["fetches"].get("origin", 0),
                "fetches_peer": st["fetches"].get("peer", 0),
                "fetches_sibling": st["fetches"].get("sibling", 0),
                "fetches_parent": st["fetches"].get("parent", 0),
                "peer_requests_received": st["inter_cache"]["peer_requests_received"],
                "icp_queries_sent": msgs["icp_queries"],
                "icp_replies_received": msgs["icp_replies"],
                "icp_queries_received": (st["inter_cache"].get("icp_server") or {}).get(
                    "queries_received", 0
                ),
                "objects": st["store"]["objects"],
                "evictions": st["store"]["evictions"],
            }
        )
    cache_rows.append(
        {
            "config": arrangement,
            "cache": "origin",
            "requests": origin_stats["requests"],
            "bytes_sent": origin_stats["bytes_sent"],
        }
    )
    return summarize(rows, origin_stats, cache_stats), rows, cache_rows


def run(r: Run) -> dict[str, Any]:
    p = r.params
    arrangements = [str(c) for c in p["configs"]]
    task = r.step("hierarchy: arrangements", total=len(arrangements))
    configs: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    all_caches: list[dict[str, Any]] = []
    for a in arrangements:
        configs[a], rows, caches = run_arrangement(r, a)
        all_rows += rows
        all_caches += caches
        r.figure(f"{a}: requests", len(rows))
        r.figure(f"{a}: errors", sum(1 for x in rows if x.get("error")))
        task.advance()
    r.csv(
        "requests",
        all_rows,
        ["config", "edge", "seq", "rank", "path", "status", "x_cache", "served_by", "error"],
    )
    r.csv(
        "caches",
        all_caches,
        [
            "config",
            "cache",
            "hits",
            "misses",
            "fetches_origin",
            "fetches_peer",
            "fetches_sibling",
            "fetches_parent",
            "peer_requests_received",
            "icp_queries_sent",
            "icp_replies_received",
            "icp_queries_received",
            "objects",
            "evictions",
            "requests",
            "bytes_sent",
        ],
    )
    res = {
        "configs": configs,
        "edges": int(p["edges"]),
        "objects": int(p["objects"]),
        "edge_capacity_objects": int(p["edge_capacity_objects"]),
        "parent_capacity_objects": int(p["parent_capacity_objects"]),
        "emulation": "none (loopback processes)",
    }
    res["summary"] = _summary(res)
    return res


def _rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"config": name, **c} for name, c in res["configs"].items()]


def _summary(res: dict[str, Any]) -> str:
    lines = [f"{'config':<12} {'hit ratio':>9} {'local':>7} {'origin req':>10} {'msgs':>7}"]
    for name, c in res["configs"].items():
        lines.append(
            f"{name:<12} {c['hit_ratio']:>9.3f} {c['local_hit_ratio']:>7.3f} {c['origin_requests']:>10} "
            f"{c['intercache_messages']:>7}"
        )
    return "\n".join(lines)


def report(out: Path) -> None:
    res = read_results(out)
    rows = read_csv(out / "requests.csv")
    names = list(res["configs"])
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(13, 4))
    # hit ratios from the raw requests (local) and results (origin)
    local = {
        n: sum(1 for x in rows if x["config"] == n and x["x_cache"] == "HIT")
        / max(1, sum(1 for x in rows if x["config"] == n))
        for n in names
    }
    w = 0.38
    xs = range(len(names))
    axes[0].bar([x - w / 2 for x in xs], [local[n] for n in names], w, label="local hit ratio")
    axes[0].bar(
        [x + w / 2 for x in xs],
        [res["configs"][n]["hit_ratio"] for n in names],
        w,
        label="hit ratio (not reaching origin)",
    )
    axes[0].set_xticks(list(xs), names)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Hit ratio")
    axes[1].bar(names, [res["configs"][n]["origin_requests"] for n in names], color="tab:red")
    axes[1].set_title("Requests reaching the origin")
    kinds = ["icp_queries", "icp_replies", "peer_fetches", "sibling_fetches", "parent_fetches"]
    bottom = [0.0] * len(names)
    for k in kinds:
        mult = 1 if k.startswith("icp") else 2
        vals = [mult * res["configs"][n]["messages"].get(k, 0) for n in names]
        axes[2].bar(names, vals, bottom=bottom, label=k.replace("_", " ") + (" (x2)" if mult == 2 else ""))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    axes[2].set_title("Inter-cache messages")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hierarchy.png", dpi=110)
    pyplot.close(fig)
    # per-edge local hit ratio
    edges = sorted({x["edge"] for x in rows})
    fig, ax = pyplot.subplots(figsize=(7, 4))
    w = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        vals = []
        for e in edges:
            mine = [x for x in rows if x["config"] == n and x["edge"] == e]
            vals.append(sum(1 for x in mine if x["x_cache"] == "HIT") / max(1, len(mine)))
        ax.bar([k + i * w for k in range(len(edges))], vals, w, label=n)
    ax.set_xticks([k + w * (len(names) - 1) / 2 for k in range(len(edges))], edges)
    ax.set_ylabel("local hit ratio")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "local_hits_by_edge.png", dpi=110)
    pyplot.close(fig)
    table = md_table(
        _rows(res),
        [
            "config",
            "requests",
            "local_hit_ratio",
            "hit_ratio",
            "origin_requests",
            "misses_absorbed",
            "intercache_messages",
            "errors",
        ],
        [
            "arrangement",
            "requests",
            "local hit ratio",
            "hit ratio",
            "origin requests",
            "misses kept from the origin",
            "inter-cache messages",
            "errors",
        ],
    )
    msg_rows = [{"config": n, **res["configs"][n]["messages"]} for n in names]
    msg_table = md_table(
        msg_rows,
        [
            "config",
            "icp_queries",
            "icp_replies",
            "peer_fetches",
            "sibling_fetches",
            "parent_fetches",
            "total",
        ],
        [
            "arrangement",
            "ICP queries",
            "ICP replies",
            "cluster home fetches",
            "sibling fetches",
            "parent fetches",
            "messages",
        ],
    )
    write_report(
        out,
        "Cooperative caching: independent, cluster, ICP siblings, parent",
        res,
        [
            (
                "Setup",
                f"{res['edges']} edges, each with capacity for about {res['edge_capacity_objects']} of the "
                f"{res['objects']} objects; each edge's own clients request Zipf-popular objects of the shared "
                f"catalog (the same requests in every arrangement). The parent holds about "
                f"{res['parent_capacity_objects']} objects. Real origin and edge processes on loopback "
                "ports (`python -m testbed.services.origin/edge`), **no emulated network**: this experiment "
                "measures hit ratios and message counts, which do not depend on link delays.",
            ),
            (
                "Results",
                "![hierarchy](hierarchy.png)\n\n" + table + "\n\nHit ratio counts every request that did "
                "not reach the origin (origin's own `/_origin/stats`); local hit ratio counts responses with "
                "`X-Cache: HIT` from the edge the client asked. Misses kept from the origin were served by another cache "
                "or joined a fetch of the same object already under way at the edge (request collapsing, which is all "
                "that independent edges get).",
            ),
            (
                "Inter-cache messages",
                msg_table + "\n\nICP datagrams count one each; an HTTP fetch between caches "
                "counts two (request and response).",
            ),
            ("Per edge", "![local hits by edge](local_hits_by_edge.png)"),
            (
                "Reading it",
                "Independent edges each fetch every object they miss from the origin. A cluster "
                "(slide 20) sends a miss to the object's home edge, so a popular object is fetched from the origin by "
                "its home rather than once per edge; the price is one HTTP exchange per miss and a duplicate copy at the requesting edge. "
                "ICP siblings (slide 7) pay two datagrams per sibling per miss to find a copy, and only find one when "
                "some sibling still holds it. A parent turns every miss into a request to one bigger shared cache, "
                "which then alone loads the origin.",
            ),
        ],
    )

"""The lecture's institutional caching example (slides 4-6), measured in the emulation.

An institution's browsers request 100 Kbit objects at 20/s over a 1.5 Mbps access link; the Internet round
trip to any origin is ~2 s (topology ``institutional``). The same seeded workload runs twice:

* **no cache** — every browser fetches straight from the origin (the driver's ``anycast`` method with the
  origin's own address as target, i.e. a *direct* fetch): offered load 20 x 100 Kbit = 2 Mbit/s on a
  1.5 Mbit/s link, so the link saturates and requests queue (the lecture's "minutes");
* **with cache** — every browser fetches through the institutional cache (the ``edge`` host ``cache``).
  A fraction ``hit_fraction`` (0.6) of the requests go to a small hot set of cachable objects fetched
  through the cache once before the measurement; the rest carry a unique query string, so each is a
  distinct cache key and a miss (the lecture's slide 8: a large share of web requests is uncachable).

Measured: access-link utilisation from the byte counters of the switch-side interface of the lan–inet
link (``/sys/class/net/<intf>/statistics/{rx,tx}_bytes``, sampled every 0.25 s; the busier direction,
downstream, counts), over [``warmup_s``, ``duration_s``] of the load; per-request delay from the driver's
samples: from sending the GET to the last byte (``total - connect``: the TCP handshake is left out, as
with the persistent connections browsers keep), plus the total with the handshake.

The lecture's analytical figures for the same parameters (read from the topology: access bandwidth,
Internet RTT): utilisation = rate x size / bandwidth (133 % offered, i.e. saturated, without cache;
0.4 x 2 / 1.5 = 53 % with 60 % hits); delay with cache = hit x LAN delay + miss x (Internet delay +
access delay) = 0.6 x 10 ms + 0.4 x 2 s = 0.81 s. (Slide 6 prints ".6*2 s + .4*10 ms < 1.3 s", weights
swapped; both are in results.json.) An M/M/1 refinement of the access delay, (size/bw)/(1-rho), is given too.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from experiments.common import emulate, run_drivers, save_samples
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.measure import link_bytes
from testbed.net.launch import CdnOptions, CdnServices
from testbed.net.spec import Role
from testbed.services.catalog import Catalog, CatalogConfig


class Params(ExperimentParams):
    """``specs/caching.yaml`` params: the lecture's institutional example (slides 4-6)."""

    object_bytes: int = Field(gt=0)
    rate_per_s: int = Field(gt=0)
    hit_fraction: float = Field(ge=0, le=1)
    hot_objects: int = Field(gt=0)
    catalog_objects: int = Field(gt=0)
    duration_s: int = Field(gt=0)
    warmup_s: int = Field(ge=0)
    timeout_s: int = Field(gt=0)
    lan_delay_s: float = Field(ge=0)


CASES = ("no_cache", "with_cache")


# -- analytics ---------------------------------------------------------------------------------------
def lecture_figures(
    *,
    rate_per_s: float,
    object_bytes: int,
    access_mbit: float,
    internet_rtt_s: float,
    hit_ratio: float,
    lan_delay_s: float,
) -> dict[str, Any]:
    """The lecture's model (slides 4-6) for these parameters; ``None`` where the model has no finite value."""
    size_bits = object_bytes * 8
    offered = rate_per_s * size_bits / (access_mbit * 1e6)
    rho_cache = (1 - hit_ratio) * offered
    tx_s = size_bits / (access_mbit * 1e6)  # one object's transmission time on the access link

    def mm1(rho: float) -> float | None:  # M/M/1 sojourn time of one object at the access link
        return tx_s / (1 - rho) if rho < 1 else None

    acc_cache = mm1(rho_cache)
    return {
        "offered_load": round(offered, 4),
        "utilization_no_cache": round(min(1.0, offered), 4),  # a link cannot carry more than 100 %
        "utilization_with_cache": round(min(1.0, rho_cache), 4),
        "internet_delay_s": internet_rtt_s,
        "lan_delay_s": lan_delay_s,
        "hit_ratio": hit_ratio,
        # no cache: rho >= 1, the queue (and the delay) grows without bound: "minutes"
        "mean_delay_no_cache_s": None if offered >= 1 else round(internet_rtt_s + mm1(offered), 4),
        # lecture: access delay negligible at 53 %
        "mean_delay_with_cache_s": round(hit_ratio * lan_delay_s + (1 - hit_ratio) * internet_rtt_s, 4),
        "mean_delay_with_cache_mm1_s": None
        if acc_cache is None
        else round(hit_ratio * lan_delay_s + (1 - hit_ratio) * (internet_rtt_s + acc_cache), 4),
        "slide6_printed_delay_s": round(hit_ratio * internet_rtt_s + (1 - hit_ratio) * lan_delay_s, 4),
    }


# -- workload ----------------------------------------------------------------------------------------
def workload(
    clients: list[str],
    paths: list[str],
    *,
    rate_per_s: float,
    duration_s: float,
    hit_fraction: float,
    hot_objects: int,
    seed: int,
    tag: str,
) -> dict[str, list[dict[str, Any]]]:
    """Poisson arrivals at ``rate_per_s`` in all, spread over ``clients``; exactly round(hit_fraction x n)
    requests for the hot set (uniform over it), the others for a random object with a unique query string."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= duration_s:
            break
        arrivals.append(t)
    n = len(arrivals)
    n_hot = round(hit_fraction * n)
    kinds = ["hot"] * n_hot + ["unique"] * (n - n_hot)
    rng.shuffle(kinds)
    hot, cold = paths[:hot_objects], paths[hot_objects:] or paths
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for i, (at, kind) in enumerate(zip(arrivals, kinds, strict=True)):
        client = clients[rng.randrange(len(clients))]
        path = rng.choice(hot) if kind == "hot" else f"{rng.choice(cold)}?u={tag}-{i}"
        out[client].append({"at": round(at, 4), "via": "anycast", "path": path})
    return out


# -- access-link byte counters -------------------------------------------------------------------------
class LinkCounter:
    """Samples rx/tx bytes of one interface (root namespace) every ``interval`` s in a thread."""

    def __init__(self, intf: str, interval: float = 0.25) -> None:
        self.intf, self.interval = intf, interval
        self.rows: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def read(self) -> tuple[int, int]:
        return link_bytes.rx_tx(self.intf)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rx, tx = self.read()
            self.rows.append({"t": time.time(), "rx_bytes": rx, "tx_bytes": tx})
            self._stop.wait(self.interval)

    def __enter__(self) -> LinkCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        rx, tx = self.read()
        self.rows.append({"t": time.time(), "rx_bytes": rx, "tx_bytes": tx})


def counter_at(rows: list[dict[str, Any]], t: float, key: str) -> float:
    """A byte counter at time ``t`` by linear interpolation between samples."""
    pts = [(float(r["t"]), float(r[key])) for r in rows]
    if t <= pts[0][0]:
        return pts[0][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return pts[-1][1]


def utilisation(rows: list[dict[str, Any]], t0: float, t1: float, bw_mbit: float) -> dict[str, float]:
    """Mean utilisation of each direction over [t0, t1]: bytes x 8 / (bw x seconds)."""
    cap = bw_mbit * 1e6 / 8 * (t1 - t0)
    return {k: (counter_at(rows, t1, k) - counter_at(rows, t0, k)) / cap for k in ("rx_bytes", "tx_bytes")}


def prewarm(
    cn: Any, client: str, cache_ip: str, hot: list[str], timeout: float, passes: int = 5
) -> dict[str, Any]:
    """Fetch the hot set through the cache until every object is a HIT (a pass fetches what was not).

    Fetches are spaced 0.25 s apart: many simultaneous new connections over the 2 s round trip make some
    of the cache's origin fetches exceed its upstream timeout (502), which would leave holes in the set.
    """
    todo, fetched = list(hot), 0
    for n in range(1, passes + 1):
        rows = run_drivers(
            cn,
            {
                client: {
                    "target": {"vip": cache_ip},
                    "timeout_s": timeout,
                    "schedule": [{"at": 0.25 * i, "via": "anycast", "path": h} for i, h in enumerate(todo)],
                }
            },
            timeout=0.25 * len(todo) + 4 * timeout + 30,
        )
        fetched += len(rows)
        todo = sorted(r["path"] for r in rows if str(r.get("x_cache", "")).upper() != "HIT")
        if not todo:
            return {"objects": len(hot), "passes": n, "fetches": fetched, "not_cached": []}
    return {"objects": len(hot), "passes": passes, "fetches": fetched, "not_cached": todo}


# -- the run -------------------------------------------------------------------------------------------
def _delay_s(row: dict[str, Any]) -> float:
    return (float(row["total_ms"]) - float(row.get("connect_ms") or 0) - float(row.get("dns_ms") or 0)) / 1000


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if not r.get("error") and int(r.get("status") or 0) == 200]
    hits = [r for r in ok if str(r.get("x_cache", "")).upper().startswith("HIT")]
    delays = [_delay_s(r) for r in ok]
    return {
        "requests": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "timeouts": sum(1 for r in rows if "Timeout" in str(r.get("error", ""))),
        "hit_ratio": len(hits) / len(ok) if ok else None,
        "mean_delay_s": statistics.fmean(delays) if delays else None,
        "p50_delay_s": statistics.median(delays) if delays else None,
        "p90_delay_s": sorted(delays)[int(0.9 * (len(delays) - 1))] if delays else None,
        "mean_total_s": statistics.fmean(float(r["total_ms"]) / 1000 for r in ok) if ok else None,
        "mean_delay_hit_s": statistics.fmean(_delay_s(r) for r in hits) if hits else None,
        "mean_delay_miss_s": statistics.fmean(_delay_s(r) for r in ok if r not in hits)
        if len(ok) > len(hits)
        else None,
    }


def run(r: Run) -> dict[str, Any]:
    p = r.params
    topo = r.load_topology()
    clients = [h.name for h in topo.hosts_with(Role.client)]
    cache = next(h.name for h in topo.hosts_with(Role.edge))
    origin = next(h.name for h in topo.hosts_with(Role.origin))
    access = next(ln for ln in topo.links if ln.bw_mbit)
    access_mbit = float(access.bw_mbit or 0)
    rtt_s = 2 * topo.path_delay_ms(access.a, origin) / 1000  # institutional router -> origin -> router
    catalog = {
        "seed": r.seed,
        "objects": int(p["catalog_objects"]),
        "size_distribution": "fixed",
        "fixed_bytes": int(p["object_bytes"]),
        "class_weights": {"image": 1.0},
    }
    paths = [o.path for o in Catalog(CatalogConfig(**catalog)).objects]
    hot = paths[: int(p["hot_objects"])]
    dur, timeout = float(p["duration_s"]), float(p["timeout_s"])
    results: dict[str, Any] = {}
    series: list[dict[str, Any]] = []
    with emulate(r, services=False) as (cn, _):
        CdnServices(cn, CdnOptions(catalog=catalog, roles=("origin", "edge"))).start()
        lan_intf, _ = cn.node(access.a).connectionsTo(cn.node(access.b))[0]
        targets = {"no_cache": cn.ip(origin), "with_cache": cn.ip(cache)}
        task = r.step(f"caching: warming the cache with {len(hot)} hot objects", total=1)
        warm = prewarm(cn, clients[0], targets["with_cache"], hot, timeout)
        task.done()
        for case in CASES:
            task = r.step(f"caching: {case} ({dur:.0f} s of load)", total=1)
            sched = workload(
                clients,
                paths,
                rate_per_s=float(p["rate_per_s"]),
                duration_s=dur,
                hit_fraction=float(p["hit_fraction"]),
                hot_objects=int(p["hot_objects"]),
                seed=r.seed,
                tag=case,
            )
            cfgs = {
                c: {"target": {"vip": targets[case]}, "timeout_s": timeout, "schedule": s}
                for c, s in sched.items()
                if s
            }
            with LinkCounter(lan_intf.name) as lc:
                rows = run_drivers(cn, cfgs, timeout=dur + 4 * timeout + 30)
            task.done()
            r.rows_figure(case, rows)
            for row in rows:
                row["phase"] = case
                row["delay_s"] = round(_delay_s(row), 4)
            save_samples(r, f"samples_{case}", rows)
            start = (
                statistics.median(float(x["t"]) - float(x["at"]) for x in rows) if rows else lc.rows[0]["t"]
            )
            u = utilisation(lc.rows, start + float(p["warmup_s"]), start + dur, access_mbit)
            for a, b in zip(lc.rows, lc.rows[1:], strict=False):
                dt = b["t"] - a["t"]
                if dt > 0:
                    series.append(
                        {
                            "case": case,
                            "t_s": round(b["t"] - start, 3),
                            "down_mbit": round((b["rx_bytes"] - a["rx_bytes"]) * 8 / dt / 1e6, 4),
                            "up_mbit": round((b["tx_bytes"] - a["tx_bytes"]) * 8 / dt / 1e6, 4),
                        }
                    )
            s = summarise(rows)
            s.update(
                utilization=max(u.values()),
                utilization_down=u["rx_bytes"],
                utilization_up=u["tx_bytes"],
                interface=lan_intf.name,
                link_bytes_down=lc.rows[-1]["rx_bytes"] - lc.rows[0]["rx_bytes"],
                objects_over_link=sum(
                    1
                    for x in rows
                    if x.get("status") == 200 and not str(x.get("x_cache", "")).upper().startswith("HIT")
                ),
            )
            results[case] = s
    r.csv("link_series", series, ["case", "t_s", "down_mbit", "up_mbit"])
    nc, wc = results["no_cache"], results["with_cache"]
    hit = wc["hit_ratio"] or 0.0
    lecture = lecture_figures(
        rate_per_s=float(p["rate_per_s"]),
        object_bytes=int(p["object_bytes"]),
        access_mbit=access_mbit,
        internet_rtt_s=rtt_s,
        hit_ratio=float(p["hit_fraction"]),
        lan_delay_s=float(p["lan_delay_s"]),
    )
    at_measured = lecture_figures(
        rate_per_s=float(p["rate_per_s"]),
        object_bytes=int(p["object_bytes"]),
        access_mbit=access_mbit,
        internet_rtt_s=rtt_s,
        hit_ratio=hit,
        lan_delay_s=float(p["lan_delay_s"]),
    )
    # the same model with the bytes one object really puts on the link (headers, handshake, ACK-clocked TCP)
    wire = (
        wc["link_bytes_down"] / wc["objects_over_link"]
        if wc["objects_over_link"]
        else float(p["object_bytes"])
    )
    with_wire = lecture_figures(
        rate_per_s=float(p["rate_per_s"]),
        object_bytes=int(round(wire)),
        access_mbit=access_mbit,
        internet_rtt_s=rtt_s,
        hit_ratio=hit,
        lan_delay_s=float(p["lan_delay_s"]),
    )
    r.meta.update(
        scale="full (1.5 Mbit/s access link, 2 s Internet RTT, 100 Kbit objects, 20 req/s)",
        workload=f"{p['hit_fraction']:.0%} of requests for {len(hot)} pre-warmed cachable objects, "
        f"the rest for unique query strings (distinct cache keys: always misses)",
    )
    out = {
        "utilization_no_cache": round(nc["utilization"], 4),
        "utilization_with_cache": round(wc["utilization"], 4),
        "hit_ratio": round(hit, 4),
        "mean_delay_no_cache_s": nc["mean_delay_s"] and round(nc["mean_delay_s"], 4),
        "mean_delay_with_cache_s": wc["mean_delay_s"] and round(wc["mean_delay_s"], 4),
        "lecture": lecture,
        "lecture_at_measured_hit_ratio": at_measured,
        "wire_bytes_per_object": round(wire, 1),
        "lecture_with_wire_bytes": with_wire,
        "cases": results,
        "warmed": warm,
        "parameters": {
            "access_mbit": access_mbit,
            "internet_rtt_s": rtt_s,
            "object_bits": int(p["object_bytes"]) * 8,
            "rate_per_s": p["rate_per_s"],
        },
    }
    out["summary"] = _summary_text(out)
    return out


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "unbounded"
    return f"{100 * v:.0f} %" if pct else f"{v:.2f} s"


def _summary_text(res: dict[str, Any]) -> str:
    lec, c = res["lecture"], res["cases"]
    lines = [
        f"{'':22}{'no cache':>14}{'with cache':>14}{'lecture no':>13}{'lecture with':>14}",
        f"{'access utilisation':22}{_fmt(res['utilization_no_cache'], True):>14}"
        f"{_fmt(res['utilization_with_cache'], True):>14}{_fmt(lec['utilization_no_cache'], True):>13}"
        f"{_fmt(lec['utilization_with_cache'], True):>14}",
        f"{'mean delay':22}{_fmt(res['mean_delay_no_cache_s']):>14}{_fmt(res['mean_delay_with_cache_s']):>14}"
        f"{_fmt(lec['mean_delay_no_cache_s']):>13}{_fmt(lec['mean_delay_with_cache_s']):>14}",
        f"{'hit ratio':22}{'-':>14}{_fmt(res['hit_ratio'], True):>14}{'-':>13}{_fmt(lec['hit_ratio'], True):>14}",
        f"{'requests ok/failed':22}{c['no_cache']['ok']:>9}/{c['no_cache']['failed']:<4}"
        f"{c['with_cache']['ok']:>9}/{c['with_cache']['failed']:<4}",
    ]
    return "\n".join(lines)


# -- report --------------------------------------------------------------------------------------------
def report(out: Path) -> None:
    res = read_results(out)
    pyplot = plt()
    series = read_csv(out / "link_series.csv") if (out / "link_series.csv").exists() else []
    fig, ax = pyplot.subplots(figsize=(7, 3.5))
    bw = res.get("parameters", {}).get("access_mbit", 1.5)
    for case, color in (("no_cache", "tab:red"), ("with_cache", "tab:green")):
        pts = [(float(s["t_s"]), float(s["down_mbit"])) for s in series if s["case"] == case]
        if pts:
            ax.plot([t for t, _ in pts], [v for _, v in pts], color=color, lw=1, label=case.replace("_", " "))
    ax.axhline(bw, color="k", ls="--", lw=0.8, label=f"access link {bw:g} Mbit/s")
    ax.set_xlabel("time since load start (s)")
    ax.set_ylabel("downstream Mbit/s")
    ax.set_title("Access-link throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "link_throughput.png", dpi=120)
    pyplot.close(fig)

    fig, axes = pyplot.subplots(1, 2, figsize=(9, 3.5))
    lec = res["lecture"]
    names = ["no cache", "with cache"]
    x = range(2)
    axes[0].bar(
        [i - 0.2 for i in x],
        [100 * res["utilization_no_cache"], 100 * res["utilization_with_cache"]],
        0.4,
        label="measured",
    )
    axes[0].bar(
        [i + 0.2 for i in x],
        [100 * lec["utilization_no_cache"], 100 * lec["utilization_with_cache"]],
        0.4,
        label="lecture",
    )
    axes[0].set_xticks(list(x), names)
    axes[0].set_ylabel("access-link utilisation (%)")
    axes[0].legend(fontsize=8)
    meas = [res["mean_delay_no_cache_s"] or 0, res["mean_delay_with_cache_s"] or 0]
    axes[1].bar([i - 0.2 for i in x], meas, 0.4, label="measured")
    axes[1].bar([1 + 0.2], [lec["mean_delay_with_cache_s"]], 0.4, label="lecture")
    axes[1].text(0 + 0.2, 0.1, "unbounded", rotation=90, ha="center", va="bottom", fontsize=8)
    axes[1].set_xticks(list(x), names)
    axes[1].set_ylabel("mean delay per request (s)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=120)
    pyplot.close(fig)

    c = res["cases"]
    rows = [
        {
            "m": "access-link utilisation",
            "nc": _fmt(res["utilization_no_cache"], True),
            "wc": _fmt(res["utilization_with_cache"], True),
            "lnc": _fmt(lec["utilization_no_cache"], True) + f" (offered {lec['offered_load']:.0%})",
            "lwc": _fmt(lec["utilization_with_cache"], True),
        },
        {
            "m": "mean delay (GET to last byte)",
            "nc": _fmt(res["mean_delay_no_cache_s"]),
            "wc": _fmt(res["mean_delay_with_cache_s"]),
            "lnc": 'unbounded ("minutes")',
            "lwc": f"{_fmt(lec['mean_delay_with_cache_s'])} (M/M/1: {_fmt(lec['mean_delay_with_cache_mm1_s'])})",
        },
        {
            "m": "median / p90 delay",
            "nc": f"{_fmt(c['no_cache']['p50_delay_s'])} / {_fmt(c['no_cache']['p90_delay_s'])}",
            "wc": f"{_fmt(c['with_cache']['p50_delay_s'])} / {_fmt(c['with_cache']['p90_delay_s'])}",
        },
        {
            "m": "mean total incl. TCP handshake",
            "nc": _fmt(c["no_cache"]["mean_total_s"]),
            "wc": _fmt(c["with_cache"]["mean_total_s"]),
        },
        {
            "m": "hit ratio",
            "nc": "-",
            "wc": _fmt(res["hit_ratio"], True),
            "lwc": _fmt(lec["hit_ratio"], True),
        },
        {
            "m": "requests ok / failed (timeouts)",
            "nc": f"{c['no_cache']['ok']} / {c['no_cache']['failed']} ({c['no_cache']['timeouts']})",
            "wc": f"{c['with_cache']['ok']} / {c['with_cache']['failed']} ({c['with_cache']['timeouts']})",
        },
    ]
    table = md_table(
        rows,
        ["m", "nc", "wc", "lnc", "lwc"],
        ["", "measured: no cache", "measured: with cache", "lecture: no cache", "lecture: with cache"],
    )
    meta = res.get("meta", {})
    notes = (
        f"Scale: {meta.get('scale', 'full')}. Workload: {meta.get('workload', '')}.\n\n"
        "Utilisation is the downstream byte count of the access link's LAN-side switch interface "
        f"(`{c['with_cache'].get('interface', '?')}`) over the load window after the warm-up, divided by the "
        "link rate; it includes TCP/IP/Ethernet and HTTP header overhead (a few %), which the lecture ignores. "
        "Delay is from sending the GET to the last body byte (the TCP handshake, one more Internet round trip "
        "for a direct fetch, is left out as with a browser's persistent connection); failed and timed-out "
        "requests are counted, not averaged.\n\n"
        "Without a cache the offered load exceeds the link, the queue at the access link holds the excess and "
        'TCP backs off, so delays grow over the run and requests time out: the lecture\'s "minutes". '
        f'Slide 6 prints ".6*2 s + .4*10 ms < 1.3 s" (= {lec["slide6_printed_delay_s"]:.2f} s) with the weights '
        f"swapped; with 60 % hits served in 10 ms it is .6*10 ms + .4*2 s = {lec['mean_delay_with_cache_s']:.2f} s.\n\n"
        f"Each miss put {res.get('wire_bytes_per_object', 0):.0f} bytes on the access link (for a "
        f"{res['parameters']['object_bits'] // 8}-byte object); with that size and the measured hit ratio the "
        f"lecture's formula gives {_fmt(res.get('lecture_with_wire_bytes', {}).get('utilization_with_cache'), True)} "
        "utilisation with the cache."
    )
    write_report(
        out,
        "Caching: the institutional example",
        res,
        [
            ("Result", table),
            ("Plots", "![comparison](comparison.png)\n\n![throughput](link_throughput.png)"),
            ("Notes", notes),
        ],
    )

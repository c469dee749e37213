"""Experiment ``video``: adaptive-bitrate video through the CDN, by each selection method and across a failover.

Every session is the headless DASH player (:mod:`testbed.measure.player`) in a client host, writing its
per-segment log as it plays; the runner only starts players, injects failures and collects the logs.
Four phases on one network (plus, in a full run, one network per extra DNS TTL):

* ``steady`` - per method, every chosen client streams a title of its own (so every method starts from
  cold edge caches, none warms the cache for the next): startup delay, rebuffering, average bitrate.
* ``cache`` - one client streams a fresh title (cold edge), then its neighbour streams the same (warm):
  what a cache hit does to startup delay and to the ABR's choices.
* ``bottleneck`` - a client behind a narrow access link (``bottleneck_mbit``, or a bandwidth trace,
  ``bottleneck_trace``) streams with each ABR policy.
* ``failover`` - one client streams with a small buffer; its serving edge's process is killed mid-stream:
  per method (anycast in ``destination`` and ``affinity`` mode, DNS at each TTL, redirect) the stall it
  caused, the gap from the first failed request to the first segment from another edge, and the retries.

The QoE model is Yin et al.'s linear QoE (SIGCOMM 2015), see :mod:`testbed.measure.qoe`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from experiments.common import emulate, median, nearest_edge
from experiments.failover import settle
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.net.launch import CdnOptions, CdnServices
from testbed.net.spec import Role
from testbed.util import wait_until


class Params(ExperimentParams):
    """``specs/video.yaml`` params."""

    methods: list[Literal["anycast", "dns", "redirect"]] = Field(min_length=1)
    policy: str
    policies: list[str] = Field(min_length=1)
    bitrates_kbps: list[int] = Field(min_length=1)
    segment_s: int = Field(gt=0)
    title_duration_s: int = Field(gt=0)
    max_buffer_s: int = Field(gt=0)
    clients_per_region: int = Field(ge=1)
    bottleneck_client: str
    bottleneck_mbit: float = Field(gt=0)
    bottleneck_trace: str | None
    failover_client: str
    failover_segment_s: int = Field(gt=0)
    failover_buffer_s: int = Field(gt=0)
    failover_at_s: int = Field(ge=0)
    failover_duration_s: int = Field(gt=0)
    anycast_modes: list[Literal["destination", "affinity"]]
    dns_ttls: list[int]
    dns_ttl: int = Field(ge=0)
    health_interval: float = Field(gt=0)
    health_fall: int = Field(ge=1)


SEGMENT_COLUMNS = [
    "phase", "label", "method", "policy", "client", "region", "title", "number", "representation", "bitrate_kbps",
    "bytes", "t_request", "t_first_byte", "t_done", "download_ms", "throughput_kbps", "buffer_s", "stall_s",
    "stall_start", "attempts", "server", "server_ip", "x_cache", "error", "wall",
]


def _titles(p: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """One on-demand title per label (fresh, so cold at every edge), all with the experiment's ladder."""
    out = []
    for label in labels:
        seg = float(p["failover_segment_s"]) if label.startswith("fo-") else float(p["segment_s"])
        out.append({"name": label, "segment_s": seg, "duration_s": float(p["title_duration_s"]) + 60,
                    "bitrates_kbps": list(p["bitrates_kbps"])})
    return out


class Players:
    """Players started in client hosts, each with its own CSV log and JSON summary under the run dir."""

    def __init__(self, cn, svc: CdnServices) -> None:
        self.cn, self.svc = cn, svc
        assert cn.run_dir is not None
        self.dir = cn.run_dir / "players"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def steering(self, client: str, via: str) -> list[str]:
        args = self.svc.steering_args(client, via)
        if args is None:
            raise ValueError(f"{self.cn.topo.name}: this CDN has no {via} service for {client}")
        return args

    def start(self, client: str, via: str, title: str, policy: str, duration: float, max_buffer: float,
              extra: list[str] | None = None) -> dict[str, Any]:
        self.n += 1
        base = self.dir / f"{self.n:03d}-{client}-{via}-{title}"
        cmd = [sys.executable, "-m", "testbed.measure.player", f"/dash/{title}/manifest.mpd", "--via", via,
               *self.steering(client, via), "--policy", policy, "--duration", f"{duration:g}", "--max-buffer",
               f"{max_buffer:g}", "--csv", f"{base}.csv", "--summary", f"{base}.json", *(extra or [])]
        proc = self.cn.popen(client, cmd, role=f"player{self.n}", log_name=f"players/{base.name}.out")
        return {"client": client, "via": via, "title": title, "policy": policy, "proc": proc, "base": base,
                "role": f"player{self.n}"}

    def rows(self, job: dict[str, Any]) -> list[dict[str, str]]:
        p = Path(f"{job['base']}.csv")
        return read_csv(p) if p.exists() else []

    def wait(self, jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Wait for every player; each job gains ``summary`` and ``rows``. A player that did not finish
        or wrote no summary fails the run, naming the client and its log."""
        deadline = time.monotonic() + timeout
        for job in jobs:
            try:
                job["proc"].wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job["proc"].kill()
                job["proc"].wait()
                raise TimeoutError(f"the player on {job['client']} ({job['via']}, {job['title']}) did not finish "
                                   f"within {timeout:.0f} s; see {job['base']}.out") from None
            finally:
                self.cn.procs.pop(f"{job['client']}:{job['role']}", None)
            sp = Path(f"{job['base']}.json")
            if not sp.exists():
                out = Path(f"{job['base']}.out")
                tail = out.read_text()[-800:] if out.exists() else ""
                raise RuntimeError(f"the player on {job['client']} wrote no summary: {tail}")
            job["summary"] = json.loads(sp.read_text())
            job["rows"] = self.rows(job)
        return jobs


def _rows(job: dict[str, Any], phase: str, label: str, cn) -> list[dict[str, Any]]:
    region = cn.topo.host(job["client"]).region
    return [{**row, "phase": phase, "label": label, "method": job["via"], "policy": job["policy"],
             "client": job["client"], "region": region, "title": job["title"]} for row in job["rows"]]


def _session(job: dict[str, Any], phase: str, label: str, cn) -> dict[str, Any]:
    s = job["summary"]
    keys = ("segments", "startup_s", "rebuffer_s", "rebuffer_count", "rebuffer_ratio", "avg_bitrate_kbps",
            "switches", "qoe_per_segment", "failed_attempts", "error")
    hits = sum(1 for r in job["rows"] if r.get("x_cache", "").upper().startswith("HIT"))
    return {"phase": phase, "label": label, "method": job["via"], "policy": job["policy"], "client": job["client"],
            "region": cn.topo.host(job["client"]).region, "title": job["title"], **{k: s.get(k) for k in keys},
            "hit_fraction": round(hits / len(job["rows"]), 3) if job["rows"] else None,
            "servers": "/".join(sorted(s.get("servers", {})))}


def failover_trial(r: Run, cn, svc: CdnServices, players: Players, via: str, label: str, client: str,
                   victim: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stream on ``client`` by ``via``; kill ``victim``'s edge process once ``failover_at_s`` of video is
    in; measure the stall, the service gap and the retries."""
    p = r.params
    title = f"fo-{label.replace('/', '-')}"
    settle(cn, svc, client, via, victim, f"/dash/{title}/manifest.mpd", timeout=float(p["dns_ttl"]) + 30)
    job = players.start(client, via, title, str(p["policy"]), float(p["failover_duration_s"]),
                        float(p["failover_buffer_s"]), ["--give-up", "30"])
    need = int(float(p["failover_at_s"]) / float(p["failover_segment_s"]))
    lead = 0.3  # kill this long before the player's next request: every method meets the dead edge at once
    deadline = time.monotonic() + 60
    while True:
        wait_until(lambda n=need: len(players.rows(job)) >= n or job["proc"].poll() is not None,
                   max(0.1, deadline - time.monotonic()), 0.02, what=f"{client}'s player to have {need} segments")
        if job["proc"].poll() is not None:
            players.wait([job], 5)
            raise RuntimeError(f"failover {label}: the player on {client} ended before the failure: "
                               f"{job['summary'].get('error')}")
        rows = players.rows(job)
        at = next_request_wall(rows[-1], float(p["failover_buffer_s"]), float(p["failover_segment_s"])) - lead
        if at > time.time() + 0.05:
            time.sleep(at - time.time())
            break
        need = len(rows) + 1  # polled too late for this one: aim at the next request
    svc.fail_edge(victim, "process")
    t_fail = time.time()
    try:
        players.wait([job], float(p["failover_duration_s"]) + 90)
    finally:
        svc.recover_edge(victim, "process")
    res = analyse_failover(job, t_fail, victim)
    res.update(label=label, method=via, client=client, victim=victim)
    return res, job


def next_request_wall(row: dict[str, str], max_buffer_s: float, segment_s: float) -> float:
    """When (POSIX time) the player will ask for its next segment, from its last log row: once the buffer
    has room for a segment (the player's rule), the row's session times mapped by its ``wall`` stamp."""
    room_at = float(row["t_done"]) + max(0.0, float(row["buffer_s"]) - (max_buffer_s - segment_s))
    return float(row["wall"]) + room_at - float(row["t_request"])


def analyse_failover(job: dict[str, Any], t_fail: float, victim: str) -> dict[str, Any]:
    """From one session's log around a failure at wall time ``t_fail``: the stall after it, the gap from
    the first failed request to the first segment another edge served, and the failed attempts."""
    s = job["summary"]
    tf = t_fail - float(s["started_wall"])  # the failure on the session's clock
    rows = job["rows"]
    after = [x for x in rows if float(x["t_done"]) > tf]
    stall = sum(float(x["stall_s"]) for x in after if float(x["stall_s"]) > 0)
    stalls = sum(1 for x in after if float(x["stall_s"]) > 0)
    fails = [f for f in s.get("failures", []) if float(f["t"]) >= tf - 0.05]
    moved = next((x for x in after if x["server"] and x["server"] != victim), None)
    gap = None
    if moved is not None:
        gap = float(moved["t_done"]) - float(fails[0]["t"]) if fails else 0.0
    return {"stall_s": round(stall, 3), "stalls": stalls, "gap_s": None if gap is None else round(gap, 3),
            "failed_attempts": len(fails), "new_edge": moved["server"] if moved else "",
            "recovered": moved is not None and not s.get("error"), "error": s.get("error", ""),
            "t_fail_s": round(tf, 3)}


def run(r: Run) -> dict[str, Any]:
    p = r.params
    methods = list(p["methods"])
    ttls = [int(t) for t in p["dns_ttls"]]
    labels = ["warmup", *[f"st-{m}" for m in methods], "cache", *[f"bn-{x}" for x in p["policies"]]]
    fo_plan = []
    for m in methods:
        if m == "anycast":
            fo_plan += [("anycast", f"anycast/{mode}", mode) for mode in p["anycast_modes"]]
        elif m == "dns":
            fo_plan.append(("dns", f"dns/ttl{ttls[0]}", None))
        else:
            fo_plan.append((m, m, None))
    labels += [f"fo-{label.replace('/', '-')}" for _, label, _ in fo_plan]
    labels += [f"fo-dns-ttl{t}" for t in ttls[1:]]
    cdn = CdnOptions(dns_ttl=ttls[0], health_interval=float(p["health_interval"]),
                     health_timeout=float(p["health_interval"]) * 0.8, health_fall=int(p["health_fall"]),
                     video={"titles": _titles(p, labels)})
    topo = r.load_topology()
    bclient = str(p["bottleneck_client"])
    h = topo.host(bclient)
    if p.get("bottleneck_trace"):  # the narrow link's rate follows a bandwidth trace (testbed.net.traces)
        h.link = h.link.model_copy(update={"trace": str(p["bottleneck_trace"]), "bw_mbit": None})
        h.link = type(h.link).model_validate(h.link.model_dump())  # the trace's first rate, checked
    else:
        h.link = h.link.model_copy(update={"bw_mbit": float(p["bottleneck_mbit"])})
    sessions: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = []
    steps = len(methods) + 2 + len(p["policies"]) + len(fo_plan) + len(ttls) - 1
    task = r.step("video sessions", total=steps)

    def keep(job: dict[str, Any], phase: str, label: str) -> None:
        sessions.append(_session(job, phase, label, cn))
        segments.extend(_rows(job, phase, label, cn))

    with emulate(r, cdn, topo=topo) as (cn, svc):
        assert svc is not None
        players = Players(cn, svc)
        per = int(p["clients_per_region"])
        clients: list[str] = []
        for reg in cn.topo.regions:
            mine = [x.name for x in cn.topo.hosts_with(Role.client) if x.region == reg.name and x.name != bclient]
            clients += mine[:per]
        dur, buf = float(p["title_duration_s"]), float(p["max_buffer_s"])
        # warm-up, not kept: the edges' connections to the origin and the emulation's first packets, so the
        # first method measured does not pay for them (each method's own title stays cold)
        seg = float(p["segment_s"])
        players.wait([players.start(c, "anycast", "warmup", "throughput", 2 * seg, buf) for c in clients], 90)
        # steady: every method, every chosen client at once, a fresh title per method
        for m in methods:
            jobs = [players.start(c, m, f"st-{m}", str(p["policy"]), dur, buf) for c in clients]
            for job in players.wait(jobs, dur + 90):
                keep(job, "steady", m)
            ok = [s for s in sessions if s["label"] == m and s["phase"] == "steady"]
            r.figure(f"{m}: stalls", sum(int(s["rebuffer_count"] or 0) for s in ok))
            r.figure(f"{m}: median bitrate kbit/s", median(float(s["avg_bitrate_kbps"]) for s in ok))
            task.advance()
        # cache: a cold edge, then a warm one: two clients of the first region that has two (bottleneck aside)
        fc = str(p["failover_client"])
        by_region: dict[str, list[str]] = {}
        for x in cn.topo.hosts_with(Role.client):
            if x.name != bclient:
                by_region.setdefault(str(x.region), []).append(x.name)
        pair = next((v[:2] for v in by_region.values() if len(v) >= 2), None)
        if pair is None:
            raise ValueError(f"{cn.topo.name}: the cache phase needs a region with two clients besides {bclient}")
        for state, c in zip(("cold", "warm"), pair, strict=True):
            (job,) = players.wait([players.start(c, "anycast", "cache", str(p["policy"]), dur, buf)], dur + 90)
            keep(job, "cache", state)
            task.advance()
        # bottleneck: each policy on the narrow access link (its own title, the same for all: cold first)
        for pol in p["policies"]:
            (job,) = players.wait([players.start(bclient, "anycast", f"bn-{pol}", str(pol), dur, buf)], dur + 120)
            keep(job, "bottleneck", str(pol))
            task.advance()
        # failover: the client's nearest edge dies mid-stream, per method
        victim = nearest_edge(cn, fc, svc.edges)
        for via, label, mode in fo_plan:
            if mode:
                cn.rest("/anycast/mode", "POST", {"mode": mode})
            try:
                res, job = failover_trial(r, cn, svc, players, via, label, fc, victim)
            finally:
                if mode:
                    cn.rest("/anycast/mode", "POST", {"mode": "destination"})
            res["dns_ttl"] = ttls[0] if via == "dns" else None
            trials.append(res)
            keep(job, "failover", label)
            r.figure(f"failover {label}: stall s", res["stall_s"])
            task.advance()
    for ttl in ttls[1:]:
        with emulate(r, replace(cdn, dns_ttl=ttl), topo=topo) as (cn, svc):
            assert svc is not None
            players = Players(cn, svc)
            fc = str(p["failover_client"])
            victim = nearest_edge(cn, fc, svc.edges)
            res, job = failover_trial(r, cn, svc, players, "dns", f"dns/ttl{ttl}", fc, victim)
            res["dns_ttl"] = ttl
            trials.append(res)
            keep(job, "failover", f"dns/ttl{ttl}")
            task.advance()
    r.csv("segments", segments, SEGMENT_COLUMNS)
    r.csv("sessions", sessions)
    r.csv("failover", trials)
    return summarize(sessions, trials, methods)


def summarize(sessions: list[dict[str, Any]], trials: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """``results.json``: per method (steady), the cache pair, per policy (bottleneck), per failover trial."""
    def agg(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "sessions": len(rows),
            "errors": sum(1 for s in rows if s["error"]),
            "stalls": sum(int(s["rebuffer_count"] or 0) for s in rows),
            "rebuffer_s": round(sum(float(s["rebuffer_s"] or 0) for s in rows), 3),
            "startup_s_median": median(float(s["startup_s"]) for s in rows if s["startup_s"] is not None),
            "avg_bitrate_kbps_median": median(float(s["avg_bitrate_kbps"]) for s in rows),
            "switches_median": median(float(s["switches"]) for s in rows),
            "qoe_per_segment_median": median(float(s["qoe_per_segment"]) for s in rows),
        }

    res: dict[str, Any] = {
        "methods": {m: agg([s for s in sessions if s["phase"] == "steady" and s["method"] == m]) for m in methods},
        "cache": {s["label"]: {k: s[k] for k in ("client", "startup_s", "avg_bitrate_kbps", "hit_fraction",
                                                  "rebuffer_count")} for s in sessions if s["phase"] == "cache"},
        "policies": {s["label"]: {k: s[k] for k in ("startup_s", "avg_bitrate_kbps", "switches", "rebuffer_count",
                                                     "rebuffer_s", "qoe_per_segment")}
                     for s in sessions if s["phase"] == "bottleneck"},
        "failover": {t["label"]: {k: t[k] for k in ("method", "stall_s", "stalls", "gap_s", "failed_attempts",
                                                     "new_edge", "recovered", "dns_ttl")} for t in trials},
    }
    res["stalls_without_failure"] = sum(v["stalls"] for v in res["methods"].values()) + sum(
        int(v["rebuffer_count"] or 0) for v in res["cache"].values())
    lines = [f"{'method':<10}{'stalls':>7}{'startup':>10}{'bitrate':>14}{'failover stall':>16}{'gap':>9}"]
    for m, v in res["methods"].items():
        fo = [t for t in trials if t["method"] == m]
        st = f"{max(t['stall_s'] for t in fo):.2f} s" if fo else "-"
        gaps = [t["gap_s"] for t in fo if t["gap_s"] is not None]
        gap = f"{max(gaps):.2f} s" if gaps else "-"
        su = v["startup_s_median"]
        lines.append(f"{m:<10}{v['stalls']:>7}{(f'{su:.2f} s' if su is not None else '-'):>10}"
                     f"{(v['avg_bitrate_kbps_median'] or 0):>9.0f} kb/s{st:>16}{gap:>9}")
    res["summary"] = "\n".join(lines)
    return res


def _bottleneck(params: dict[str, Any]) -> str:
    if params.get("bottleneck_trace"):
        return f"an access link following the bandwidth trace `{params['bottleneck_trace']}`"
    return f"a {params.get('bottleneck_mbit')} Mbit/s access link"


def _buffer_line(rows: list[dict[str, str]], t0: float) -> tuple[list[float], list[float]]:
    """The buffer level over time from the per-segment log: it drains one second per second after each
    arrival, sits at zero while stalled, and jumps by a segment at the next arrival (times minus ``t0``)."""
    xs: list[float] = []
    ys: list[float] = []
    prev_t = prev_b = None
    for x in rows:
        t, b = float(x["t_done"]), float(x["buffer_s"])
        if prev_t is not None and prev_b is not None:
            empty = prev_t + prev_b
            if empty < t:
                xs += [empty - t0, t - t0]
                ys += [0.0, 0.0]
            else:
                xs.append(t - t0)
                ys.append(prev_b - (t - prev_t))
        xs.append(t - t0)
        ys.append(b)
        prev_t, prev_b = t, b
    return xs, ys


def report(out: Path) -> None:
    res = read_results(out)
    segs = read_csv(out / "segments.csv")
    trials = read_csv(out / "failover.csv")
    sessions = read_csv(out / "sessions.csv")
    pyplot = plt()
    fo_labels = [t["label"] for t in trials]
    if fo_labels:
        fig, axes = pyplot.subplots(len(fo_labels), 1, figsize=(9, 1.2 + 1.6 * len(fo_labels)), sharex=True,
                                    squeeze=False)
        for ax, t in zip(axes[:, 0], trials, strict=True):
            mine = [x for x in segs if x["phase"] == "failover" and x["label"] == t["label"]]
            ts = [float(x["t_done"]) - float(t["t_fail_s"]) for x in mine]
            ax.step(ts, [float(x["bitrate_kbps"]) for x in mine], where="post", color="tab:blue", lw=1)
            ax.set_ylabel(f"{t['label']}\nkbit/s", fontsize=7)
            ax2 = ax.twinx()
            bx, by = _buffer_line(mine, float(t["t_fail_s"]))
            ax2.plot(bx, by, color="tab:green", lw=1)
            ax2.set_ylabel("buffer s", fontsize=7, color="tab:green")
            for x in mine:
                if float(x["stall_s"]) > 0:
                    s0 = float(x["stall_start"]) - float(t["t_fail_s"])
                    ax.axvspan(s0, s0 + float(x["stall_s"]), color="tab:red", alpha=0.3)
            ax.axvline(0, color="k", lw=0.8)
        axes[-1, 0].set_xlabel("time since the serving edge was killed (s); red: stalled")
        fig.suptitle("Failover: bitrate (blue), buffer (green) and stalls (red)")
        fig.tight_layout()
        fig.savefig(out / "failover.png", dpi=110)
        pyplot.close(fig)
    bn = [s for s in sessions if s["phase"] == "bottleneck"]
    if bn:
        fig, ax = pyplot.subplots(figsize=(9, 3.2))
        for s in bn:
            mine = [x for x in segs if x["phase"] == "bottleneck" and x["label"] == s["label"]]
            ax.step([float(x["t_done"]) for x in mine], [float(x["bitrate_kbps"]) for x in mine], where="post",
                    label=s["label"])
        ax.set_xlabel("session time (s)")
        ax.set_ylabel("bitrate (kbit/s)")
        ax.legend(fontsize=8)
        ax.set_title("ABR policies behind the bottleneck link")
        fig.tight_layout()
        fig.savefig(out / "bottleneck.png", dpi=110)
        pyplot.close(fig)
    meth = [{"method": m, **v} for m, v in res["methods"].items()]
    params = res.get("meta", {}).get("params", {})
    write_report(out, "Video: adaptive bitrate through anycast, DNS and redirect", res, [
        ("Steady streaming (nothing fails)", md_table(
            meth, ["method", "sessions", "errors", "stalls", "startup_s_median", "avg_bitrate_kbps_median",
                   "switches_median", "qoe_per_segment_median"],
            ["method", "sessions", "errors", "stalls", "startup (s, median)", "bitrate (kbit/s, median)",
             "switches", "QoE per segment"])),
        ("Cold versus warm edge cache", md_table(
            [{"state": k, **v} for k, v in res["cache"].items()],
            ["state", "client", "startup_s", "avg_bitrate_kbps", "hit_fraction", "rebuffer_count"],
            ["edge cache", "client", "startup (s)", "bitrate (kbit/s)", "hits", "stalls"])),
        (f"ABR policies behind {_bottleneck(params)}", md_table(
            [{"policy": k, **v} for k, v in res["policies"].items()],
            ["policy", "startup_s", "avg_bitrate_kbps", "switches", "rebuffer_count", "rebuffer_s",
             "qoe_per_segment"],
            ["policy", "startup (s)", "bitrate (kbit/s)", "switches", "stalls", "stalled (s)", "QoE per segment"])
         + ("\n\n![bottleneck](bottleneck.png)" if bn else "")),
        ("Failover: the serving edge killed mid-stream", md_table(
            [dict(t) for t in trials],
            ["label", "victim", "new_edge", "stall_s", "stalls", "gap_s", "failed_attempts", "recovered"],
            ["method", "edge killed", "then served by", "stalled (s)", "stalls", "gap (s)", "failed requests",
             "recovered"]) + ("\n\n![failover](failover.png)" if fo_labels else "") + (
            f"\n\nThe player's buffer holds {params.get('failover_buffer_s')} s of "
            f"{params.get('failover_segment_s')} s segments, so an outage longer than what is buffered stalls. "
            "The gap runs from the first failed request to the first segment another edge served: anycast "
            "follows the controller's liveness probes, the redirector its health checks, DNS the TTL of the "
            "answer the player holds plus the mapping server's detection.")),
    ])

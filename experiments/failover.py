"""Experiment ``failover``: how fast each server-selection method routes around a dead edge.

The prober is the workload driver with a fixed-interval schedule on one client; the runner injects the
failure and stamps the wall-clock time at which it is *confirmed* (the edge process reaped, the firewall
rule in place, the link down), so the outage is measured against the failure itself:
``outage_ms`` = the first successful fetch that *started* after the failure and was served by *another*
edge, minus the failure time (a fetch the dying edge still answered is not a recovery). A DNS failure lands
just after the client's resolver refilled its cached answer, so the answer naming the dead edge lives a
whole TTL (``ttl_left_ms``): a single trial shows the TTL's cost instead of a chance phase of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from experiments.common import catalog_paths, emulate, nearest_edge, run_drivers, save_samples
from experiments.framework import ExperimentParams, Run, md_table, plt, read_csv, read_results, write_report
from testbed.measure.host_programs import RESOLVER_REFILL
from testbed.net.launch import CdnOptions, CdnServices
from testbed.util import wait_until


class Params(ExperimentParams):
    """``specs/failover.yaml`` params."""

    methods: list[Literal["anycast", "dns", "redirect"]] = Field(min_length=1)
    kinds: list[Literal["process", "host", "link"]] = Field(min_length=1)
    client: str
    interval_ms: int = Field(gt=0)
    before_s: float = Field(ge=0)
    after_s: float = Field(gt=0)
    dns_ttl: int = Field(ge=0)
    dns_ttl_sweep: list[int]
    ttl_violator_min_ttl: int = Field(ge=0)
    redirect_health_sweep: list[float]
    health_interval: float = Field(gt=0)
    health_fall: int = Field(ge=1)
    tcp_connections: int = Field(ge=0)


KILL_LABEL = {"process": "edge process killed", "host": "edge host silenced", "link": "edge access link down"}


def _target(cn, svc: CdnServices, client: str) -> dict[str, Any]:
    return {"vip": cn.topo.anycast[0].vip, "resolver": cn.ip(svc.resolver_for(client)),
            "redirector": cn.ip(svc.redirectors[0])}


def served_by(cn, client: str, via: str, tgt: dict[str, Any], path: str) -> str:
    """Which edge serves ``client`` via ``via`` now ('' on failure) — one curl inside the host."""
    if via == "anycast":
        url = f"http://{tgt['vip']}{path}"
    elif via == "redirect":
        url = f"http://{tgt['redirector']}{path}"
    else:
        ip = cn.host(client).cmd(f"dig +short +time=1 +tries=1 @{tgt['resolver']} www.customer.example A")
        ips = [x for x in ip.split() if x[0].isdigit()]
        if not ips:
            return ""
        url = f"http://{ips[-1]}{path}"
    out = cn.host(client).cmd(f"curl -s -L -m 2 -o /dev/null -D - {url}")
    for line in out.splitlines():
        if line.lower().startswith("x-served-by:"):
            return line.split(":", 1)[1].strip()
    return ""


def analyse(rows: list[dict[str, Any]], t_fail: float, victim: str) -> dict[str, Any]:
    """Outage and failed requests from prober samples around the failure of ``victim`` confirmed at wall
    time ``t_fail``: the outage ends at the first success through another edge."""
    rows = sorted(rows, key=lambda x: x["t"])
    after = [x for x in rows if x["t"] >= t_fail]
    first_ok = next((x for x in after if not x.get("error") and x.get("served_by") != victim), None)
    failed = [x for x in rows if x.get("error") and x["t"] + x["total_ms"] / 1000 >= t_fail]
    outage = (first_ok["t"] - t_fail) * 1000 if first_ok else None
    return {"outage_ms": round(outage, 1) if outage is not None else None, "failed_requests": len(failed),
            "probes": len(rows), "new_edge": first_ok["served_by"] if first_ok else "",
            "recovered": first_ok is not None}


def wait_refill(cn, client: str, resolver: str, timeout: float) -> float | None:
    """Block until the resolver refills its cached answer (seen from ``client``'s namespace, by
    :data:`~testbed.measure.host_programs.RESOLVER_REFILL`); the wall time it was seen, None if not in time."""
    proc = cn.host(client).popen([sys.executable, "-c", RESOLVER_REFILL, resolver, "www.customer.example",
                                  str(timeout)])
    try:
        out, _ = proc.communicate(timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return time.time() if proc.returncode == 0 and out.strip() else None


def trial(r: Run, cn, svc: CdnServices, via: str, kind: str, client: str, victim: str, path: str,
          label: str, dns_ttl_s: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One failure of ``victim`` while a prober on ``client`` fetches through ``via``. For DNS the failure
    waits for the resolver to refill its cached answer (up to one TTL, ``dns_ttl_s``: the effective one,
    after any cache-min-ttl) and lands just after it: the cached answer naming the dead edge then lives a
    whole TTL, as it does for the last client of a population to ask (its phase is otherwise chance, and a
    single trial could not show the TTL's cost); ``ttl_left_ms`` records what was left of it."""
    p = r.params
    tgt = _target(cn, svc, client)
    align_s = float(dns_ttl_s) + 1.0 if via == "dns" else 0.0
    after_s = max(float(p["after_s"]), float(dns_ttl_s) + 3.0) if via == "dns" else float(p["after_s"])
    cfg = {"target": tgt, "probes": [{"via": via, "path": path, "interval_ms": float(p["interval_ms"]),
                                      "duration_s": float(p["before_s"]) + align_s + after_s,
                                      "timeout_s": 1.0}]}
    stamps: dict[str, Any] = {}

    def fail_later() -> None:
        time.sleep(1.0 + float(p["before_s"]))  # run_drivers starts the clients 1 s from now
        if via == "dns":
            stamps["refill"] = wait_refill(cn, client, tgt["resolver"], align_s)
        stamps["issued"] = time.time()
        try:
            svc.fail_edge(victim, kind)  # returns once the failure is in effect
        except Exception as e:  # noqa: BLE001 - reported by the runner below
            stamps["error"] = e
        stamps["confirmed"] = time.time()

    th = threading.Thread(target=fail_later, daemon=True)
    th.start()
    rows = run_drivers(cn, {client: cfg}, timeout=float(p["before_s"]) + align_s + after_s + 30)
    th.join()
    if "error" in stamps:
        raise RuntimeError(f"failover {label}: injecting the failure failed: {stamps['error']}")
    t_fail = stamps["confirmed"]
    res = analyse(rows, t_fail, victim)
    res.update(method=via, kind=kind, victim=victim, label=label,
               inject_ms=round((stamps["confirmed"] - stamps["issued"]) * 1000, 1))
    if via == "dns":
        refill = stamps.get("refill")
        res["ttl_left_ms"] = round((refill + dns_ttl_s - t_fail) * 1000, 1) if refill else None
    for x in rows:
        x.update(method=via, kind=kind, label=label, t_rel_ms=round((x["t"] - t_fail) * 1000, 1))
    svc.recover_edge(victim, kind)
    return res, rows


def settle(cn, svc: CdnServices, client: str, via: str, victim: str, path: str, timeout: float) -> None:
    """Wait until ``client`` is served by ``victim`` again through ``via`` (health recovered, TTL expired)."""
    tgt = _target(cn, svc, client)
    wait_until(lambda: served_by(cn, client, via, tgt, path) == victim, timeout, 0.2,
               what=f"{client} served by {victim} via {via} again")


def held_connections(cn, svc: CdnServices, client: str, victim: str, mode: str, n: int, path: str) -> dict:
    """Open n keep-alive connections to the VIP, drain their member, and count the ones that break."""
    vip = cn.topo.anycast[0].vip
    name = cn.topo.anycast[0].name
    cn.rest("/anycast/mode", "POST", {"mode": mode})
    script = (
        "import socket,sys,time,json\n"
        f"n={n}; vip='{vip}'; path='{path}'\n"
        "req=('GET '+path+' HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n').encode()\n"
        "def ask(s):\n"
        "    s.sendall(req); data=b''\n"
        "    while b'\\r\\n\\r\\n' not in data:\n"
        "        c=s.recv(65536)\n"
        "        if not c: raise ConnectionError('closed')\n"
        "        data+=c\n"
        "    head,_,body=data.partition(b'\\r\\n\\r\\n'); h=head.decode('latin-1').lower()\n"
        "    ln=int(h.split('content-length:')[1].split('\\r\\n')[0]) if 'content-length:' in h else 0\n"
        "    while len(body)<ln:\n"
        "        c=s.recv(65536)\n"
        "        if not c: raise ConnectionError('closed')\n"
        "        body+=c\n"
        "    return h.split('x-served-by:')[1].split('\\r\\n')[0].strip() if 'x-served-by:' in h else ''\n"
        "socks=[socket.create_connection((vip,80),timeout=3) for _ in range(n)]\n"
        "first=[ask(s) for s in socks]\n"
        "print('READY',json.dumps(first),flush=True)\n"
        "sys.stdin.readline()\n"
        "res=[]\n"
        "for s in socks:\n"
        "    try: res.append(ask(s))\n"
        "    except Exception as e: res.append('BROKEN:'+type(e).__name__)\n"
        "print('AFTER',json.dumps(res),flush=True)\n"
    )
    import subprocess
    import sys

    proc = cn.host(client).popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"held connections did not open: {line.strip()} {proc.stdout.read()[:300]}")
        first = json.loads(line.split(" ", 1)[1])
        cn.rest(f"/anycast/{name}/drain/{victim}", "POST", {})
        time.sleep(0.3)  # let the new route settle (flow-mods are asynchronous)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        after = json.loads(proc.stdout.readline().split(" ", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        cn.rest(f"/anycast/{name}/restore/{victim}", "POST", {})
    broken = sum(1 for a in after if a.startswith("BROKEN"))
    return {"mode": mode, "connections": n, "broken": broken, "first_edges": first, "after": after}


def run(r: Run) -> dict[str, Any]:
    p = r.params
    cdn = CdnOptions(dns_ttl=int(p["dns_ttl"]), health_interval=float(p["health_interval"]),
                     health_timeout=float(p["health_interval"]) * 0.8, health_fall=int(p["health_fall"]),
                     catalog={"objects": 100, "seed": r.seed, "size_mu": 8.0})
    trials: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    results: dict[str, Any] = {"methods": {}}
    with emulate(r, cdn) as (cn, svc):
        assert svc is not None
        client = str(p["client"])
        victim = nearest_edge(cn, client, svc.edges)
        path = catalog_paths(cn, svc)[0]
        plan = [(m, k, f"{m}/{k}") for k in p["kinds"] for m in p["methods"]]
        task = r.step("failures", total=len(plan) + len(p["dns_ttl_sweep"]) + len(p.get("redirect_health_sweep", []))
                      + 4)
        for via, kind, label in plan:
            settle(cn, svc, client, via, victim, path, timeout=float(p["dns_ttl"]) + 30)
            res, rows = trial(r, cn, svc, via, kind, client, victim, path, label, int(p["dns_ttl"]))
            trials.append(res)
            samples += rows
            r.figure(f"{label}: outage ms", res["outage_ms"])
            task.advance()
        results["anycast_tcp"] = {}
        if p.get("tcp_connections"):
            for mode in ("destination", "affinity"):
                settle(cn, svc, client, "anycast", victim, path, timeout=30)
                results["anycast_tcp"][mode] = held_connections(cn, svc, client, victim, mode,
                                                                int(p["tcp_connections"]), path)
                task.advance()
            cn.rest("/anycast/mode", "POST", {"mode": "destination"})
    # sweeps: DNS TTLs, a TTL-violating resolver, the redirector's health-check interval; each needs the
    # CDN with other settings, so each builds its own network
    sweeps: list[tuple[str, str, CdnOptions, dict[str, Any]]] = []
    for ttl in p["dns_ttl_sweep"]:
        sweeps.append(("dns", f"dns/ttl{ttl}", replace(cdn, dns_ttl=int(ttl)), {"ttl": ttl, "resolver_min_ttl": 0}))
    if p.get("ttl_violator_min_ttl"):
        mt = int(p["ttl_violator_min_ttl"])
        sweeps.append(("dns", f"dns/ttl{p['dns_ttl']}/min{mt}",
                       replace(cdn, resolver_extra=[f"cache-min-ttl: {mt}"]),
                       {"ttl": p["dns_ttl"], "resolver_min_ttl": mt}))
    for hi in p.get("redirect_health_sweep", []):
        sweeps.append(("redirect", f"redirect/health{hi}", replace(cdn, health_interval=float(hi),
                                                                      health_timeout=float(hi) * 0.8),
                       {"health_interval_s": hi}))
    for via, label, opts, extra in sweeps:
        with emulate(r, opts) as (cn, svc):
            assert svc is not None
            client = str(p["client"])
            victim = nearest_edge(cn, client, svc.edges)
            path = catalog_paths(cn, svc)[0]
            settle(cn, svc, client, via, victim, path, timeout=opts.dns_ttl + 30)
            ttl = max(opts.dns_ttl, int(extra.get("resolver_min_ttl", 0)))  # what the resolver's cache keeps
            res, rows = trial(r, cn, svc, via, "process", client, victim, path, label, ttl)
            res.update(extra)
            trials.append(res)
            samples += rows
            task.advance()
    primary = p["kinds"][0]
    for m in p["methods"]:
        mine = [t for t in trials if t["method"] == m and t["label"] == f"{m}/{primary}"]
        if mine:
            t = mine[0]
            results["methods"][m] = {"outage_ms": t["outage_ms"], "failed_requests": t["failed_requests"],
                                     "kind": primary, "kinds": {x["kind"]: {
                                         "outage_ms": x["outage_ms"], "failed_requests": x["failed_requests"]}
                                         for x in trials if x["method"] == m and x["label"] == f"{m}/{x['kind']}"}}
            if m == "dns":
                results["methods"][m]["ttl_left_ms"] = t.get("ttl_left_ms")
    results["dns_ttl_sweep"] = [{"ttl": t["ttl"], "resolver_min_ttl": t["resolver_min_ttl"],
                                 "outage_ms": t["outage_ms"], "failed_requests": t["failed_requests"],
                                 "ttl_left_ms": t.get("ttl_left_ms")}
                                for t in trials if "ttl" in t]
    results["redirect_health_sweep"] = [{"health_interval_s": t["health_interval_s"], "outage_ms": t["outage_ms"],
                                         "failed_requests": t["failed_requests"]}
                                        for t in trials if "health_interval_s" in t]
    results["params_effective"] = {"dns_ttl_s": p["dns_ttl"], "health_detect_s": p["health_interval"] * p["health_fall"],
                                   "probe_interval_ms": p["interval_ms"]}
    r.csv("trials", trials, columns=list(dict.fromkeys(k for t in trials for k in t)))  # every trial's keys
    save_samples(r, "probes", samples)
    results["summary"] = _summary(results)
    return results


def _summary(res: dict[str, Any]) -> str:
    lines = [f"{'method':<10}{'outage':>10}{'failed':>8}"]
    for m, s in res["methods"].items():
        o = s["outage_ms"]
        lines.append(f"{m:<10}{(f'{o:.0f} ms' if o is not None else 'none'):>10}{s['failed_requests']:>8}")
    for mode, t in res.get("anycast_tcp", {}).items():
        lines.append(f"anycast {mode}: {t['broken']}/{t['connections']} held TCP connections broken by a reroute")
    return "\n".join(lines)


def report(out: Path) -> None:
    res = read_results(out)
    rows = read_csv(out / "probes.csv")
    trials = read_csv(out / "trials.csv")
    pyplot = plt()
    labels = [t["label"] for t in trials]
    fig, axes = pyplot.subplots(len(labels), 1, figsize=(9, 1.3 + 1.1 * len(labels)), sharex=True, squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        mine = [x for x in rows if x["label"] == label]
        edges = sorted({x["served_by"] for x in mine if x["served_by"]})
        for x in mine:
            t = float(x["t_rel_ms"]) / 1000
            if x["error"]:
                ax.plot(t, -1, "rx", ms=3)
            else:
                ax.plot(t, edges.index(x["served_by"]), "b.", ms=3)
        ax.set_yticks([-1, *range(len(edges))], ["fail", *edges])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_ylabel(label, rotation=0, ha="right", fontsize=8)
    axes[-1, 0].set_xlabel("time since the failure (s)")
    fig.suptitle("Which edge answered each probe (red x: failed)")
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=110)
    pyplot.close(fig)
    table = md_table([{"label": t["label"], "victim": t["victim"], "new_edge": t["new_edge"],
                       "outage_ms": float(t["outage_ms"]) if t["outage_ms"] else None,
                       "failed_requests": t["failed_requests"], "probes": t["probes"]} for t in trials],
                     ["label", "victim", "new_edge", "outage_ms", "failed_requests", "probes"],
                     ["method/failure", "edge killed", "then served by", "outage (ms)", "failed", "probes"])
    tcp = res.get("anycast_tcp", {})
    tcp_md = md_table([{"mode": m, **v} for m, v in tcp.items()], ["mode", "connections", "broken"]) if tcp else \
        "(not run)"
    eff = res.get("params_effective", {})
    write_report(out, "Failover: anycast vs DNS vs HTTP redirect", res, [
        ("Outage per method and failure", table + "\n\n![timeline](timeline.png)"),
        ("Sweeps (DNS TTL and TTL-violating resolver; redirector health-check interval)", (
            md_table(res.get("dns_ttl_sweep", []), ["ttl", "resolver_min_ttl", "outage_ms", "failed_requests"],
                     ["TTL (s)", "resolver cache-min-ttl (s)", "outage (ms)", "failed"])
            if res.get("dns_ttl_sweep") else "DNS TTL sweep: not run (quick mode).") + "\n\n" + (
            md_table(res.get("redirect_health_sweep", []), ["health_interval_s", "outage_ms", "failed_requests"],
                     ["health interval (s)", "outage (ms)", "failed"])
            if res.get("redirect_health_sweep") else "Redirector health-interval sweep: not run (quick mode).")),
        ("Anycast and TCP: a reroute while connections are open", tcp_md + (
            "\n\nIn `destination` mode the VIP's route moves to another member, which has no state for the "
            "established connections and answers them with RST — real anycast's weakness (slide 12, 'TCP "
            "can't recover'). In `affinity` mode the controller pins established flows to their member.")),
        ("Reading it", (
            f"* DNS can only fail over once the resolver's cached answer expires: TTL {eff.get('dns_ttl_s')} s "
            f"plus the mapping server's health detection ({eff.get('health_detect_s')} s); a resolver that "
            "stretches TTLs (cache-min-ttl) keeps clients on the dead edge longer (Flavel et al., LANMAN'14).\n"
            f"* The redirector notices within its health-check interval × threshold "
            f"({eff.get('health_detect_s')} s).\n"
            "* Anycast follows the controller's liveness probes (tens of ms); real BGP anycast takes seconds.")),
    ])

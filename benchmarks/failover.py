"""``cdnlab bench failover [--json] [--trials N]``: IP-anycast failover time through the SDN controller.

A topology (``--topo``, default ``mini``) built by the product's own builder with its Ryu controller; each
member of its first anycast service of two or more runs a small HTTP server that answers with its name
(:mod:`testbed.measure.host_programs`). The member the client (``--client``) reaches while all are up is the
one each trial fails. A prober in the client opens a new HTTP connection to the VIP every ~5 ms
(each with its own timeout, so probes overlap). A trial kills the edge (``process``: SIGKILL of its HTTP
server, detected by the controller's TCP-SYN liveness probes as an RST; ``link``: its access link goes
down, detected by port status) and measures the time from the kill to the end of the first successful
request answered by another member. Median and max over the trials of each failure kind and anycast mode
(destination, affinity). Needs root. The last line is JSON with ``anycast_failover_ms_p50``,
``anycast_failover_ms_max``, ``trials`` (and per kind/mode medians, and ``link_detect_ms_p50``: for link
trials, the time from the link going down to the controller handling OVS's port-status, taken from the
controller's event log, i.e. the detection part of the link failover).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBER = r"""
import asyncio, sys, time
vip, port, out, period = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
f = open(out, "a", buffering=1)
async def one():
    t0 = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(vip, port), 0.5)
        w.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 0.5)
        w.close()
        res = data.split(b"\r\n\r\n", 1)[1].decode() if b"\r\n\r\n" in data else "bad"
    except Exception as e:
        res = "err:" + type(e).__name__
    f.write(f"{t0:.6f} {time.monotonic():.6f} {res}\n")
async def main():
    tasks = set()
    while True:
        t = asyncio.ensure_future(one()); tasks.add(t); t.add_done_callback(tasks.discard)
        await asyncio.sleep(period)
asyncio.run(main())
"""


def _read(path: Path) -> list[tuple[float, float, str]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            out.append((float(parts[0]), float(parts[1]), parts[2]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench failover", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="(the last line is always JSON)")
    ap.add_argument("--trials", type=int, default=10, help="trials per failure kind and mode (default 10)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory with the logs")
    ap.add_argument("--period-ms", type=float, default=5.0, help="prober request period (default 5 ms)")
    ap.add_argument("--topo", default="mini",
                    help="topology name or file with an anycast service of two or more members (default mini)")
    ap.add_argument("--client", help="the probing client (default: the topology's first client)")
    args = ap.parse_args(argv)
    from contract.config import ConfigError
    from testbed.measure.host_programs import HTTP_SERVER
    from testbed.net.build import BuildOptions, CdnNet
    from testbed.net.spec import Role, load_topology
    from testbed.util import DeadlineExceeded, wait_until

    try:
        topo = load_topology(args.topo)
    except (ConfigError, FileNotFoundError) as e:
        print(f"cdnlab bench failover: {e}", file=sys.stderr)
        return 2
    service = next((a for a in topo.anycast if len(a.members) >= 2), None)
    clients = [h.name for h in topo.hosts_with(Role.client)]
    client = args.client or (clients[0] if clients else None)
    if service is None or client not in clients:
        print(f"cdnlab bench failover: {args.topo} needs an anycast service of two or more members and the "
              f"client {client!r} (clients: {', '.join(clients) or 'none'})", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("cdnlab bench failover: needs root (Mininet)", file=sys.stderr)
        return 2
    members = list(service.members)
    tmp = Path(tempfile.mkdtemp(prefix="cdnlab-failover-"))
    # the product's builder, with its Ryu controller (routing, anycast, TCP-SYN liveness probes of the VIP port)
    cn = CdnNet(topo, BuildOptions(controller="ryu", run_dir=tmp))
    servers: dict[str, subprocess.Popen] = {}
    results: dict[str, list[float]] = {}
    detect: list[float] = []  # link trials: kill -> the controller handling the port-status (its event log)
    missed_detect = 0  # link trials whose port-status the controller did not log within 5 s

    def healthy(m: str) -> bool:
        return cn.rest("/anycast")["services"][service.name]["members"][m]["healthy"]

    def start(m: str) -> None:
        servers[m] = cn.popen(m, [sys.executable, "-c", HTTP_SERVER, m, str(service.port)], "http")

    try:
        cn.start()
        for m in members:
            start(m)
        wait_until(lambda: all(healthy(m) for m in members), 20, what="every anycast member healthy")
        log = tmp / "prober.txt"
        log.write_text("")
        cn.popen(client, [sys.executable, "-c", PROBER, str(service.vip), str(service.port), str(log),
                          str(args.period_ms / 1000)], "prober")
        wait_until(lambda: any(r in members for _, _, r in _read(log)), 10, what=f"{client} answered")
        # the member the client reaches while all are up (its nearest): the one each trial fails
        victim = next(r for _, _, r in reversed(_read(log)) if r in members)
        switch = topo.host(victim).switch
        print(f"{args.topo}: {client} reaches {service.name} {service.vip} at {victim}; "
              f"failing {victim} ({args.trials} trials per kind and mode)")

        def answered_by(m: str, after: float) -> bool:
            return any(s >= after and r == m for s, _, r in _read(log))

        for mode in ("destination", "affinity"):
            cn.rest("/anycast/mode", "POST", {"mode": mode})
            for kind in ("process", "link"):
                key = f"{mode}/{kind}"
                results[key] = []
                for _ in range(args.trials):
                    t = time.monotonic()
                    wait_until(lambda t=t: answered_by(victim, t), 10, what=f"{victim} serving")
                    t_kill, t_kill_wall = time.monotonic(), time.time()
                    if kind == "process":
                        p = servers.pop(victim)
                        p.kill()
                        p.wait()
                        cn.state.forget_pid(p.pid)  # reaped: cleanup must not signal a reused pid
                    else:
                        cn.net.configLinkStatus(victim, switch, "down")

                    def others(t_kill: float = t_kill) -> list[float]:
                        return [e for _, e, r in _read(log) if e > t_kill and r in members and r != victim]

                    wait_until(lambda: bool(others()), 10, what=f"failover from {victim} to another member")
                    results[key].append((min(others()) - t_kill) * 1000)
                    if kind == "link":
                        # the controller's port-status event; under load OVS may report the carrier loss
                        # after the liveness probes already moved the traffic: wait for it a while
                        def link_down_seen(t_kill_wall: float = t_kill_wall) -> list[float]:
                            return [
                                e["t"]
                                for e in cn.rest("/topology")["events"]
                                if e["t"] >= t_kill_wall and f"{victim} access link down" in e["event"]
                            ]

                        try:
                            seen = wait_until(link_down_seen, 5, what="the controller's port-status")
                            detect.append((min(seen) - t_kill_wall) * 1000)
                        except DeadlineExceeded:
                            missed_detect += 1
                    if kind == "process":
                        start(victim)
                    else:
                        cn.net.configLinkStatus(victim, switch, "up")
                    wait_until(lambda: healthy(victim), 10, what=f"{victim} back")
                xs = results[key]
                print(
                    f"{key:<22} failover ms: p50 {statistics.median(xs):7.1f}  max {max(xs):7.1f}  "
                    f"min {min(xs):7.1f}  (n={len(xs)})"
                )
    finally:
        cn.stop()  # the prober and the servers too: they are the network's tracked processes
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    allx = [x for xs in results.values() for x in xs]
    if not allx:
        return 1
    out = {
        "anycast_failover_ms_p50": round(statistics.median(allx), 2),
        "anycast_failover_ms_max": round(max(allx), 2),
        "trials": len(allx),
        **{f"{k.replace('/', '_')}_ms_p50": round(statistics.median(v), 2) for k, v in results.items()},
    }
    if detect:
        out["link_detect_ms_p50"] = round(statistics.median(detect), 2)
        print(
            f"link down -> port-status handled by the controller: p50 {out['link_detect_ms_p50']} ms, "
            f"max {max(detect):.1f} ms (n={len(detect)}; kernel carrier event + OVS main loop + Ryu)"
        )
    if missed_detect:
        out["link_detect_missed"] = missed_detect
        print(f"link down -> port-status: not logged by the controller within 5 s in {missed_detect} trial(s)")
    print(
        f"all: p50 {out['anycast_failover_ms_p50']} ms, max {out['anycast_failover_ms_max']} ms over {len(allx)} trials"
        f" (probe interval 20 ms, timeout 60 ms, threshold 2; prober period {args.period_ms} ms)"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

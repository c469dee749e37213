"""``cdnlab bench failover [--json] [--trials N]``: IP-anycast failover time through the SDN controller.

A triangle network (controller/examples.py) in Mininet with userspace OVS; client hch1's nearest anycast
member is hch4, the next is hch5. A prober in hch1 opens a new HTTP connection to the VIP every ~5 ms
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
import urllib.request
from pathlib import Path

PROBER = r"""
import asyncio, sys, time
vip, out, period = sys.argv[1], sys.argv[2], float(sys.argv[3])
f = open(out, "a", buffering=1)
async def one():
    t0 = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(vip, 80), 0.5)
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
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory with the logs")
    ap.add_argument("--period-ms", type=float, default=5.0, help="prober request period (default 5 ms)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("cdnlab bench failover: needs root (Mininet)", file=sys.stderr)
        return 2
    from controller.examples import triangle
    from controller.minibuild import HTTP_SERVER, build
    from testbed.util import free_port, stop_process, wait_tcp, wait_until

    tmp = Path(tempfile.mkdtemp(prefix="cdnlab-failover-"))
    rest, of_port = free_port(), free_port()
    view = triangle(rest_port=rest)
    (tmp / "view.json").write_text(json.dumps(view.model_dump(mode="json")))
    ctl = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "--view",
            str(tmp / "view.json"),
            "--of-port",
            str(of_port),
            "--log",
            str(tmp / "controller.log"),
            "--no-lldp",
        ]
    )
    net = None
    servers: dict[str, subprocess.Popen] = {}
    prober = None

    def rest_call(path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{rest}{path}",
            method="GET" if body is None else "POST",
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(req, timeout=3) as r:
            return json.loads(r.read())

    def healthy(m: str) -> bool:
        return rest_call("/anycast")["services"]["web"]["members"][m]["healthy"]

    def start(m: str) -> None:
        servers[m] = net.get(m).popen([sys.executable, "-c", HTTP_SERVER, m, "80"])

    results: dict[str, list[float]] = {}
    detect: list[float] = []  # link trials: kill -> the controller handling the port-status (its event log)
    try:
        wait_tcp("127.0.0.1", rest, timeout=20)
        net = build(view, of_port)
        wait_until(
            lambda: all(s["connected"] for s in rest_call("/topology")["switches"]), 20, what="switches"
        )
        for m in ("hch4", "hch5"):
            start(m)
        wait_until(lambda: healthy("hch4") and healthy("hch5"), 20, what="members healthy")
        log = tmp / "prober.txt"
        log.write_text("")
        prober = net.get("hch1").popen(
            [sys.executable, "-c", PROBER, str(view.anycast[0].vip), str(log), str(args.period_ms / 1000)]
        )

        def answered_by(m: str, after: float) -> bool:
            return any(s >= after and r == m for s, _, r in _read(log))

        for mode in ("destination", "affinity"):
            rest_call("/anycast/mode", {"mode": mode})
            for kind in ("process", "link"):
                key = f"{mode}/{kind}"
                results[key] = []
                for _ in range(args.trials):
                    t = time.monotonic()
                    wait_until(lambda t=t: answered_by("hch4", t), 10, what="hch4 serving")
                    t_kill, t_kill_wall = time.monotonic(), time.time()
                    if kind == "process":
                        servers["hch4"].kill()
                        servers.pop("hch4").wait()
                    else:
                        net.configLinkStatus("hch4", "hc1", "down")
                    wait_until(
                        lambda t_kill=t_kill: any(e > t_kill and r == "hch5" for _, e, r in _read(log)),
                        10,
                        what="failover to hch5",
                    )
                    ends = [e for _, e, r in _read(log) if e > t_kill and r == "hch5"]
                    results[key].append((min(ends) - t_kill) * 1000)
                    if kind == "link":
                        ev = [
                            e["t"]
                            for e in rest_call("/topology")["events"]
                            if e["t"] >= t_kill_wall and "hch4 access link down" in e["event"]
                        ]
                        if ev:
                            detect.append((min(ev) - t_kill_wall) * 1000)
                    if kind == "process":
                        start("hch4")
                    else:
                        net.configLinkStatus("hch4", "hc1", "up")
                    wait_until(lambda: healthy("hch4"), 10, what="hch4 back")
                xs = results[key]
                print(
                    f"{key:<22} failover ms: p50 {statistics.median(xs):7.1f}  max {max(xs):7.1f}  "
                    f"min {min(xs):7.1f}  (n={len(xs)})"
                )
    finally:
        if prober is not None:
            prober.kill()
            prober.wait()
        for p in servers.values():
            p.kill()
            p.wait()
        if net is not None:
            net.stop()
        stop_process(ctl, 10)
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
    print(
        f"all: p50 {out['anycast_failover_ms_p50']} ms, max {out['anycast_failover_ms_max']} ms over {len(allx)} trials"
        f" (probe interval 20 ms, timeout 60 ms, threshold 2; prober period {args.period_ms} ms)"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cdnlab bench dns --json``: queries/s of our low-level mapping DNS server against NSD, both measured
with ``dnsperf`` in the same run with the same query file.

Ours: ``python -m testbed.services.dns`` (low-level role for ``g.cdnlab.net``, GeoByResolver, 4 edges,
health checking off) answering ``aN.g.cdnlab.net A``. Peer: NLnet Labs NSD (``/usr/sbin/nsd -d``) serving
the same names as static A records from a generated zone file, ``server-count: 1``, no remote control,
all its files under a temporary directory. Both listen on free loopback ports; both are stopped at the end.

Two figures for ours: ``qps`` with its answer cache (the names repeat, so this is mostly a lookup), and
``qps_uncached`` with the answer cache off, so every query runs the mapping path. Every reply's RCODE is
counted (dnsperf's "Response codes"); anything but NOERROR, and every query lost (timed out), is a failure,
and a run with failures fails the benchmark (exit 1): its rate would not be of answered queries.
Last line: one JSON object with keys ``qps``, ``qps_uncached``, ``peer_qps``, ``ratio``, ``ratio_uncached``
(targets, reported only: ratio_uncached >= 0.25), ``failures`` (per run) and ``rcodes``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import yaml

from testbed.services.dns import free_dns_port
from testbed.util import wait_until

ZONE = "g.cdnlab.net"
EDGES = [{"name": f"e{i}", "address": f"10.99.0.{i}", "region": "eu"} for i in range(1, 5)]


def answers(port: int, name: str) -> bool:
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.3)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return bool(r.answer)


def start_ours(tmp: Path, port: int, cache_size: int) -> subprocess.Popen[bytes]:
    cfg = {
        "name": "bench-dns",
        "host": "127.0.0.1",
        "port": port,
        "log_file": str(tmp / "ours.log"),
        "log_level": "WARNING",
        "mapping": {"regions": {"eu": ["127.0.0.0/8"]}, "edges": EDGES},
        "health": {"enabled": False},
        "answer_cache_size": cache_size,
        "mapped": {"zone": ZONE, "ttl": 20, "nameservers": [{"name": f"ns1.{ZONE}", "address": "127.0.0.1"}]},
    }
    (tmp / "ours.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "testbed.services.dns", "--config", str(tmp / "ours.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "ours.stderr", "wb"),  # noqa: SIM115 - lives as long as the process
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )


def start_nsd(tmp: Path, port: int, names: list[str]) -> subprocess.Popen[bytes]:
    zone = [
        f"$ORIGIN {ZONE}.",
        "$TTL 20",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 20",
        f"@ IN NS ns1.{ZONE}.",
        "ns1 IN A 127.0.0.1",
    ]
    zone += [f"{n.split('.')[0]} IN A {EDGES[i % len(EDGES)]['address']}" for i, n in enumerate(names)]
    (tmp / f"{ZONE}.zone").write_text("\n".join(zone) + "\n")
    conf = f"""server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{tmp}"
  database: ""
  zonelistfile: "{tmp}/zone.list"
  pidfile: "{tmp}/nsd.pid"
  xfrdfile: "{tmp}/xfrd.state"
  xfrdir: "{tmp}"
  logfile: "{tmp}/nsd.log"
  verbosity: 1
  hide-version: yes
  do-ip6: no
  receive-buffer-size: 4194304
  send-buffer-size: 4194304
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: {ZONE}
  zonefile: {ZONE}.zone
"""
    (tmp / "nsd.conf").write_text(conf)
    chk = subprocess.run(["nsd-checkconf", str(tmp / "nsd.conf")], capture_output=True, text=True)
    if chk.returncode != 0:
        raise RuntimeError(f"nsd.conf rejected: {chk.stderr or chk.stdout}")
    return subprocess.Popen(
        ["nsd", "-d", "-c", str(tmp / "nsd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "nsd.stderr", "wb"),  # noqa: SIM115
        start_new_session=True,
    )


def stop(p: subprocess.Popen[bytes] | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def dnsperf(port: int, qfile: Path, duration: float, clients: int, outstanding: int) -> dict[str, float]:
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-l", str(duration)]
    cmd += ["-c", str(clients), "-q", str(outstanding), "-t", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout

    def num(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(m.group(1)) if m else 0.0

    r: dict[str, Any] = {
        "qps": num("Queries per second"),
        "completed": num("Queries completed"),
        "lost": num("Queries lost"),
        "latency_s": num("Average Latency \\(s\\)"),
        "rcodes": parse_rcodes(out),
    }
    if not r["completed"]:
        raise RuntimeError(f"dnsperf completed no queries on port {port}:\n{out[-1000:]}")
    r["failures"] = int(r["lost"]) + sum(n for code, n in r["rcodes"].items() if code != "NOERROR")
    return r


def parse_rcodes(out: str) -> dict[str, int]:
    """dnsperf's ``Response codes:  NOERROR 1000 (99.90%), SERVFAIL 1 (0.10%)`` as ``{rcode: count}``."""
    m = re.search(r"Response codes:\s+(.*)", out)
    return {code: int(n) for code, n in re.findall(r"([A-Z]+) (\d+) \(", m.group(1))} if m else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench dns", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of dnsperf per server")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--outstanding", type=int, default=100)
    ap.add_argument("--names", type=int, default=100)
    ap.add_argument("--answer-cache-size", type=int, default=50000, help="0: build every answer (slow path)")
    args = ap.parse_args(argv)
    missing = [t for t in ("dnsperf", "nsd", "nsd-checkconf") if not shutil.which(t)]
    if missing:
        print(
            f"cdnlab bench dns: missing {', '.join(missing)} (apt-get install dnsperf nsd)", file=sys.stderr
        )
        return 1
    names = [f"a{i}.{ZONE}" for i in range(args.names)]
    ours = peer = None
    with tempfile.TemporaryDirectory(prefix="cdnlab-bench-dns-") as d:
        tmp = Path(d)
        qfile = tmp / "queries.txt"
        qfile.write_text("".join(f"{n} A\n" for n in names))
        runs: dict[str, dict[str, Any]] = {}
        try:
            for label, cache in (("ours", args.answer_cache_size), ("ours_uncached", 0)):
                port = free_dns_port()
                ours = start_ours(tmp, port, cache)
                wait_until(
                    lambda p=ours, port=port: p.poll() is None and answers(port, names[0]),
                    20,
                    what="our DNS server",
                )
                runs[label] = dnsperf(port, qfile, args.duration, args.clients, args.outstanding)
                stop(ours)
            peer_port = free_dns_port()
            peer = start_nsd(tmp, peer_port, names)
            wait_until(lambda: peer.poll() is None and answers(peer_port, names[0]), 20, what="nsd")
            runs["peer"] = dnsperf(peer_port, qfile, args.duration, args.clients, args.outstanding)
        except RuntimeError as e:
            print(f"cdnlab bench dns: {e}", file=sys.stderr)
            return 1
        finally:
            stop(ours)
            stop(peer)
    r_ours, r_unc, r_peer = runs["ours"], runs["ours_uncached"], runs["peer"]
    ratio = r_ours["qps"] / r_peer["qps"] if r_peer["qps"] else 0.0
    ratio_unc = r_unc["qps"] / r_peer["qps"] if r_peer["qps"] else 0.0
    print(
        f"dnsperf {args.duration:g} s, {args.clients} clients, {args.outstanding} outstanding, {len(names)} names, "
        f"answer cache {args.answer_cache_size} (and 0)"
    )
    print(f"{'server':<30}{'queries/s':>12}{'completed':>12}{'failures':>10}{'avg latency ms':>16}")
    for label, r in (
        ("cdnlab mapping DNS (cached)", r_ours),
        ("cdnlab mapping DNS (uncached)", r_unc),
        ("nsd 4 (static zone)", r_peer),
    ):
        print(
            f"{label:<30}{r['qps']:>12.0f}{r['completed']:>12.0f}{r['failures']:>10}{r['latency_s'] * 1000:>16.2f}"
        )
    print(
        f"ratio {ratio:.3f} cached, {ratio_unc:.3f} uncached (target: uncached >= 0.25, reported not asserted)"
    )
    failures = {k: r["failures"] for k, r in runs.items()}
    print(
        json.dumps(
            {
                "qps": round(r_ours["qps"], 1),
                "qps_uncached": round(r_unc["qps"], 1),
                "peer_qps": round(r_peer["qps"], 1),
                "ratio": round(ratio, 4),
                "ratio_uncached": round(ratio_unc, 4),
                "lost": r_ours["lost"],
                "peer_lost": r_peer["lost"],
                "failures": failures,
                "rcodes": {k: r["rcodes"] for k, r in runs.items()},
                "duration_s": args.duration,
            }
        )
    )
    if any(failures.values()):
        bad = ", ".join(f"{k} {v}" for k, v in failures.items() if v)
        print(
            f"cdnlab bench dns: failed queries ({bad}): the rates are not of answered queries",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

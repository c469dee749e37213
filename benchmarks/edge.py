"""``cdnlab bench edge``: cache-hit throughput of the cdnlab edge vs nginx ``proxy_cache``, same run.

Both proxies front the same cdnlab origin serving N objects of 1 KiB, each with one worker (the edge is a
single asyncio process; nginx runs ``worker_processes 1`` with its usual production settings: sendfile,
``open_file_cache``, long keep-alive), both warmed until every object is a hit (a run whose warm-up does
not reach that fails), both loaded by the same ``wrk`` command cycling over the same object URLs. Each
of ``--runs`` rounds (default 3) loads both, alternating which goes first; the figures are the medians.
A round with any non-2xx answer or socket error fails the benchmark. Prints a small table; the last line
is one JSON object with ``edge_rps``, ``nginx_rps``, ``ratio`` (median edge / median nginx), ``ratios``
(per round), ``edge_p99_ms``, ``nginx_p99_ms``, ``runs`` and ``errors`` (always 0 when it prints).
Everything started here is stopped by its tracked PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.util import free_port, wait_tcp

NGINX = "/usr/sbin/nginx"

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=cdn:10m max_size=256m inactive=60m use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache cdn;
            proxy_cache_lock on;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""

WRK_SCRIPT = """\
local paths = {{{paths}}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def _get(port: int, path: str) -> tuple[int, dict[str, str]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def _warm(port: int, paths: list[str]) -> int:
    """Request every path until it is a hit; return how many answered HIT on the last pass."""
    hits = 0
    for _ in range(3):
        hits = 0
        for p in paths:
            status, h = _get(port, p)
            if status != 200:
                raise RuntimeError(f"warm-up GET {p} on port {port} answered {status}")
            hits += h.get("x-cache") == "HIT"
        if hits == len(paths):
            return hits
    raise RuntimeError(f"warm-up on port {port}: {hits} of {len(paths)} objects are hits after 3 passes")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


class LoadErrors(RuntimeError):
    """wrk saw non-2xx/3xx answers or socket errors: the figures are not of cache hits."""


def parse_wrk(out: str) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) from ``wrk --latency`` output; :class:`LoadErrors` when wrk counted
    non-2xx/3xx responses or socket errors."""
    errors = wrk_errors(out)
    if errors:
        raise LoadErrors(", ".join(f"{k} {v}" for k, v in errors.items()))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not rps or not p99:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return float(rps.group(1)), float(p99.group(1)) * _UNITS[p99.group(2)]


def wrk_errors(out: str) -> dict[str, int]:
    """wrk's error counters that are not zero: ``non-2xx``, ``connect``, ``read``, ``write``, ``timeout``."""
    errors: dict[str, int] = {}
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors["non-2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors.update(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    return {k: v for k, v in errors.items() if v}


def _wrk(port: int, script: Path, args: argparse.Namespace) -> tuple[float, float]:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 30)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed: {p.stderr or p.stdout}")
    return parse_wrk(p.stdout)


class Procs:
    """Processes started by this benchmark, stopped by PID in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        f = log.open("wb")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        f.close()
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench edge", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    ap.add_argument("--duration", type=int, default=3, help="seconds of load per server (default 3)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--objects", type=int, default=100, help="number of 1 KiB objects cycled through")
    ap.add_argument("--runs", type=int, default=3, help="rounds, alternating which server goes first")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    missing = [t for t in ("wrk", NGINX) if not shutil.which(t)]
    if missing:
        print(
            f"cdnlab bench edge: missing {', '.join(missing)} (install wrk and nginx-light)", file=sys.stderr
        )
        return 2
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="cdnlab-bench-edge-") as tmp:
        d = Path(tmp)
        try:
            origin_port, edge_port, nginx_port = free_port(), free_port(), free_port()
            catalog = {
                "seed": 1,
                "objects": args.objects,
                "size_distribution": "fixed",
                "fixed_bytes": 1024,
                "class_weights": {"image": 1.0},
            }
            (d / "origin.json").write_text(
                json.dumps({"name": "bench-origin", "port": origin_port, "catalog": catalog})
            )
            (d / "edge.json").write_text(
                json.dumps(
                    {"name": "bench-edge", "port": edge_port, "origin_url": f"http://127.0.0.1:{origin_port}"}
                )
            )
            for sub in ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp", "cache"):
                (d / sub).mkdir()
            user = "user root root;" if os.geteuid() == 0 else ""
            (d / "nginx.conf").write_text(
                NGINX_CONF.format(d=d, user=user, origin_port=origin_port, port=nginx_port)
            )
            py = sys.executable
            procs.start(
                "origin",
                [py, "-m", "testbed.services.origin", "--config", str(d / "origin.json")],
                d / "o.log",
            )
            procs.start(
                "edge", [py, "-m", "testbed.services.edge", "--config", str(d / "edge.json")], d / "e.log"
            )
            procs.start(
                "nginx",
                [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                d / "n.log",
            )
            for port in (origin_port, edge_port, nginx_port):
                wait_tcp("127.0.0.1", port, timeout=20)
            paths = [f"/img/img{i:04d}.jpg" for i in range(args.objects)]
            (d / "paths.lua").write_text(WRK_SCRIPT.format(paths=", ".join(json.dumps(p) for p in paths)))
            warm = {name: _warm(port, paths) for name, port in (("edge", edge_port), ("nginx", nginx_port))}
            rounds: list[dict[str, tuple[float, float]]] = []
            servers = [("edge", edge_port), ("nginx", nginx_port)]
            for i in range(args.runs):
                order = servers if i % 2 == 0 else servers[::-1]
                rounds.append({name: _wrk(port, d / "paths.lua", args) for name, port in order})
        except LoadErrors as e:
            print(
                f"cdnlab bench edge: requests failed under load ({e}): the figures would not be hits",
                file=sys.stderr,
            )
            return 1
        except (RuntimeError, OSError, TimeoutError, subprocess.SubprocessError) as e:
            print(f"cdnlab bench edge: {e}", file=sys.stderr)
            for name in ("o", "e", "n"):
                log = d / f"{name}.log"
                if log.exists():
                    print(log.read_text()[-2000:], file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    edge_rps = statistics.median(r["edge"][0] for r in rounds)
    nginx_rps = statistics.median(r["nginx"][0] for r in rounds)
    edge_p99 = statistics.median(r["edge"][1] for r in rounds)
    nginx_p99 = statistics.median(r["nginx"][1] for r in rounds)
    ratios = [round(r["edge"][0] / r["nginx"][0], 3) if r["nginx"][0] else 0.0 for r in rounds]
    print(
        f"cache hits of {args.objects} x 1 KiB objects, wrk -t{args.threads} -c{args.connections} -d{args.duration}s,"
        f" median of {args.runs} rounds (order alternated); per-round ratios {ratios}"
    )
    print(f"{'server':<8} {'warm hits':>9} {'req/s':>10} {'p99 ms':>8}")
    print(f"{'edge':<8} {warm['edge']:>9} {edge_rps:>10.0f} {edge_p99:>8.2f}")
    print(f"{'nginx':<8} {warm['nginx']:>9} {nginx_rps:>10.0f} {nginx_p99:>8.2f}")
    ratio = edge_rps / nginx_rps if nginx_rps else 0.0
    print(f"edge / nginx = {ratio:.2f} (target >= 0.5)")
    out = {
        "edge_rps": round(edge_rps, 1),
        "nginx_rps": round(nginx_rps, 1),
        "ratio": round(ratio, 3),
        "edge_p99_ms": round(edge_p99, 3),
        "nginx_p99_ms": round(nginx_p99, 3),
        "ratios": ratios,
        "runs": args.runs,
        "errors": 0,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cdnlab bench dashboard [--topo globe] [--runs 3] --json``: what the live dashboard costs and how fast it
shows a change, on a running CDN.

* **CPU.** The whole machine's busy time (``/proc/stat``) over windows of ``--window-s`` seconds with the
  network idle, alternately with no page watching (the baseline: the dashboard samples nothing then) and
  with one watcher reading the event stream (a plain SSE reader, not a browser, whose own CPU is left out:
  it only reads sockets). ``added_cpu_pct`` is the difference of the medians, in % of one core; the
  dashboard process's own share (its server and sampler threads) is ``server_cpu_pct``.
* **First paint** (with Debian's chromium and Selenium, when installed): from the page's request to the
  graph holding every node of the topology, over ``--runs`` loads.
* **Change on screen.** An edge is failed through the services (as an experiment or the CLI would), and
  the time until the page (or, without a browser, the event stream) shows it failed is measured; the edge
  is recovered before the next run.

Errors are errors, never figures: a service that dies during a window, a watcher that got fewer than half
the states it should, or a page that never shows the change fail the benchmark (exit 1).

Last line: one JSON object with ``idle_cpu_pct``, ``watched_cpu_pct``, ``added_cpu_pct``,
``server_cpu_pct``, ``states_per_s``, ``first_paint_s`` (median; None without a browser),
``change_on_screen_s`` (median), ``per_run`` and ``targets`` (issue #17: first paint <= 2 s, a change on
screen within 1 s, <= 5 % CPU added to an idle globe).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import threading
import time
from typing import Any

from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import load_topology
from testbed.util import wait_until

TARGET_PAINT_S = 2.0
TARGET_CHANGE_S = 1.0
TARGET_ADDED_CPU_PCT = 5.0


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far (proc(5), the ``cpu`` line of ``/proc/stat``)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Watcher:
    """Reads ``/api/events`` (HTTP/1.0, so no chunking) and counts the states and failures it sees."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.states = 0
        self.failed_seen: dict[str, float] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event = None
        try:
            for raw in self.sock.makefile("rb"):
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "state":
                    self.states += 1
                    for e in json.loads(line[6:])["edges"]:
                        if e["health"] == "failed":
                            self.failed_seen.setdefault(e["name"], time.monotonic())
                        else:
                            self.failed_seen.pop(e["name"], None)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def services_alive(cn: CdnNet) -> list[str]:
    return [name for name, p in cn.procs.items() if p.poll() is not None]


def cpu_window(cn: CdnNet, dashboard: Any, watched: bool, seconds: float) -> dict[str, float]:
    w = Watcher(dashboard.port) if watched else None
    try:
        if w is not None:  # the first state: sampling has started
            wait_until(lambda: w.states > 0, 10, 0.05, what="the first state on the event stream")
        b0, t0 = busy_jiffies()
        s0, m0 = self_cpu_s(), time.monotonic()
        states0 = w.states if w else 0
        time.sleep(seconds)
        b1, t1 = busy_jiffies()
        s1, m1 = self_cpu_s(), time.monotonic()
        dead = services_alive(cn)
        if dead:
            raise RuntimeError(f"services died during the window: {', '.join(dead)}")
        ncpu = os.cpu_count() or 1
        out = {
            "cpu_pct": round(100 * ncpu * (b1 - b0) / max(1, t1 - t0), 2),  # % of one core
            "self_cpu_pct": round(100 * (s1 - s0) / (m1 - m0), 2),
        }
        if w is not None:
            out["states_per_s"] = round((w.states - states0) / (m1 - m0), 2)
            if out["states_per_s"] < 0.5 / dashboard.interval_s:
                raise RuntimeError(
                    f"the watcher got {out['states_per_s']} states a second, expected about "
                    f"{1 / dashboard.interval_s:g}"
                )
        return out
    finally:
        if w is not None:
            w.close()


def browser() -> Any:
    """A headless chromium WebDriver, or None (and why) when chromium, its driver or selenium is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed"
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(path, os.X_OK):
            return None, f"{path} is missing"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options), None


def poll_js(drv: Any, expr: str, timeout: float) -> float:
    """Seconds until ``expr`` is true in the page; TimeoutError after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if drv.execute_script(f"return ({expr});"):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - the page is loading
            pass
        time.sleep(0.01)
    raise TimeoutError(f"not true within {timeout} s: {expr}")


def change_on_screen(svc: Any, edge: str, drv: Any, port: int) -> float:
    """Fail ``edge`` through the services; seconds until the page (or, without one, the event stream)
    shows it failed."""
    if drv is not None:
        t0 = time.monotonic()
        svc.fail(edge, "process")
        poll_js(
            drv,
            f"(window.cdnlab.lastState.edges.find(e => e.name === '{edge}') || {{}}).health === 'failed'",
            10,
        )
        return time.monotonic() - t0
    w = Watcher(port)
    try:
        wait_until(lambda: w.states > 0, 10, 0.05, what="the first state")
        t0 = time.monotonic()
        svc.fail(edge, "process")
        wait_until(lambda: edge in w.failed_seen, 10, 0.01, what=f"{edge} failed on the stream")
        return w.failed_seen[edge] - t0
    finally:
        w.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench dashboard", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    ap.add_argument("--topo", default="globe", help="topology name or YAML file (default globe)")
    ap.add_argument(
        "--runs", type=int, default=3, help="windows of each kind, page loads, changes (default 3)"
    )
    ap.add_argument("--window-s", type=float, default=20.0, help="seconds of each CPU window (default 20)")
    ap.add_argument("--quick", action="store_true", help="2 runs of 5 s windows (for tests)")
    ap.add_argument("--no-browser", action="store_true", help="measure at the event stream only")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.window_s = 2, 5.0
    if os.geteuid() != 0:
        print("cdnlab bench dashboard: needs root")
        return 1
    if args.runs < 1 or args.window_s <= 0:
        ap.error("--runs must be >= 1 and --window-s > 0")
    from mininet.log import setLogLevel

    from testbed.net.launch import start_services
    from testbed.web.server import Dashboard

    setLogLevel("warning")
    topo = load_topology(args.topo)
    edge = next((h.name for h in topo.hosts_with("edge")), None)
    if edge is None:
        print(f"cdnlab bench dashboard: {topo.name} has no edge")
        return 1
    n_nodes = len(topo.switches) + len(topo.hosts)
    drv, why = (None, "--no-browser") if args.no_browser else browser()
    runs: list[dict[str, Any]] = []
    try:
        with CdnNet(topo, BuildOptions()) as cn:
            svc = start_services(cn)
            d = Dashboard(port=0)
            d.start()
            d.attach(cn)
            try:
                for i in range(args.runs):
                    row: dict[str, Any] = {"run": i + 1}
                    for watched in (False, True) if i % 2 == 0 else (True, False):
                        w = cpu_window(cn, d, watched, args.window_s)
                        row["watched" if watched else "idle"] = w
                    if drv is not None:
                        t0 = time.monotonic()
                        drv.get(d.url)
                        poll_js(
                            drv,
                            f"window.cdnlab && window.cdnlab.cy && window.cdnlab.cy.nodes().length >= "
                            f"{n_nodes}",
                            30,
                        )
                        row["first_paint_s"] = round(time.monotonic() - t0, 3)
                        poll_js(drv, "window.cdnlab.lastState", 10)
                    try:
                        row["change_on_screen_s"] = round(change_on_screen(svc, edge, drv, d.port), 3)
                    finally:
                        if drv is not None:
                            drv.get("about:blank")  # no page watches during the next idle window
                        svc.recover(edge, "process")
                    runs.append(row)
                    print(
                        f"run {i + 1}: idle {row['idle']['cpu_pct']:.1f} %, watched {row['watched']['cpu_pct']:.1f} % "
                        f"of a core (server {row['watched']['self_cpu_pct']:.1f} %), "
                        f"{row['watched']['states_per_s']:.2f} states/s; first paint "
                        f"{row.get('first_paint_s', '-')} s; change on screen {row['change_on_screen_s']} s",
                        flush=True,
                    )
            finally:
                d.stop()
    except Exception as e:  # noqa: BLE001 - an error of the benchmark, never a figure
        print(f"cdnlab bench dashboard: {type(e).__name__}: {e}")
        return 1
    finally:
        if drv is not None:
            drv.quit()
    med = statistics.median
    idle = med(r["idle"]["cpu_pct"] for r in runs)
    watched = med(r["watched"]["cpu_pct"] for r in runs)
    paint = med(r["first_paint_s"] for r in runs) if drv is not None else None
    change = med(r["change_on_screen_s"] for r in runs)
    result = {
        "topology": topo.name,
        "runs": len(runs),
        "window_s": args.window_s,
        "idle_cpu_pct": round(idle, 2),
        "watched_cpu_pct": round(watched, 2),
        "added_cpu_pct": round(watched - idle, 2),
        "server_cpu_pct": round(med(r["watched"]["self_cpu_pct"] for r in runs), 2),
        "states_per_s": med(r["watched"]["states_per_s"] for r in runs),
        "first_paint_s": paint,
        "change_on_screen_s": change,
        "measured_at": "page" if drv is not None else f"event stream ({why})",
        "per_run": runs,
        "targets": {
            "first_paint_s": {
                "target": TARGET_PAINT_S,
                "met": None if paint is None else paint <= TARGET_PAINT_S,
            },
            "change_on_screen_s": {"target": TARGET_CHANGE_S, "met": change <= TARGET_CHANGE_S},
            "added_cpu_pct": {"target": TARGET_ADDED_CPU_PCT, "met": watched - idle <= TARGET_ADDED_CPU_PCT},
        },
    }
    print(
        f"{topo.name}: dashboard adds {watched - idle:.1f} % of a core (idle {idle:.1f} %, watched {watched:.1f} %); "
        f"first paint {paint if paint is not None else '-'} s; a change on screen in {change:.2f} s"
    )
    print(json.dumps(result))
    return 0

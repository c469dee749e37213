"""``cdnlab demo`` (what ``sudo make demo`` runs): the lecture's three server-selection methods, compared.

Runs the ``selection`` and ``failover`` experiments in quick mode on the ``globe`` topology, then prints
one table — time to first byte and total time, the share of requests served by the nearest edge, and the
outage when an edge dies — and says where the plots and reports are.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from contract.config import ConfigError


def comparison(sel: dict, fo: dict) -> str:
    head = (f"{'method':<10}{'TTFB p50':>10}{'total p50':>11}{'total p95':>11}{'nearest edge':>14}"
            f"{'outage':>10}{'failed':>8}")
    lines = [head, "-" * len(head)]
    for m in ("anycast", "dns", "redirect"):
        s = sel.get("methods", {}).get(m, {})
        f = fo.get("methods", {}).get(m, {})
        outage = f.get("outage_ms")
        lines.append(
            f"{m:<10}{s.get('ttfb_ms_p50') or 0:>8.1f}ms{s.get('total_ms_p50') or 0:>9.1f}ms"
            f"{s.get('total_ms_p95') or 0:>9.1f}ms{100 * (s.get('optimal_edge_fraction') or 0):>13.0f}%"
            f"{(f'{outage:.0f}ms' if outage is not None else '-'):>10}{f.get('failed_requests', '-'):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from experiments.framework import run_experiment

    ap = argparse.ArgumentParser(prog="cdnlab demo", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="default: results/demo-<time>")
    ap.add_argument("--topo", default="globe")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("cdnlab demo: needs root (sudo make demo)", file=sys.stderr)
        return 1
    out = args.out or Path("results") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.monotonic()
    print(f"cdnlab demo: the CDN of lecture slide 9 ({args.topo}): origin in North America, edges in four "
          "regions,\nclients steered by anycast (routing), DNS (naming) and HTTP redirect (application).\n")
    results = {}
    try:
        for name in ("selection", "failover"):
            print(f"== {name} (quick) ...", flush=True)
            if sys.stdout.isatty():
                from rich.progress import Progress

                with Progress(transient=True) as progress:
                    results[name] = run_experiment(name, out / name, quick=True, topology=args.topo,
                                                   progress=progress)
            else:  # a pipe or a log (`make demo | tee log`): plain progress lines, at least every 5 s
                from experiments.progress import LineProgress

                with LineProgress(prefix=name) as lines:
                    results[name] = run_experiment(name, out / name, quick=True, topology=args.topo,
                                                   progress=lines)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as e:
        print(f"cdnlab demo: {e}", file=sys.stderr)
        return 1
    print()
    print(comparison(results["selection"], results["failover"]))
    tcp = results["failover"].get("anycast_tcp", {})
    if tcp:
        print("\nheld TCP connections broken when the anycast route moves: " + ", ".join(
            f"{m} {v['broken']}/{v['connections']}" for m, v in tcp.items()))
    print(f"""
What it shows (lecture slide 12):
  * anycast needs no lookup and no extra round trip, and fails over as fast as the controller notices;
    but a route change resets open TCP connections (destination mode);
  * DNS pays a lookup at the local resolver and fails over only when the cached answer's TTL runs out;
  * a redirect costs an extra exchange with the redirector (on a fresh connection: handshake plus request,
    two round trips), but the redirector sees the client itself.

plots and reports ({time.monotonic() - t0:.0f} s):
  {out}/selection/report.md   {out}/selection/*.png
  {out}/failover/report.md    {out}/failover/timeline.png
rebuild a report from its raw data: cdnlab report {out}/selection""")
    return 0

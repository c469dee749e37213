"""``cdnlab run NAME [--topo T] [--quick] [--out DIR] [--seed N] [--subnet B]``: run an experiment with progress bars."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from contract.config import ConfigError
from testbed.net.up import add_web_arg, servers_arg, start_dashboard


def build_flags(args: argparse.Namespace) -> dict:
    return {"links": args.links, "controller": args.controller, "datapath": args.datapath,
            "verify_links": args.verify_links, "servers": args.servers or None}


def watch(port: int) -> Any:
    """The dashboard of ``--web``: read-only, following each network the experiment builds."""
    from testbed.net.build import NETWORK_LISTENERS

    dashboard = start_dashboard(port)
    NETWORK_LISTENERS.append(dashboard.follow)
    return dashboard


def main(argv: list[str] | None = None) -> int:
    from experiments.framework import list_experiments, run_experiment

    ap = argparse.ArgumentParser(prog="cdnlab run", description=__doc__.strip().split("\n")[0])
    ap.add_argument("name", nargs="?", help="experiment: " + ", ".join(list_experiments()))
    ap.add_argument("--topo", help="topology name or YAML file (default: the experiment's own)")
    ap.add_argument("--quick", action="store_true", help="small and fast (what the test suite runs)")
    ap.add_argument("--out", type=Path, help="output directory (default: results/NAME-<time>)")
    ap.add_argument("--seed", type=int, help="random seed (default: the spec's)")
    ap.add_argument("--subnet", help="renumber the topology into this address block (e.g. 10.200.0.0/16)")
    ap.add_argument("--links", choices=["auto", "netem", "relay"], default="auto")
    ap.add_argument("--controller", choices=["auto", "ryu", "standalone"], default="auto")
    ap.add_argument("--datapath", choices=["auto", "kernel", "user"], default="auto")
    ap.add_argument("--verify-links", action="store_true",
                    help="measure a twin of each link class after the build; stop if one is unlike its spec")
    ap.add_argument("--servers", metavar="A,B,...", type=servers_arg, default=(),
                    help="build each network across these servers (the first is this machine; docs/cluster.md)")
    ap.add_argument("--no-progress", action="store_true")
    add_web_arg(ap)
    args = ap.parse_args(argv)
    if not args.name:
        print("experiments: " + ", ".join(list_experiments()))
        return 0
    out = args.out or Path("results") / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    dashboard = None
    try:
        if args.web is not None:
            dashboard = watch(args.web)

        def run(progress: Any = None) -> dict:
            if dashboard is not None:
                from experiments.progress import WebProgress

                progress = WebProgress(progress, args.name, dashboard.report_experiment)
            return run_experiment(args.name, out, quick=args.quick, seed=args.seed, topology=args.topo,
                                  build=build_flags(args), progress=progress, subnet=args.subnet)

        if args.no_progress:
            results = run()
        elif not sys.stdout.isatty():  # a pipe or a log: plain lines, at least every 5 s
            from experiments.progress import LineProgress

            with LineProgress(prefix=args.name) as lines:
                results = run(lines)
        else:
            from rich.progress import Progress

            with Progress(transient=False) as progress:
                results = run(progress)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (PermissionError, RuntimeError, TimeoutError, OSError) as e:
        print(f"cdnlab run {args.name}: {e}", file=sys.stderr)
        return 1
    finally:
        if dashboard is not None:
            from testbed.net.build import NETWORK_LISTENERS

            NETWORK_LISTENERS.remove(dashboard.follow)
            dashboard.stop()
    summary = results.get("summary")
    if summary:
        print(summary)
    print(f"results: {out}/results.json  report: {out}/report.md")
    return 0

"""``cdnlab up [TOPO]``: build a topology, start the controller and the CDN services, open Mininet's CLI.

The network is always torn down on exit (the CLI's ``exit``, Ctrl-D, an error, SIGTERM); after a SIGKILL
``cdnlab clean`` removes what is left.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from contract.config import ConfigError
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.spec import load_topology


def add_build_args(ap: argparse.ArgumentParser) -> None:
    """The emulation flags shared by ``cdnlab up``, ``cdnlab run`` and benchmarks."""
    ap.add_argument("--links", choices=["auto", "netem", "relay"], default="auto",
                    help="link delay: netem where the kernel has it (auto), or the userspace relay")
    ap.add_argument("--controller", choices=["auto", "ryu", "standalone"], default="auto",
                    help="Ryu SDN controller (auto: if importable) or OVS standalone learning switches")
    ap.add_argument("--datapath", choices=["auto", "kernel", "user"], default="auto",
                    help="Open vSwitch datapath (auto: kernel where the module exists)")
    ap.add_argument("--anycast-mode", choices=["destination", "affinity"], default="destination")
    ap.add_argument("--run-dir", type=Path, help="where logs and generated configs go")
    ap.add_argument("--relay-procs", type=int, default=None, metavar="N",
                    help="userspace relay processes serving the delayed links (default: one per CPU, or "
                    "$CDNLAB_RELAY_PROCS)")
    ap.add_argument("--servers", metavar="A,B,...", type=servers_arg, default=(),
                    help="build across these servers with Mininet Cluster Edition: the first is this machine (the "
                    "controller runs here), the others reached as root over SSH (docs/cluster.md)")
    ap.add_argument("--verify-links", action=argparse.BooleanOptionalAction, default=False,
                    help="after the build, measure a twin of each distinct link class (RTT, rate, queue, "
                    "loss) and stop if one is unlike its spec (default: off; on in the test suite)")


def servers_arg(text: str) -> tuple[str, ...]:
    """``--servers A,B,...`` (testbed.net.placement.parse_servers), as an argparse type."""
    from testbed.net.placement import parse_servers

    try:
        return parse_servers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_web_arg(ap: argparse.ArgumentParser) -> None:
    """``--web [PORT]``, shared by ``cdnlab up`` and ``cdnlab run``."""
    ap.add_argument("--web", nargs="?", type=int, const=-1, default=None, metavar="PORT",
                    help="serve a live dashboard on http://127.0.0.1:PORT/ (default 8080, or a free port when "
                    "8080 is taken), reachable from this machine only, never from the emulated hosts")


def start_dashboard(port: int):
    """Start the dashboard (``port`` -1: the default) and print its URL."""
    from testbed.web.server import Dashboard

    d = Dashboard(port=None if port == -1 else port)
    url = d.start()
    print(f"cdnlab: dashboard on {url} (this machine only; Ctrl-C or `exit` stops it with the network)",
          flush=True)
    return d


def options_from(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(links=args.links, controller=args.controller, datapath=args.datapath,
                        anycast_mode=args.anycast_mode, run_dir=args.run_dir,
                        relay_procs=getattr(args, "relay_procs", None),
                        verify_links=getattr(args, "verify_links", False),
                        servers=tuple(getattr(args, "servers", ()) or ()))


def describe(cn: CdnNet) -> str:
    t = cn.topo
    lines = [
        f"cdnlab: {t.name} is up — {len(t.switches)} switches, {len(t.hosts)} hosts",
        f"  datapath {cn.datapath}, links {cn.link_mode}, controller {cn.controller_mode}"
        + (f" (REST http://127.0.0.1:{cn.rest_port})" if cn.controller_mode == "ryu" else ""),
        f"  logs and configs: {cn.run_dir}",
    ]
    if cn.placement is not None:
        load = cn.placement.load()
        lines.append("  servers: " + ", ".join(f"{s} ({n['switches']} switches, {n['hosts']} hosts)"
                                              for s, n in load.items())
                     + f"; controller on {cn.of_host}")
    for a in t.anycast:
        lines.append(f"  anycast {a.name}: {a.vip}:{a.port} -> {', '.join(a.members)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab up", description=__doc__.strip().split("\n")[0])
    ap.add_argument("topo", nargs="?", default="globe", help="topology name or YAML file (default: globe)")
    add_build_args(ap)
    ap.add_argument("--subnet", help="renumber the topology into this address block (e.g. 10.200.0.0/16), "
                    "when its own overlaps a network of this machine")
    ap.add_argument("--no-services", action="store_true", help="network only: start no CDN processes")
    ap.add_argument("--no-cli", action="store_true", help="build, report and tear down (for scripts); with "
                    "--web: keep the network up, without a CLI, until SIGTERM or Ctrl-C")
    ap.add_argument("--limit", action="append", default=[], metavar="ROLE.FIELD=VALUE",
                    help="a service limit for every service of ROLE, e.g. edge.max_connections=64 or "
                    "dns.tcp_max_connections=16 (repeatable; docs/architecture.md, Limits)")
    add_web_arg(ap)
    args = ap.parse_args(argv)
    limits: dict[str, dict[str, object]] = {}
    try:
        for text in args.limit:
            from testbed.net.launch import parse_limit

            role, name, value = parse_limit(text)
            limits.setdefault(role, {})[name] = value
    except ValueError as e:
        print(f"cdnlab up: {e}", file=sys.stderr)
        return 2
    try:
        topo = load_topology(args.topo, subnet=args.subnet)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # -> finally below -> clean stop
    cn = CdnNet(topo, options_from(args))
    dashboard = None
    try:
        cn.start()
        if not args.no_services:
            try:
                from testbed.net.launch import CdnOptions, start_services
            except ImportError:
                start_services = None
            if start_services is not None:
                start_services(cn, CdnOptions(limits=limits))
        print(describe(cn))
        if args.web is not None:
            dashboard = start_dashboard(args.web)
            dashboard.attach(cn)
        if args.no_cli and dashboard is not None:
            print("cdnlab: the network stays up until SIGTERM or Ctrl-C", flush=True)
            try:
                while True:
                    signal.pause()
            except KeyboardInterrupt:
                print()
        elif not args.no_cli:
            from mininet.log import setLogLevel

            setLogLevel("output")  # show the output of plain Mininet commands (`c1 curl ...`, pingall)
            from testbed.net.cli_cmds import CdnCLI

            CdnCLI(cn)
    except (PermissionError, RuntimeError, TimeoutError) as e:
        print(f"cdnlab up: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the dashboard's port is taken
        print(f"cdnlab up: {e}", file=sys.stderr)
        return 1
    finally:
        if dashboard is not None:
            dashboard.stop()
        t0 = time.monotonic()
        what = teardown_summary(cn)
        if what:
            print(f"cdnlab: stopping {what} ...", flush=True)
        cn.stop()
        if what:
            print(f"cdnlab: stopped in {time.monotonic() - t0:.1f} s; nothing of this run is left", flush=True)
    return 0


def teardown_summary(cn: CdnNet) -> str:
    """What stopping ``cn`` will stop, for the user watching ``exit`` (empty if nothing was built)."""
    if cn.net is None and not cn.procs:
        return ""
    parts = []
    if cn.procs:
        parts.append(f"{len(cn.procs)} service processes")
    if cn.controller_proc is not None:
        parts.append("the controller")
    if cn.net is not None:
        parts.append(f"{len(cn.net.switches)} switches, {len(cn.net.hosts)} hosts and {len(cn.net.links)} links")
    return f"{cn.topo.name}: " + ", ".join(parts)

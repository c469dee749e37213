"""``cdnlab topo``: list, show and validate topology specs; import Topology Zoo GraphML files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from contract.config import ConfigError
from testbed.net.graphml import import_graphml
from testbed.net.spec import DEFAULT_SUBNET, list_topologies, load_topology, parse_topology


def _show(name: str, subnet: str | None = None) -> int:
    t = load_topology(name, subnet=subnet)
    print(f"{t.name}: {t.description}")
    print(f"  {len(t.switches)} switches, {len(t.hosts)} hosts, {len(t.links)} backbone links"
          f"{' (cyclic)' if t.has_cycle() else ''}")
    addrs = t.addresses()
    for h in t.hosts:
        print(f"  {h.name:<10} {h.role.value:<10} {h.region or '-':<6} {addrs[h.name]:<15} on {h.switch}"
              f" ({h.link.delay_ms:g} ms)")
    for ln in t.links:
        bw = f", {ln.bw_mbit:g} Mbit/s" if ln.bw_mbit else ""
        print(f"  {ln.a} -- {ln.b}: {ln.delay_ms:g} ms{bw}")
    for a in t.anycast:
        print(f"  anycast {a.name} {a.vip}:{a.port} -> {', '.join(a.members)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab topo", description=__doc__.strip().split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="shipped topologies")
    sp = sub.add_parser("show", help="hosts, links and delays of a topology")
    sp.add_argument("name")
    sp.add_argument("--subnet", help="show it renumbered into this block, as `cdnlab up --subnet` runs it")
    vp = sub.add_parser("validate", help="validate spec files; errors name the file and field")
    vp.add_argument("files", nargs="+")
    ip = sub.add_parser("import", help="convert an Internet Topology Zoo GraphML file into a spec")
    ip.add_argument("graphml")
    ip.add_argument("--edges", type=int, default=3, help="number of CDN edges to place (k-center)")
    ip.add_argument("--name", help="topology name (default: from the file name)")
    ip.add_argument("-o", "--out", help="write the YAML spec here (default: stdout)")
    ip.add_argument("--subnet", default=DEFAULT_SUBNET,
                    help=f"address block the hosts are numbered from (default {DEFAULT_SUBNET})")
    ip.add_argument("--regions", type=int, default=4,
                    help="at most this many regions, each with its own resolver: from the graph's Country "
                         "or Continent, else clusters on delay (default 4)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for n in list_topologies():
                t = load_topology(n)
                print(f"{n:<15} {len(t.hosts):>3} hosts  {t.description}")
            return 0
        if args.cmd == "show":
            return _show(args.name, args.subnet)
        if args.cmd == "validate":
            bad = 0
            for f in args.files:
                try:
                    load_topology(f)
                    print(f"{f}: ok")
                except ConfigError as e:
                    print(e, file=sys.stderr)
                    bad += 1
            return 1 if bad else 0
        if args.cmd == "import":
            spec = import_graphml(args.graphml, edges=args.edges, name=args.name, subnet=args.subnet,
                                  regions=args.regions)
            parse_topology(spec, args.graphml)  # the result must itself be a valid spec
            text = yaml.safe_dump(spec, sort_keys=False, width=110)
            if args.out:
                Path(args.out).write_text(text)
                print(f"wrote {args.out}: {len(spec['switches'])} switches, {len(spec['hosts'])} hosts")
            else:
                print(text, end="")
            return 0
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    return 2

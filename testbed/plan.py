"""What will run where, before anything runs: a topology's plan (spec -> **plan** -> network + services).

:func:`make_plan` turns a validated topology and the run's options into a :class:`CdnPlan`: every host's
address, MAC and switch port, every switch's DPID, the network view the controller is handed
(:mod:`contract.netview`) and the config of every service process, each checked against the service's own
pydantic model. Nothing is built, nothing is started and no root is needed. The network's half is a
:class:`~testbed.net.net_plan.NetPlan` (the builder, ``CdnNet``, is one carried out: Mininet's port numbers are
known in advance, :func:`~testbed.net.net_plan.port_numbers`, and the builder checks the network it built
against them); the services' half is a :class:`~testbed.net.service_plan.ServicePlan` (the launcher,
``CdnServices``, is one carried out).

``cdnlab plan TOPO --out DIR`` writes the plan for teaching ("what will run where") and for review:
``DIR/netview.json``, ``DIR/configs/<host>-<role>.json`` (exactly what each service would be given) and
``DIR/plan.json`` (hosts, switches, links, the multicast sessions, and services with their start stage).
The keys in the configs (multicast HMAC key, management token) are fresh, as a real run's are; a run
makes its own; ``plan.json`` holds no key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.config import ConfigError
from testbed.net.mcast_plan import McastPlan
from testbed.net.net_plan import BuildOptions, NetPlan, port_numbers
from testbed.net.placement import Placement, parse_servers
from testbed.net.service_plan import CdnOptions, PlannedService, ServicePlan
from testbed.net.spec import Topology


@dataclass
class CdnPlan:
    """Every address, port and config of one run of a topology, before it runs."""

    topology: Topology
    netview: dict[str, Any]
    services: list[PlannedService] = field(default_factory=list)
    #: the run's multicast sessions and key (testbed.net.mcast_plan): the copy the view and configs are from
    mcast: McastPlan | None = None
    #: which server each switch and host runs on, when the run spans several (testbed.net.placement)
    placement: Placement | None = None

    def summary(self) -> dict[str, Any]:
        """``plan.json``: hosts (address, MAC, switch and port), switches (DPID), links, anycast services,
        the multicast sessions (group, port, session id; the key is in the configs only) and services."""
        t = self.topology
        ports = port_numbers(t)
        view_hosts = {h["name"]: h for h in self.netview["hosts"]}
        return {
            "topology": t.name,
            "subnet": t.subnet,
            "hosts": [
                {
                    "name": h.name,
                    "role": h.role.value,
                    "region": h.region,
                    "ip": view_hosts[h.name]["ip"],
                    "mac": view_hosts[h.name]["mac"],
                    "switch": h.switch,
                    "switch_port": ports[(h.switch, h.name)],
                    "delay_ms": h.link.delay_ms,
                }
                for h in t.hosts
            ],
            "switches": [{"name": s["name"], "dpid": s["dpid"]} for s in self.netview["switches"]],
            "links": self.netview["links"],
            "anycast": [
                {"name": a["name"], "vip": a["vip"], "members": a["members"]} for a in self.netview["anycast"]
            ],
            "multicast": {
                name: ({"group": s.group, "port": s.port, "session_id": s.session_id} if s else None)
                for name, s in (("ingest", self.mcast.ingest), ("control", self.mcast.control))
            } if self.mcast else None,
            "services": [
                {
                    "host": s.host,
                    "role": s.role,
                    "module": s.module,
                    "stage": s.stage,
                    "config": f"configs/{s.config_name}",
                }
                for s in sorted(self.services, key=lambda s: (s.stage, s.host))
            ],
            "placement": self.placement.summary() if self.placement else None,
        }

    def write(self, out: Path) -> list[Path]:
        """Write ``netview.json``, ``plan.json`` and ``configs/*.json`` under ``out``; the paths written."""
        (out / "configs").mkdir(parents=True, exist_ok=True)
        written = [out / "netview.json", out / "plan.json"]
        written[0].write_text(json.dumps(self.netview, indent=1) + "\n")
        written[1].write_text(json.dumps(self.summary(), indent=1) + "\n")
        for s in self.services:
            p = out / "configs" / s.config_name
            p.write_text(s.config.model_dump_json(indent=1) + "\n")
            p.chmod(0o600)  # it holds the plan's keys
            written.append(p)
        return written


def make_plan(
    topo: Topology,
    build: BuildOptions | None = None,
    cdn: CdnOptions | None = None,
    run_dir: Path | None = None,
    servers: tuple[str, ...] | None = None,
) -> CdnPlan:
    """The plan of ``topo`` under ``build`` and ``cdn`` options, for a run in ``run_dir`` (where its configs
    send logs; default ``/tmp/cdnlab/<topology>``), placed on ``servers`` when given (which server runs
    which switch and host: :mod:`testbed.net.placement`). Pure: no root, no Mininet, nothing written."""
    run_dir = run_dir or Path("/tmp/cdnlab") / topo.name
    build = dataclasses.replace(build or BuildOptions(), run_dir=run_dir)  # the caller's options unchanged
    if servers:
        build = dataclasses.replace(build, servers=tuple(servers))
    net = NetPlan(topo, build)  # addresses, MACs, DPIDs, ports, multicast: what the builder carries out
    services = ServicePlan(topo, net.ip, run_dir, cdn, net.mcast).services()  # what the launcher carries out
    view = net.netview()
    view.pop("rest_port", None)  # a free port chosen when the controller starts (the schema's default here)
    return CdnPlan(topo, view, services, net.mcast, net.placement)


def _table(plan: CdnPlan, out: Path) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    s = plan.summary()
    hosts = {h["name"]: h for h in s["hosts"]}
    table = Table(title=f"{plan.topology.name}: what will run where", title_justify="left")
    placed = plan.placement.host_server if plan.placement else None
    for col in ("stage", "host", "role", "address", "switch:port", *(("server",) if placed else ()), "process",
                "config"):
        table.add_column(col)
    for row in s["services"]:
        h = hosts[row["host"]]
        table.add_row(
            str(row["stage"]),
            row["host"],
            row["role"],
            h["ip"],
            f"{h['switch']}:{h['switch_port']}",
            *((placed[row["host"]],) if placed else ()),
            row["module"],
            str(out / row["config"]),
        )
    buf = StringIO()
    Console(file=buf, width=160).print(table)
    clients = [h for h in s["hosts"] if h["role"] == "client"]
    text = buf.getvalue() + (
        f"{len(clients)} clients, {len(s['switches'])} switches, {len(s['links'])} "
        f"switch links; the controller's view: {out / 'netview.json'}"
    )
    if plan.placement:
        p = plan.placement
        loads = ", ".join(f"{srv}: {n['switches']} switches, {n['hosts']} hosts" for srv, n in p.load().items())
        cut = ", ".join(f"{a}-{b} ({d:g} ms)" for a, b, d in p.cut) or "none"
        text += f"\nplacement on {len(p.servers)} servers: {loads}; links between servers: {cut}"
    return text


def main(argv: list[str] | None = None) -> int:
    from testbed.net.spec import load_topology

    ap = argparse.ArgumentParser(prog="cdnlab plan", description=__doc__.strip().split("\n")[0])
    ap.add_argument("topo", help="topology name or YAML file")
    ap.add_argument("--out", type=Path, required=True, help="directory to write the plan to")
    ap.add_argument("--subnet", help="renumber the topology into this address block (as cdnlab up --subnet)")
    ap.add_argument("--anycast-mode", choices=["destination", "affinity"], default="destination")
    ap.add_argument("--servers", metavar="A,B,...",
                    help="place the run on these servers: which switch and host runs where (plan.json 'placement')")
    ap.add_argument("--json", action="store_true", help="print plan.json instead of the table")
    args = ap.parse_args(argv)
    try:
        topo = load_topology(args.topo, subnet=args.subnet)
        out = args.out.resolve()
        servers = parse_servers(args.servers) if args.servers is not None else None
        plan = make_plan(topo, BuildOptions(anycast_mode=args.anycast_mode), run_dir=out, servers=servers)
    except (ConfigError, ValueError) as e:
        print(f"cdnlab plan: {e}", file=sys.stderr)
        return 2
    if out.exists() and not out.is_dir():
        print(f"cdnlab plan: {out} exists and is not a directory", file=sys.stderr)
        return 2
    plan.write(out)
    print(json.dumps(plan.summary(), indent=1) if args.json else _table(plan, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

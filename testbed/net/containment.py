"""Keeping emulated traffic inside the emulation.

An emulated network shares one kernel with the machine that runs it. A packet for an emulated address
sent from the machine's *root* namespace (a command run on the wrong node, a name that resolves to
Mininet's controller ``c0``) does not reach the emulation: the root namespace has no route into it, so
the packet follows the default route out of the machine's real uplink. Three defences, each testable:

* **Commands run in hosts.** :func:`require_namespaced` refuses to hand out a node that is not a host in
  its own network namespace; every host command of the builder, services, experiments and CLI goes
  through it (``CdnNet.host``).
* **Misdirected packets die locally.** While a network is up, the root namespace carries an
  ``unreachable`` route for every block the topology uses (:meth:`Topology.networks`), so a stray packet
  fails at once with "No route to host" instead of leaving. Each run adds its own routes (protocol
  :data:`ROUTE_PROTO`, a metric of its own, so runs of the same topology coexist), records them in its
  run state, and removes exactly those on stop or in ``cdnlab clean``.
* **No confusion with real networks.** A topology whose blocks overlap a network on one of the machine's
  own interfaces is refused before anything is built (:func:`overlap_errors`): Vagrant's VirtualBox NAT
  is 10.0.2.0/24, and an emulated 10.0.0.0/16 would hide or be hidden by it. ``--subnet`` moves a topology
  elsewhere (:func:`suggest_subnet` proposes a free block).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: the ``proto`` of the root-namespace routes cdnlab adds (0xcd: "cdn"); ``ip route show proto 205``
ROUTE_PROTO = 205
#: networks VMs and containers usually put on a machine; shipped topologies and suggestions avoid them
USUAL_MACHINE_NETWORKS: dict[str, str] = {
    "10.0.2.0/24": "VirtualBox NAT (Vagrant's default VM network)",
    "172.17.0.0/16": "Docker's default bridge",
    "192.168.121.0/24": "vagrant-libvirt's management network",
    "192.168.122.0/24": "libvirt's default network",
}


class NamespaceError(RuntimeError):
    """A host command was about to run outside that host's own network namespace."""


def require_namespaced(node, name: str):
    """``node`` if it is an emulated host in a namespace of its own; NamespaceError otherwise.

    Mininet's controller node (``c0``) and OVS switches run in the root namespace: a command "on" them
    runs on the machine itself, and its packets for emulated addresses leave through the real uplink.
    """
    if node is None:
        raise NamespaceError(f"no host named {name!r} in this network")
    if not getattr(node, "inNamespace", False):
        kind = type(node).__name__
        raise NamespaceError(
            f"{name!r} is not an emulated host ({kind} in the machine's root namespace): a command there "
            "would send its packets out of the machine's real interfaces, so cdnlab does not run it")
    return node


# -- address blocks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MachineNetwork:
    interface: str
    network: ipaddress.IPv4Network


def machine_networks(ip_cmd: Sequence[str] = ("ip",)) -> list[MachineNetwork]:
    """IPv4 networks on the root namespace's interfaces (loopback excluded), from ``ip -j addr``."""
    out = subprocess.run([*ip_cmd, "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    nets: list[MachineNetwork] = []
    for link in json.loads(out or "[]"):
        if "LOOPBACK" in link.get("flags", []):
            continue
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                net = ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
                nets.append(MachineNetwork(link["ifname"], net))
    return nets


def overlap_errors(name: str, networks: Iterable[ipaddress.IPv4Network],
                   machine: Iterable[MachineNetwork]) -> list[str]:
    """One message per overlap between a topology's blocks and the machine's own networks (pure)."""
    machine = list(machine)
    errs = []
    for net in networks:
        for m in machine:
            if net.overlaps(m.network):
                errs.append(f"topology {name}: {net} overlaps {m.network} on {m.interface}, one of this "
                            "machine's own networks; emulated and real addresses would be confused")
    return errs


def suggest_subnet(prefixlen: int, avoid: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network | None:
    """The first block of ``prefixlen`` in 10.0.0.0/8 that overlaps nothing in ``avoid`` nor the usual VM
    and container networks; None when there is none."""
    taken = [*avoid, *(ipaddress.IPv4Network(n) for n in USUAL_MACHINE_NETWORKS)]
    for cand in ipaddress.IPv4Network("10.0.0.0/8").subnets(new_prefix=max(prefixlen, 8)):
        if cand.network_address.packed[1] < 100:
            continue  # leave 10.0-99 to the shipped topologies, which number from there
        if not any(cand.overlaps(t) for t in taken):
            return cand
    return None


def check_no_overlap(topo, machine: Iterable[MachineNetwork] | None = None) -> None:
    """Raise RuntimeError naming both networks (and a ``--subnet`` that would work) on any overlap."""
    machine = machine_networks() if machine is None else list(machine)
    errs = overlap_errors(topo.name, topo.networks(), machine)
    if errs:
        sub = ipaddress.IPv4Network(topo.subnet)
        free = suggest_subnet(sub.prefixlen, [m.network for m in machine])
        hint = f"; move it with --subnet {free}" if free else "; move it with --subnet"
        raise RuntimeError("\n".join(errs) + hint)


# -- root-namespace routes ---------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class GuardRoute:
    """One ``unreachable`` route in the root namespace (as recorded in the run state)."""

    dst: str
    metric: int

    def spec(self) -> list[str]:
        return ["unreachable", self.dst, "metric", str(self.metric), "proto", str(ROUTE_PROTO)]


def add_guard_routes(networks: Iterable[ipaddress.IPv4Network], ip_cmd: Sequence[str] = ("ip",),
                     first_metric: int = 4000, tries: int = 1000) -> list[GuardRoute]:
    """Add an ``unreachable`` route for each network, each at a metric no other run holds for it.

    ``ip route add`` is atomic and fails with "File exists" when another run took that metric, so
    concurrent runs of the same topology each get their own route and remove only their own.
    """
    added: list[GuardRoute] = []
    try:
        for net in networks:
            for metric in range(first_metric, first_metric + tries):
                r = GuardRoute(str(net), metric)
                p = subprocess.run([*ip_cmd, "route", "add", *r.spec()], capture_output=True, text=True,
                                   timeout=10)
                if p.returncode == 0:
                    added.append(r)
                    break
                if "File exists" not in p.stderr:
                    raise RuntimeError(f"cannot add the guard route {' '.join(r.spec())}: {p.stderr.strip()}")
            else:
                raise RuntimeError(f"no free metric for a guard route to {net} ({tries} tried)")
    except BaseException:
        remove_guard_routes(added, ip_cmd)
        raise
    return added


def guard_routes(ip_cmd: Sequence[str] = ("ip",)) -> list[GuardRoute]:
    """Every guard route present (any run's), from ``ip -j route show proto 205``."""
    out = subprocess.run([*ip_cmd, "-j", "route", "show", "proto", str(ROUTE_PROTO)], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return sorted(GuardRoute(str(ipaddress.IPv4Network(r["dst"])), int(r.get("metric", 0)))
                  for r in json.loads(out or "[]") if r.get("type") == "unreachable")


def remove_guard_routes(routes: Iterable[GuardRoute], ip_cmd: Sequence[str] = ("ip",)) -> list[GuardRoute]:
    """Delete exactly these routes; returns those that were there."""
    gone = []
    for r in routes:
        p = subprocess.run([*ip_cmd, "route", "del", *r.spec()], capture_output=True, text=True, timeout=10)
        if p.returncode == 0:
            gone.append(r)
    return gone


def taken_switch_errors(topo_name: str, switches: list[str], bridges: set[str], runs: list[tuple[str, list[str], bool]]
                        ) -> list[str]:
    """Switches of ``topo_name`` whose names an Open vSwitch bridge on this machine already has (pure).

    Bridge names are global to a machine, so a second network of the same topology (``cdnlab up globe``
    while ``cdnlab run selection`` builds globe) would fail half-built with "RTNETLINK answers: File
    exists". ``runs`` are (run id, its bridges, whether its owner still runs) from the run records;
    each message names the run that holds the name and what to do.
    """
    errs = []
    for sw in switches:
        if sw not in bridges:
            continue
        owner = next(((rid, alive) for rid, brs, alive in runs if sw in brs), None)
        if owner is None:
            why = "an Open vSwitch bridge of that name exists, made by something other than cdnlab"
            fix = f"remove it (`ovs-vsctl del-br {sw}`) if it is yours to remove"
        elif owner[1]:
            why = f"it belongs to run {owner[0]}, which is still running"
            fix = "stop that run first (`exit` its CLI, or wait for its experiment)"
        else:
            why = f"it was left by run {owner[0]}, which died"
            fix = "run `sudo cdnlab clean`"
        errs.append(f"topology {topo_name}: switch {sw!r} is taken: {why}; {fix}. Two networks cannot share "
                    f"switch names")
    return errs


def check_switch_names_free(topo: Any, list_bridges: Callable[[], set[str]] | None = None) -> None:
    """Refuse to build ``topo`` when a switch name is already an OVS bridge here (RuntimeError, naming the
    run that holds it; see :func:`taken_switch_errors`)."""
    from testbed.net.state import all_states, owner_alive

    if list_bridges is None:
        def list_bridges() -> set[str]:
            r = subprocess.run(["ovs-vsctl", "--timeout=10", "list-br"], capture_output=True, text=True)
            return set(r.stdout.split())

    runs = [(st.run_id, list(st.bridges), owner_alive(st)) for st in all_states()]
    errs = taken_switch_errors(topo.name, [s.name for s in topo.switches], list_bridges(), runs)
    if errs:
        raise RuntimeError("\n".join(errs[:3]) + (f"\n(and {len(errs) - 3} more)" if len(errs) > 3 else ""))

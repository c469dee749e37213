"""``cdnlab doctor [--json]``: is this machine ready to emulate a CDN, and what fixes what is missing.

Checks: root, Open vSwitch running and the datapath cdnlab will use (kernel or user), netem, whether the
link relays may take real-time priority (SCHED_FIFO; ``relay_realtime``), the relays of networks running
now (``relays``: their counters, late frames, queue drops, send errors, socket drops) or their netem links
(``netem_links``: the kernel's ``tc -s`` counters), Mininet,
Ryu (importable through the adapter, and its version), scapy, unbound, the tools experiments call, and
whether a shipped topology's addresses clash with a network of this machine (then it needs ``--subnet``).
With ``--json`` the last printed line is one JSON object with at least ``root``, ``ovs_running``,
``ovs_datapath``, ``netem``, ``ryu_version``, ``address_clashes`` (topology -> the ``--subnet`` to use).

``--servers A,B`` also checks the servers of a run across several (testbed.net.servers): each reached over
SSH as root without a password, its Mininet and Open vSwitch, the link emulation and datapath it would use,
and its clock's offset from this machine's; then whether they agree (the same Mininet, one link emulation,
clocks within 1 ms). ``servers`` in the JSON: each server's facts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from testbed.net import host_env, netem_watch, relay_watch, servers

SETUP = "sudo make setup"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _module_version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return None


RYU_PROBE = """
import warnings
warnings.filterwarnings("ignore", message=".*[Ee]ventlet.*")
import controller.ryu_adapter
from importlib.metadata import version
try:
    print(version(controller.ryu_adapter.FRAMEWORK.replace("_", "-")))
except Exception:
    print("unknown")
"""


def _ryu_version() -> tuple[str | None, str]:
    """The OpenFlow framework's version if it imports through the controller's adapter (with the eventlet
    compatibility shim), else (None, why). Asked in a child process: the testbed never imports the
    controller."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", RYU_PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{type(e).__name__}: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return None, last
    return r.stdout.strip() or "unknown", "imports with the eventlet compatibility shim"


def netem_check() -> bool:
    try:
        from testbed.net.links import netem_available
    except ImportError:
        return False
    try:
        return bool(netem_available())
    except Exception:  # noqa: BLE001
        return False


def address_clashes() -> dict[str, str]:
    """Shipped topologies whose blocks overlap a network of this machine -> a free ``--subnet`` for each."""
    import ipaddress

    from testbed.net.containment import machine_networks, overlap_errors, suggest_subnet
    from testbed.net.spec import list_topologies, load_topology

    try:
        machine = machine_networks()
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    out = {}
    for name in list_topologies():
        t = load_topology(name)
        if overlap_errors(name, t.networks(), machine):
            free = suggest_subnet(ipaddress.IPv4Network(t.subnet).prefixlen, [m.network for m in machine])
            out[name] = str(free) if free else "BLOCK"
    return out


def realtime_check() -> tuple[bool, str]:
    """Whether a process may take real-time priority here, as each relay process asks (SCHED_FIFO 1),
    tried in a child so that doctor itself keeps normal scheduling."""
    code = ("import os\ntry:\n    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))\n    print('ok')\n"
            "except OSError as e:\n    print(e)")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    out = r.stdout.strip()
    return out == "ok", out or r.stderr.strip()


def server_checks(names: tuple[str, ...]) -> tuple[list[Check], dict[str, dict]]:
    """The checks of ``--servers``: one per server (reached, root, Mininet, Open vSwitch), then whether they
    agree with this machine (the same Mininet, one link emulation, clocks within 1 ms)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
        local, *found = pool.map(servers.probe, ["localhost", *names])
    checks = []
    for f in found:
        fix = servers.fix_for(f)
        checks.append(Check(f"server {f.server}", f.reached and not fix, servers.describe(f), fix))
    differ = servers.disagreements(local, found)
    checks += [
        Check("servers mininet", not differ["mininet"], "; ".join(differ["mininet"]) or
              f"every reached server has this machine's Mininet ({local.mininet})",
              "install the same Mininet version on every server (Debian 12: apt install mininet)"),
        Check("servers links", not differ["links"], "; ".join(differ["links"]) or
              f"every reached server emulates links by {local.link_mode}",
              "run with --links relay, so every link (across servers too) is emulated alike", required=False),
        Check("servers clock", not differ["clock"], "; ".join(differ["clock"]) or
              f"every reached server's clock is within {servers.CLOCK_LIMIT_MS:g} ms of this machine's",
              "synchronise the clocks (chrony or systemd-timesyncd against one source; docs/cluster.md)",
              required=False),
    ]
    return checks, {f.server: f.to_json() for f in found}


def gather(server_names: tuple[str, ...] = ()) -> tuple[list[Check], dict]:
    root = os.geteuid() == 0
    ovs = host_env.ovs_running()
    datapath = host_env.ovs_datapath() if root else ("kernel" if host_env.kernel_ovs_available() else "user")
    netem = netem_check() if root else False
    ryu_version, ryu_detail = _ryu_version()
    try:
        import mininet.net  # noqa: F401

        mininet_ok, mn_detail = True, _module_version("mininet") or "Debian package"
    except ImportError as e:
        mininet_ok, mn_detail = False, str(e)
    scapy_v = _module_version("scapy")
    realtime, rt_detail = realtime_check() if root else (False, "not root")
    unbound = shutil.which("unbound") or (os.path.exists("/usr/sbin/unbound") and "/usr/sbin/unbound")
    checks = [
        Check("root", root, "running as root" if root else "not root", "run with sudo"),
        Check("ovs", ovs, "Open vSwitch answers ovs-vsctl" if ovs else "ovs-vsctl cannot reach ovsdb",
              f"{SETUP}   (or: /usr/share/openvswitch/scripts/ovs-ctl start)"),
        Check("datapath", True, f"{datapath}" + (
            "" if datapath == "kernel"
            else " (no openvswitch kernel module: userspace datapath, TX offloads off, larger socket buffers)")),
        Check("netem", netem, "netem delays links" if netem else
              "no netem in this kernel: links use the userspace relay (testbed/net/relay.py)",
              "nothing to do: the relay is used automatically (`--links relay`)", required=False),
        Check("relay_realtime", realtime or netem,
              "relays may run at real-time priority (SCHED_FIFO)" if realtime else
              (f"real-time priority refused ({rt_detail})" + ("; links use netem, so no matter" if netem else
                                                                "; relayed delays may be late on a busy CPU")),
              "run as root; in a container, allow CAP_SYS_NICE and a real-time budget "
              "(kernel.sched_rt_runtime_us)", required=False),
        Check("mininet", mininet_ok, mn_detail, f"{SETUP}   (apt: mininet)"),
        Check("ryu", ryu_version is not None, f"Ryu {ryu_version}: {ryu_detail}" if ryu_version else ryu_detail,
              f"{SETUP}   (pip: requirements-ryu.txt)"),
        Check("scapy", scapy_v is not None, f"scapy {scapy_v}" if scapy_v else "not importable", SETUP),
        Check("unbound", bool(unbound), str(unbound or "not installed"), f"{SETUP}   (apt: unbound)"),
    ]
    for tool, pkg in (("iperf3", "iperf3"), ("ethtool", "ethtool"), ("tcpdump", "tcpdump"), ("dig", "dnsutils"),
                      ("wrk", "wrk"), ("nginx", "nginx-light"), ("nsd", "nsd"), ("dnsperf", "dnsperf")):
        path = shutil.which(tool) or (os.path.exists(f"/usr/sbin/{tool}") and f"/usr/sbin/{tool}")
        checks.append(Check(tool, bool(path), str(path or "not installed"), f"{SETUP}   (apt: {pkg})",
                            required=tool in ("ethtool", "iperf3")))
    relays = relay_watch.running_relays() if root else []
    for r in relays:  # the relays of networks running now: are they keeping up?
        checks.append(Check(f"relays {r['run_id']}", relay_watch.keeping_up(r),
                            relay_watch.describe(r),
                            "the machine is too busy for the relays: see docs/troubleshooting.md "
                            "(\"No netem: links use the relay\")", required=False))
    netem_runs = netem_watch.running_netem() if root and netem else []
    for r in netem_runs:  # the netem links of networks running now: the kernel's counters
        checks.append(Check(f"netem {r['run_id']}", True, netem_watch.describe(r), required=False))
    clashes = address_clashes()
    checks.append(Check(
        "addresses", not clashes,
        "no shipped topology overlaps this machine's networks" if not clashes else
        "overlapping this machine's networks: " + ", ".join(clashes),
        "; ".join(f"sudo cdnlab up {t} --subnet {sub}" for t, sub in clashes.items()), required=False))
    cluster: dict[str, dict] | None = None
    if server_names:
        more, cluster = server_checks(server_names)
        checks += more
    summary = {
        "root": root,
        "ovs_running": ovs,
        "ovs_datapath": datapath,
        "netem": netem,
        "link_mode": "netem" if netem else "relay",
        "relay_realtime": realtime,
        "relays": relays,
        "netem_links": netem_runs,
        "mininet": mininet_ok,
        "ryu_version": ryu_version,
        "scapy_version": scapy_v,
        "unbound": bool(unbound),
        "address_clashes": clashes,
        "servers": cluster,
        "ok": all(c.ok for c in checks if c.required),
        "missing": {c.name: c.fix for c in checks if not c.ok},
    }
    return checks, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab doctor", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--servers", metavar="A,B,...",
                    help="also check these servers of a run across several: SSH, Mininet, Open vSwitch, link "
                         "emulation, clock offset (docs/cluster.md)")
    args = ap.parse_args(argv)
    try:
        from testbed.net.placement import parse_servers

        names = parse_servers(args.servers) if args.servers is not None else ()
    except ValueError as e:
        print(f"cdnlab doctor: {e}", file=sys.stderr)
        return 2
    try:
        checks, summary = gather(names)
    except subprocess.TimeoutExpired as e:
        print(f"cdnlab doctor: a check timed out: {e}")
        return 1
    for c in checks:
        mark = "ok " if c.ok else ("-- " if not c.required else "XX ")
        print(f"[{mark}] {c.name:<9} {c.detail}")
        if not c.ok and c.fix:
            print(f"            fix: {c.fix}")
    print("ready" if summary["ok"] else "not ready: fix the XX lines above")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1

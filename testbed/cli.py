"""The ``cdnlab`` command line.

Subcommands: doctor, plan, up, clean, topo, controller, bench NAME, run NAME, report DIR, demo, grade LAB, lab.
Each subcommand lives in its own module and is imported only when used, so ``cdnlab doctor`` works even
when optional pieces (Ryu, Mininet) are missing.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

# subcommand -> (module, help). The module has ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("testbed.doctor", "check the machine: root, OVS and its datapath, netem, Ryu, scapy, unbound"),
    "plan": ("testbed.plan", "what will run where: cdnlab plan TOPO --out DIR writes every config, no root"),
    "up": ("testbed.net.up", "build a topology, start the controller and services, open the Mininet CLI"),
    "clean": ("testbed.net.cleanup", "remove everything cdnlab created (also after a crash or SIGKILL)"),
    "topo": ("testbed.net.topo_cli", "topology tools: list, show, validate, import FILE.graphml"),
    "controller": ("controller.__main__", "run the Ryu controller apps (anycast, multicast, routing, REST)"),
    "run": ("experiments.cli", "run an experiment: cdnlab run NAME [--topo T] [--quick] [--out DIR] [--seed N] [--subnet B]"),
    "report": ("experiments.report_cli", "rebuild plots and report.md of an experiment from its raw data"),
    "demo": ("experiments.demo", "what `make demo` runs"),
    "grade": ("testbed.grade", "grade a lab: cdnlab grade LAB [--solution PATH] [--format gradescope --out F]"),
    "lab": ("testbed.lab_export", "instructors: cdnlab lab export LAB DIR writes a lab's student copy"),
}


def _bench(argv: list[str]) -> int:
    """``cdnlab bench NAME [...]`` runs ``benchmarks/NAME.py``'s ``main``."""
    if not argv or argv[0] in ("-h", "--help"):
        import pkgutil

        benchmarks = importlib.import_module("benchmarks")  # by name: the command line is the top layer
        names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
        print("usage: cdnlab bench NAME [--json] [...]\n\nbenchmarks: " + ", ".join(names))
        return 0
    name = argv[0].replace("-", "_")
    try:
        mod = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"benchmarks.{name}":
            print(f"cdnlab bench: no benchmark named {argv[0]!r} (see `cdnlab bench --help`)", file=sys.stderr)
            return 2
        raise
    return int(mod.main(argv[1:]) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if hasattr(signal, "SIGPIPE"):  # `cdnlab topo show globe | head` must not end in a traceback
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not argv or argv[0] in ("-h", "--help"):
        ap = argparse.ArgumentParser(prog="cdnlab", description=__doc__.strip().split("\n")[0])
        ap.print_help()
        print("\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<11} {help_}")
        print(f"  {'bench':<11} benchmarks that print figures: cdnlab bench NAME --json")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        return _bench(rest)
    if cmd == "--version":
        from testbed import __version__

        print(__version__)
        return 0
    if cmd not in COMMANDS:
        print(f"cdnlab: unknown command {cmd!r}; try `cdnlab --help`", file=sys.stderr)
        return 2
    mod = importlib.import_module(COMMANDS[cmd][0])
    return int(mod.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

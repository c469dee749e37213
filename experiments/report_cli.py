"""``cdnlab report DIR``: rebuild an experiment's plots and report.md from its raw data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    from experiments.framework import module_for, read_results

    ap = argparse.ArgumentParser(prog="cdnlab report", description=__doc__.strip().split("\n")[0])
    ap.add_argument("dir", type=Path, help="an experiment's --out directory")
    args = ap.parse_args(argv)
    try:
        results = read_results(args.dir)
        name = results.get("meta", {}).get("experiment")
        if not name:
            raise ConfigError(f"{args.dir}/results.json: meta.experiment: missing")
        module_for(name).report(args.dir)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"rebuilt {args.dir}/report.md")
    return 0

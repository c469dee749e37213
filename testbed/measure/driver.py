"""The workload driver a client host runs: ``python -m testbed.measure.driver --config FILE``.

It replays a schedule of fetches (time offset, method, path) against the CDN, each at its time
(concurrently when they overlap, as independent browser connections would), and writes one JSON line
per fetch to ``out`` (see :class:`testbed.measure.fetch.Sample`). A ``probe`` schedule — one fetch every
``interval_ms`` for ``duration_s`` — is the failover prober: it records which edge answered each probe,
so every gap and every change of edge is in the data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.config import ConfigError, load_model
from testbed.measure.fetch import Target, fetch


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: float = Field(ge=0)
    via: Literal["anycast", "dns", "redirect"]
    path: str


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    via: Literal["anycast", "dns", "redirect"]
    path: str = "/_cdn/health"
    interval_ms: float = Field(20, gt=0)
    duration_s: float = Field(gt=0)
    timeout_s: float = Field(1.0, gt=0)


class DriverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client: str
    out: Path
    target: dict[str, str | int | None] = Field(default_factory=dict)  # Target fields
    schedule: list[Item] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)
    timeout_s: float = Field(10.0, gt=0)
    start_at: float | None = None  # wall-clock time to start (to line up several clients)


async def _run(cfg: DriverConfig) -> int:
    target = Target(**{k: v for k, v in cfg.target.items() if v is not None})  # type: ignore[arg-type]
    if cfg.start_at:
        await asyncio.sleep(max(0.0, cfg.start_at - time.time()))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out = cfg.out.open("a", buffering=1)
    count = 0

    async def one(at: float, via: str, path: str, timeout: float, seq: int | None = None) -> None:
        nonlocal count
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        s = await fetch(via, target, path, client=cfg.client, timeout=timeout)
        row = s.row()
        row["at"] = at
        if seq is not None:
            row["seq"] = seq
        out.write(json.dumps(row) + "\n")
        count += 1

    tasks = [asyncio.create_task(one(i.at, i.via, i.path, cfg.timeout_s)) for i in cfg.schedule]
    for p in cfg.probes:
        n = int(p.duration_s * 1000 / p.interval_ms)
        tasks += [asyncio.create_task(one(k * p.interval_ms / 1000, p.via, p.path, p.timeout_s, k))
                  for k in range(n)]
    if tasks:
        await asyncio.gather(*tasks)
    out.close()
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.measure.driver", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    try:
        cfg = load_model(DriverConfig, args.config)
    except ConfigError as e:
        print(f"driver: bad config: {e}", file=sys.stderr)
        return 2
    n = asyncio.run(_run(cfg))
    print(f"driver {cfg.client}: {n} fetches -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

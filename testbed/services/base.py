"""The common life cycle of every cdnlab service process.

A service is one module with one typed config (a pydantic model derived from :class:`ServiceConfig`)
and one ``async def serve(config, stop: asyncio.Event)`` coroutine. :func:`service_main` gives it the
command line ``python -m testbed.services.NAME --config FILE``, refuses a bad config with a message that
names the file and field (exit status 2), logs to the configured file, and shuts down cleanly on
SIGTERM or SIGINT (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from contract.config import ConfigError, read_data, validate
from contract.sandbox import Submission, activate, describe_load_error

log = logging.getLogger(__name__)


class ServiceConfig(BaseModel):
    """Fields every service config has. Unknown fields are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "service"
    log_file: Path | None = None
    log_level: str = "INFO"
    #: the run's management token: control endpoints (purge, stats, faults) need it as a bearer token;
    #: without one they accept loopback peers only (:mod:`testbed.services.admin`)
    admin_token: str | None = Field(None, min_length=16)
    #: a lab submission this service runs in a sandbox and plugs in (the network stage of ``cdnlab grade``)
    submission: Submission | None = None


C = TypeVar("C", bound=ServiceConfig)
ServeFn = Callable[[C, asyncio.Event], Awaitable[None]]


def setup_logging(cfg: ServiceConfig) -> None:
    """Log to ``cfg.log_file`` (created with its directory) or to stderr."""
    handlers: list[logging.Handler]
    if cfg.log_file:
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(cfg.log_file)]
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format=f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


async def run_until_signalled(serve: ServeFn, cfg: C) -> None:
    """Run ``serve(cfg, stop)``; SIGTERM/SIGINT set ``stop`` so the service can close cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(cfg, stop)


def _event_loop_runner():
    """uvloop's ``run`` where uvloop is installed (about twice aiohttp's request rate), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def service_main(
    model: type[C], serve: ServeFn, argv: list[str] | None = None, prog: str | None = None
) -> int:
    """Command-line entry point shared by all services."""
    ap = argparse.ArgumentParser(prog=prog, description=(serve.__doc__ or "").strip().split("\n")[0] or None)
    ap.add_argument("--config", required=True, help="YAML or JSON file with this service's config")
    args = ap.parse_args(argv)
    # a submission first: the rest of the config may name it (a mapping policy, an eviction policy)
    sandbox = None
    try:
        raw = read_data(args.config)
    except ConfigError as e:
        print(f"{prog or 'service'}: bad config: {e}", file=sys.stderr)
        return 2
    if isinstance(raw, dict) and raw.get("submission") is not None:
        try:
            sub = validate(Submission, raw["submission"], f"{args.config}: submission")
            sandbox = activate(sub)
        except Exception as e:  # noqa: BLE001 - a bad field or the student's import error, said plainly
            text = describe_load_error(e)
            print(f"{prog or 'service'}: ERROR submission does not load: {text}", file=sys.stderr)
            return 2
    try:
        cfg = validate(model, raw, args.config)  # the file is read once
    except ConfigError as e:
        print(f"{prog or 'service'}: bad config: {e}", file=sys.stderr)
        if sandbox is not None:
            sandbox.close()
        return 2
    setup_logging(cfg)
    log.info("starting %s with %s", cfg.name, args.config)
    if sandbox is not None and cfg.submission is not None:
        log.info("submission %s plugged in: %s", cfg.submission.file, ", ".join(cfg.submission.patch) or "-")
    try:
        _event_loop_runner()(run_until_signalled(serve, cfg))
    except OSError as e:  # e.g. address in use: say so plainly
        log.error("cannot run: %s", e)
        print(f"{prog or 'service'}: {e}", file=sys.stderr)
        return 1
    finally:
        if sandbox is not None:
            sandbox.close()
    log.info("stopped cleanly")
    return 0

"""What a service declares about its place in a run, as IPMininet's ``Daemon`` declares its own.

Each service module holds one ``DAEMON = Daemon(...)``: its role, the module the launcher runs
(``python -m MODULE --config FILE``), its config model, the roles whose services must answer before it
starts (``after``) and how the launcher knows it answers (``ready``). The launcher
(:class:`testbed.net.launch.CdnServices`) and the plan (:mod:`testbed.plan`) derive the start order from these
declarations with :func:`start_stages`; nothing else lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from testbed.services.base import ServiceConfig


@dataclass(frozen=True)
class HttpReady:
    """Ready when ``GET path`` answers 200, asked from a client host through the emulated network."""

    path: str


@dataclass(frozen=True)
class DnsReady:
    """Ready when a query for one of the run's names gets an answer, asked from a client host: ``cdn`` (the
    CDN's mapped name; a high-level server, which only refers that name, is asked for its own zone's NS) or
    ``customer`` (the customer's name, which a resolver resolves through the whole hierarchy)."""

    name: Literal["cdn", "customer"]


@dataclass(frozen=True)
class Daemon:
    """One service's declaration (see the module's docstring)."""

    role: str
    module: str
    config: type[ServiceConfig]
    ready: HttpReady | DnsReady
    #: roles whose services answer before this one starts (e.g. a DNS that health-checks the edges)
    after: tuple[str, ...] = ()


def start_stages(daemons: Mapping[str, Daemon]) -> list[list[str]]:
    """The roles in start stages: a role's stage comes after those of every role it names in ``after``;
    roles of one stage start together, in the mapping's order. ValueError names an unknown role in
    ``after`` or a cycle."""
    for role, d in daemons.items():
        unknown = [a for a in d.after if a not in daemons]
        if unknown:
            raise ValueError(f"service {role}: starts after {', '.join(unknown)}, which no service declares")
    stages: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(daemons):
        stage = [r for r, d in daemons.items() if r not in placed and set(d.after) <= placed]
        if not stage:
            waiting = sorted(set(daemons) - placed)
            raise ValueError(f"services {', '.join(waiting)} wait for each other (a cycle in their 'after')")
        stages.append(stage)
        placed.update(stage)
    return stages

"""The live dashboard's wire format (``cdnlab up TOPO --web``): what the server streams to the page.

The page reads one server-sent-events stream (the WHATWG HTML standard, §9.2 "Server-sent events") from
``GET /api/events``. Three event types, each one JSON object:

* ``topology`` (:class:`TopologyMsg`): once on connect, and again if the network is rebuilt: every node
  (switches and hosts, with coordinates where the spec has them) and every link with its configured delay;
* ``state`` (:class:`StateMsg`): at least once a second: each link up or down, each edge's health and
  counters, each client's replica under every selection method, the experiment's progress;
* ``event`` (:class:`TimelineEvent`): a timeline entry as it happens (failures, recoveries, route
  changes, DNS answer changes seen by clients, actions taken from the page, errors).

Actions go the other way: ``POST /api/action`` with an :class:`Action` body and the page's
``X-Cdnlab-Token`` header; the answer is an :class:`ActionResult` (HTTP 200) or ``{"error": ...}``
(HTTP 400 for a malformed or impossible action, 403 without the token).

Every model forbids unknown fields, so a change on one side that the other does not know is caught by
the unit test that validates the server's stream against these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: bumped when a field changes meaning or disappears (adding an optional field does not bump it)
SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeView(_Strict):
    """A switch or host on the graph. ``lat``/``lon`` (degrees) place it on a map when the spec gives
    them (a host without its own is drawn beside its switch)."""

    id: str
    kind: Literal["switch", "host"]
    role: str | None = None  # hosts: origin, edge, dns, resolver, redirector, client, router
    region: str | None = None
    ip: str | None = None
    switch: str | None = None  # hosts: the switch of their access link
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class LinkInfo(_Strict):
    """A link as configured. ``id`` is ``a|b`` with the ends as the spec lists them."""

    id: str
    a: str
    b: str
    delay_ms: float = Field(0, ge=0)
    bw_mbit: float | None = Field(None, gt=0)
    loss_pct: float = Field(0, ge=0, le=100)


class TopologyMsg(_Strict):
    version: Literal[1] = SCHEMA_VERSION
    name: str
    geo: bool  # True when every switch has coordinates: the page draws a map, else a force layout
    nodes: list[NodeView]
    links: list[LinkInfo]
    anycast: list[str] = Field(default_factory=list)  # names of the anycast services
    methods: list[Literal["anycast", "dns", "redirect"]] = Field(default_factory=list)
    actions: bool = True  # False: a read-only view (during an experiment); the page hides its buttons


Health = Literal["up", "failed", "down", "drained", "unknown"]


class EdgeState(_Strict):
    """One edge as the dashboard sees it.

    ``health``: ``failed`` when a failure was injected (``failed`` names its kind), ``down`` when the
    controller marks it unhealthy (``reason``), ``drained`` when an operator drained it, ``unknown`` when
    its stats could not be read, else ``up``. ``rps`` is requests a second since the previous state;
    ``hit_ratio`` hits over hits and misses since the service started (None before the first)."""

    name: str
    health: Health
    reason: str | None = None
    failed: str | None = None
    drained: bool = False
    requests: int = Field(0, ge=0)
    rps: float = Field(0, ge=0)
    hit_ratio: float | None = Field(None, ge=0, le=1)
    bytes_served: int = Field(0, ge=0)
    cache_bytes: int | None = Field(None, ge=0)
    load: float | None = None  # from the edge's heartbeats, as the controller last heard
    catchment: list[str] = Field(default_factory=list)  # switches whose clients anycast brings here


class ClientState(_Strict):
    """Which edge serves a client under each method (None: unknown or failing; ``errors`` says why)."""

    name: str
    region: str | None = None
    anycast: str | None = None
    dns: str | None = None
    redirect: str | None = None
    dns_ttl: int | None = Field(None, ge=0)  # seconds left on the answer its resolver holds
    errors: dict[str, str] = Field(default_factory=dict)  # method -> what went wrong


class ExperimentState(_Strict):
    name: str
    progress: float = Field(ge=0, le=1)
    phase: str = ""
    figures: dict[str, float | int | str | None] = Field(default_factory=dict)


class StateMsg(_Strict):
    version: Literal[1] = SCHEMA_VERSION
    seq: int = Field(ge=0)
    time: float  # Unix time of the sample
    links_down: list[str] = Field(default_factory=list)  # LinkInfo ids
    edges: list[EdgeState]
    clients: list[ClientState]
    experiment: ExperimentState | None = None


EventKind = Literal[
    "failure", "recovery", "route", "dns", "redirect", "action", "experiment", "error", "info"
]


class TimelineEvent(_Strict):
    seq: int = Field(ge=0)
    time: float
    kind: EventKind
    text: str
    host: str | None = None


ActionName = Literal["fail", "recover", "drain", "restore", "link_down", "link_up", "purge"]


class Action(_Strict):
    """An action from the page; the fields each one needs:

    * ``fail``: ``host``, ``kind`` (process, host or link; default process); ``recover``: ``host``;
    * ``drain`` / ``restore``: ``host`` (an anycast member), ``service`` (default: the first anycast);
    * ``link_down`` / ``link_up``: ``link`` (a LinkInfo id);
    * ``purge``: ``path`` (starts with /), ``hosts`` (edges; default every edge)."""

    action: ActionName
    host: str | None = None
    kind: Literal["process", "host", "link"] | None = None
    service: str | None = None
    link: str | None = None
    path: str | None = None
    hosts: list[str] | None = None

    @model_validator(mode="after")
    def _needs(self) -> Action:
        need = {
            "fail": ["host"],
            "recover": ["host"],
            "drain": ["host"],
            "restore": ["host"],
            "link_down": ["link"],
            "link_up": ["link"],
            "purge": ["path"],
        }[self.action]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"action {self.action!r} needs {', '.join(missing)}")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} must start with /")
        return self


class ActionResult(_Strict):
    ok: bool
    message: str


def sse(event: str, data: BaseModel) -> bytes:
    """One server-sent event: ``event:`` line, one ``data:`` line of compact JSON, a blank line."""
    return f"event: {event}\ndata: {data.model_dump_json()}\n\n".encode()

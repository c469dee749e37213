"""The live dashboard's server (``cdnlab up TOPO --web [PORT]``, ``cdnlab run NAME --web [PORT]``).

An aiohttp application on its own thread and event loop, bound to 127.0.0.1 in the machine's root
namespace: emulated hosts have no route to it. It serves the page (``testbed/web/static``, no build
step), a server-sent-events stream of :mod:`contract.dashboard` messages (``GET /api/events``; the
WHATWG HTML standard, "Server-sent events"), the latest snapshot as JSON (``GET /api/state``), and the
page's actions (``POST /api/action``).

Safety of a local web server: a page of another site open in the same browser can send requests to
127.0.0.1, so an action needs the token written into this page only (``X-Cdnlab-Token``; another site
cannot read it), and every request must name this server in its ``Host`` field (DNS rebinding).

The network is sampled (:class:`testbed.web.sampler.Sampler`) once a second while at least one page is
connected, and not at all when nobody watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from contract.dashboard import (
    Action,
    ActionResult,
    ExperimentState,
    StateMsg,
    TimelineEvent,
    TopologyMsg,
    sse,
)
from testbed.web import actions as web_actions
from testbed.web import view

STATIC = Path(__file__).parent / "static"
DEFAULT_PORT = 8080
TOKEN_HEADER = "X-Cdnlab-Token"
HISTORY = 200  # timeline entries kept for a page that connects later
WATCH_S = 0.05  # how often the failure record is compared between samples (a dict comparison)


class Dashboard:
    """The dashboard of whatever network is attached (:meth:`attach`); one per process."""

    def __init__(self, port: int | None = None, interval_s: float = 1.0, probe_every: int = 2) -> None:
        self.want_port = port
        self.port: int | None = None
        self.interval_s = interval_s
        self.probe_every = probe_every
        self.token = secrets.token_urlsafe(24)
        self._lock = threading.Lock()  # guards the fields below, shared with the caller's threads
        self._cn: Any = None
        self._sampler: Any = None
        self._topology: TopologyMsg | None = None
        self._state: StateMsg | None = None
        self._events: deque[TimelineEvent] = deque(maxlen=HISTORY)
        self._event_seq = 0
        self._experiment: ExperimentState | None = None
        self._actions = True
        self._queues: set[asyncio.Queue[bytes]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sampling: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._wake = False  # an action asks for a sample now
        self._idle_seq = 0  # states sent with no network attached (an experiment's progress alone)

    # -- the caller's side (any thread) -------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> str:
        """Start serving; returns the URL. OSError when the port is taken (a port asked for) ."""
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise self._error
        if self.port is None:
            raise RuntimeError("the dashboard did not start within 15 s")
        return self.url

    def stop(self) -> None:
        self.detach()
        loop = self._loop
        if loop is not None and self._thread is not None:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                fut.result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def attach(self, cn: Any, actions: bool = True, sampler: Any = None) -> None:
        """Show ``cn`` (a started :class:`testbed.net.build.CdnNet`); ``actions=False``: read-only.
        ``sampler``: what samples it (default :class:`testbed.web.sampler.Sampler`; tests pass a double)."""
        if sampler is None:
            from testbed.web.sampler import Sampler

            sampler = Sampler(cn, probe_every=self.probe_every)
        msg = view.topology_msg(cn.topo, cn.addresses, actions=actions)
        with self._lock:
            old, self._sampler, self._cn, self._topology, self._state = self._sampler, sampler, cn, msg, None
            self._actions = actions
        if old is not None:
            old.close()
        self.note(
            "info", f"network {cn.topo.name} up: {len(cn.topo.switches)} switches, {len(cn.topo.hosts)} hosts"
        )
        self._broadcast(sse("topology", msg))

    def detach(self, cn: Any = None) -> None:
        """Stop showing ``cn`` (default: whatever is attached), before it is torn down."""
        with self._lock:
            if self._cn is None or (cn is not None and cn is not self._cn):
                return
            old, name = self._sampler, self._cn.topo.name
            self._cn = self._sampler = None
        old.close()
        self.note("info", f"network {name} stopped")

    def note(self, kind: str, text: str, host: str | None = None) -> TimelineEvent:
        """Add a timeline entry and send it to every page."""
        with self._lock:
            ev = TimelineEvent(seq=self._event_seq, time=time.time(), kind=kind, text=text, host=host)  # type: ignore[arg-type]
            self._event_seq += 1
            self._events.append(ev)
        self._broadcast(sse("event", ev))
        return ev

    def set_experiment(self, state: ExperimentState | None) -> None:
        with self._lock:
            self._experiment = state

    def report_experiment(self, name: str, fraction: float, phase: str, figures: dict[str, Any]) -> None:
        """An experiment's progress (``cdnlab run NAME --web``), shown until the next report."""
        self.set_experiment(
            ExperimentState(name=name, progress=min(1.0, max(0.0, fraction)), phase=phase, figures=figures)
        )

    def follow(self, what: str, cn: Any) -> None:
        """A :data:`testbed.net.build.NETWORK_LISTENERS` entry: show each network an experiment builds,
        read-only (the experiment's own commands use the hosts' shells)."""
        if what == "up":
            self.attach(cn, actions=False)
        else:
            self.detach(cn)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "topology": self._topology.model_dump() if self._topology else None,
                "state": self._state.model_dump() if self._state else None,
                "events": [e.model_dump() for e in self._events],
            }

    # -- the server's thread ------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._only_this_host])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/events", self._events_stream)
        app.router.add_get("/api/state", self._state_json)
        app.router.add_post("/api/action", self._action)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ports = [self.want_port] if self.want_port is not None else [DEFAULT_PORT, 0]
        for i, port in enumerate(ports):
            site = web.TCPSite(self._runner, "127.0.0.1", port)
            try:
                await site.start()
            except OSError:
                if i == len(ports) - 1:
                    raise
                continue
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            break
        self._sampling = asyncio.get_running_loop().create_task(self._sample_loop())

    async def _shutdown(self) -> None:
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
        for q in list(self._queues):
            q.put_nowait(b"")  # ends each stream
        if self._runner is not None:
            await self._runner.cleanup()

    def _broadcast(self, data: bytes) -> None:
        loop = self._loop
        if loop is None:
            return

        def put() -> None:
            for q in list(self._queues):
                if q.qsize() < 100:  # a page that stopped reading misses updates, the server does not grow
                    q.put_nowait(data)

        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(put)

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            with self._lock:
                sampler, cn, experiment = self._sampler, self._cn, self._experiment
            if sampler is None and experiment is not None and self._queues:
                # an experiment between networks (or one with none, as zipf): its progress alone
                self._idle_seq += 1
                self._broadcast(sse("state", StateMsg(seq=self._idle_seq, time=time.time(), edges=[], clients=[],
                                                      experiment=experiment)))
            if sampler is not None and self._queues:
                failed = dict(getattr(getattr(cn, "services", None), "failed", {}) or {})
                try:
                    state = await loop.run_in_executor(None, sampler.sample, failed, experiment)
                except Exception as e:  # noqa: BLE001 - a sampling bug must not end the dashboard
                    self.note("error", f"sampling failed: {type(e).__name__}: {e}")
                    state = None
                if state is not None:
                    with self._lock:
                        prev = self._state if self._sampler is sampler else None
                        if self._sampler is sampler:
                            self._state = state
                    for kind, text, host in view.timeline(prev, state):
                        self.note(kind, text, host)
                    self._broadcast(sse("state", state))
            await self._until_next_sample(t0 + self.interval_s)

    def _failures(self) -> dict[str, str]:
        with self._lock:
            cn = self._cn
        return dict(getattr(getattr(cn, "services", None), "failed", {}) or {})

    async def _until_next_sample(self, at: float) -> None:
        """Sleep until ``at``, or less: a failure injected or recovered (by the page, the CLI or an
        experiment: the services' own record) or an action from the page starts the next sample at once,
        so a change is on screen well within a second, while an idle network is sampled once a second."""
        loop = asyncio.get_running_loop()
        before = self._failures()
        while loop.time() < at:
            await asyncio.sleep(min(WATCH_S, max(0.0, at - loop.time())))
            if self._wake or self._failures() != before:
                break
        self._wake = False

    # -- handlers ---------------------------------------------------------------------------------------
    @web.middleware
    async def _only_this_host(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return web.json_response(
                {"error": f"this dashboard answers only as 127.0.0.1:{self.port}, not {request.host!r}"},
                status=421,
            )
        return await handler(request)

    async def _index(self, request: web.Request) -> web.Response:
        with self._lock:
            title = f"cdnlab: {self._topology.name}" if self._topology else "cdnlab"
        html = (STATIC / "index.html").read_text()
        html = html.replace("{{TOKEN}}", self.token).replace("{{TITLE}}", escape(title))
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _state_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _events_stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        q: asyncio.Queue[bytes] = asyncio.Queue()
        with self._lock:
            first = [b"retry: 1000\n\n"]
            if self._topology is not None:
                first.append(sse("topology", self._topology))
            if self._state is not None:
                first.append(sse("state", self._state))
            first += [sse("event", e) for e in self._events]
        self._queues.add(q)
        try:
            await resp.write(b"".join(first))
            while True:
                try:
                    data = await asyncio.wait_for(q.get(), 15)
                except TimeoutError:
                    data = b": keep-alive\n\n"
                if not data:
                    break
                await resp.write(data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._queues.discard(q)
        return resp

    async def _action(self, request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), self.token):
            return web.json_response(
                {"error": f"an action needs this page's {TOKEN_HEADER} header"}, status=403
            )
        try:
            action = Action.model_validate(json.loads(await request.read() or b"null"))
        except (ValueError, ValidationError) as e:
            msg = (
                "; ".join(f"{'.'.join(map(str, x['loc'])) or 'body'}: {x['msg']}" for x in e.errors())
                if isinstance(e, ValidationError)
                else f"body is not JSON: {e}"
            )
            return web.json_response({"error": f"bad action: {msg}"}, status=400)
        with self._lock:
            cn, allowed = self._cn, self._actions
        if cn is None:
            return web.json_response({"error": "no network is up"}, status=409)
        if not allowed:
            return web.json_response(
                {"error": "this dashboard is read-only (an experiment is running)"}, status=403
            )
        self.note("action", f"requested: {web_actions.describe(action)}", action.host)
        try:
            message = await asyncio.get_running_loop().run_in_executor(None, web_actions.perform, cn, action)
        except (ValueError, KeyError, RuntimeError, TimeoutError, OSError) as e:
            text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            self.note("error", f"{web_actions.describe(action)} failed: {text}", action.host)
            return web.json_response({"error": text}, status=400)
        self.note("action", message, action.host)
        self._wake = True  # show its effect now, not at the next tick
        return web.json_response(ActionResult(ok=True, message=message).model_dump())

"""The dashboard's actions, carried out through the same code paths as the CLI's commands: ``fail`` and
``recover`` (:meth:`testbed.net.launch.CdnServices.fail` / ``recover``), ``drain`` and ``restore`` (the
controller's REST API), a link down or up (Mininet's ``configLinkStatus``, as the CLI's ``link``), and
``purge`` (:meth:`CdnServices.purge`, with the run's management token, from each edge's own host).

Each runs under the network's command lock (``CdnNet.lock``), which the CLI also holds for each command:
Mininet's host shells take one command at a time.
"""

from __future__ import annotations

import json
import threading
import urllib.error
from typing import Any

from contract.dashboard import Action


def describe(a: Action) -> str:
    if a.action == "fail":
        return f"fail {a.host} ({a.kind or 'process'})"
    if a.action in ("recover", "drain", "restore"):
        return f"{a.action} {a.host}"
    if a.action in ("link_down", "link_up"):
        return f"link {(a.link or '').replace('|', '-')} {a.action.removeprefix('link_')}"
    return f"purge {a.path} on {', '.join(a.hosts) if a.hosts else 'every edge'}"


def _services(cn: Any) -> Any:
    svc = getattr(cn, "services", None)
    if svc is None:
        raise ValueError("no CDN services are running (started with --no-services?)")
    return svc


def perform(cn: Any, a: Action) -> str:
    """Carry out ``a`` on the network ``cn``; what happened, in a sentence. ValueError, KeyError,
    RuntimeError or TimeoutError (with a message) when it cannot be done."""
    lock = getattr(cn, "lock", None) or threading.RLock()
    with lock:
        return _perform(cn, a)


def _perform(cn: Any, a: Action) -> str:
    topo = cn.topo
    if a.host is not None:
        try:
            topo.host(a.host)
        except KeyError:
            raise ValueError(f"no host named {a.host!r}") from None
    if a.action == "fail":
        svc = _services(cn)
        kind = a.kind or "process"
        if a.host in svc.failed:
            raise ValueError(f"{a.host} already failed ({svc.failed[a.host]}); recover it first")
        effect = svc.fail(a.host, kind)
        return f"{a.host}: {kind} failure injected; {effect}"
    if a.action == "recover":
        svc = _services(cn)
        svc.recover(a.host, svc.failed.get(a.host, "process"))
        return f"{a.host}: recovered"
    if a.action in ("drain", "restore"):
        if getattr(cn, "controller_mode", None) != "ryu":
            raise ValueError("draining needs the Ryu controller (this network runs without it)")
        service = a.service or (topo.anycast[0].name if topo.anycast else None)
        if service is None:
            raise ValueError("this topology has no anycast service")
        try:
            cn.rest(f"/anycast/{service}/{a.action}/{a.host}", "POST")
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read() or b"{}").get("error")
            except (ValueError, AttributeError):
                detail = None
            raise ValueError(detail or f"the controller refused: HTTP {e.code}") from None
        return f"{a.host}: {'drained from' if a.action == 'drain' else 'restored to'} anycast {service}"
    if a.action in ("link_down", "link_up"):
        ends = (a.link or "").split("|")
        known = {(ln.a, ln.b) for ln in topo.links} | {(h.name, h.switch) for h in topo.hosts}
        if len(ends) != 2 or (ends[0], ends[1]) not in known:
            raise ValueError(f"no link {a.link!r} (links are named 'a|b' as the topology lists them)")
        status = a.action.removeprefix("link_")
        cn.net.configLinkStatus(ends[0], ends[1], status)
        return f"link {ends[0]}-{ends[1]} {status}"
    if a.action == "purge":
        svc = _services(cn)
        answers = svc.purge([a.path], a.hosts)
        done = [e for e, ans in answers.items() if ans.get("purged")]
        return f"purged {a.path} from {', '.join(done) if done else 'no edge (not cached)'}"
    raise ValueError(f"unknown action {a.action!r}")

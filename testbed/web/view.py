"""What the dashboard shows, computed from plain data (no network, no I/O): the topology message, each
edge's and client's state from raw samples, and the timeline entries that a change between two states
makes. :mod:`testbed.web.sampler` gathers the raw samples from a running network; these functions turn
them into :mod:`contract.dashboard` messages, so they are unit tested on made-up samples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.dashboard import ClientState, EdgeState, LinkInfo, NodeView, StateMsg, TopologyMsg
from testbed.net.spec import Role, Topology


def link_id(a: str, b: str) -> str:
    return f"{a}|{b}"


def topology_msg(topo: Topology, addresses: Mapping[str, str], actions: bool = True) -> TopologyMsg:
    """Every switch and host, every switch link and access link, as the spec gives them."""
    nodes = [NodeView(id=s.name, kind="switch", region=s.region, lat=s.lat, lon=s.lon) for s in topo.switches]
    nodes += [
        NodeView(
            id=h.name,
            kind="host",
            role=h.role.value,
            region=h.region,
            ip=addresses.get(h.name),
            switch=h.switch,
        )
        for h in topo.hosts
    ]
    links = [
        LinkInfo(
            id=link_id(ln.a, ln.b),
            a=ln.a,
            b=ln.b,
            delay_ms=ln.delay_ms,
            bw_mbit=ln.bw_mbit,
            loss_pct=ln.loss_pct,
        )
        for ln in topo.links
    ]
    links += [
        LinkInfo(
            id=link_id(h.name, h.switch),
            a=h.name,
            b=h.switch,
            delay_ms=h.link.delay_ms,
            bw_mbit=h.link.bw_mbit,
            loss_pct=h.link.loss_pct,
        )
        for h in topo.hosts
    ]
    methods: list[Any] = []
    if topo.anycast:
        methods.append("anycast")
    if topo.hosts_with(Role.resolver) and topo.hosts_with(Role.dns):
        methods.append("dns")
    if topo.hosts_with(Role.redirector):
        methods.append("redirect")
    return TopologyMsg(
        name=topo.name,
        geo=bool(topo.switches) and all(s.lat is not None for s in topo.switches),
        nodes=nodes,
        links=links,
        anycast=[a.name for a in topo.anycast],
        methods=methods,
        actions=actions,
    )


def edge_state(
    name: str,
    stats: Mapping[str, Any] | None,
    member: Mapping[str, Any] | None,
    failed: str | None,
    catchment: list[str],
    prev: EdgeState | None,
    dt: float,
) -> EdgeState:
    """One edge from its ``/_cdn/stats`` answer (None: not answering), the controller's view of it as an
    anycast member (``GET /anycast``; None without a controller) and the failure injected on it."""
    member = member or {}
    drained = bool(member.get("drained"))
    reason = None
    if failed:
        health = "failed"
    elif member and not member.get("healthy", True) and not drained:
        health, reason = "down", str(member.get("reason") or "unhealthy")
    elif drained:
        health = "drained"
    elif stats is None:
        health, reason = "unknown", "its stats did not answer"
    else:
        health = "up"
    st = stats or {}
    hits, misses = int(st.get("hits", 0)), int(st.get("misses", 0))
    requests = hits + misses + int(st.get("uncachable", 0))
    served = sum(int(st.get(k, 0)) for k in ("bytes_from_cache", "bytes_from_origin", "bytes_from_peers"))
    rps = 0.0
    if stats is None and prev is not None:  # keep the last counters of an edge that stopped answering
        requests, served = prev.requests, prev.bytes_served
    elif prev is not None and dt > 0 and requests >= prev.requests:  # a restart resets the counters
        rps = round((requests - prev.requests) / dt, 2)
    load = member.get("load")
    return EdgeState(
        name=name,
        health=health,
        reason=reason,
        failed=failed,
        drained=drained,
        requests=requests,
        rps=rps,
        hit_ratio=round(hits / (hits + misses), 4)
        if hits + misses
        else (prev.hit_ratio if prev and stats is None else None),
        bytes_served=served,
        cache_bytes=(st.get("store") or {}).get("bytes_used") if stats else None,
        load=float(load) if isinstance(load, int | float) else None,
        catchment=sorted(catchment),
    )


def catchments(anycast: Mapping[str, Any], service: str | None = None) -> dict[str, str]:
    """switch -> the member its clients reach, for one anycast service of ``GET /anycast`` (default the
    first)."""
    services = anycast.get("services") or {}
    if not services:
        return {}
    svc = services.get(service) if service else next(iter(services.values()))
    return dict((svc or {}).get("choice") or {})


def members(anycast: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for svc in (anycast.get("services") or {}).values():
        out.update(svc.get("members") or {})
    return out


def edge_of(address: str | None, edge_addresses: Mapping[str, str]) -> str | None:
    """The edge whose address (or name) ``address`` is, else None."""
    if address is None:
        return None
    for name, ip in edge_addresses.items():
        if address in (ip, name):
            return name
    return None


def timeline(prev: StateMsg | None, cur: StateMsg) -> list[tuple[str, str, str | None]]:
    """(kind, text, host) for each change from ``prev`` to ``cur`` a viewer should notice: an edge's health,
    a link going down or up, a client's replica moving under a method, a DNS answer renewed."""
    if prev is None:
        return []
    out: list[tuple[str, str, str | None]] = []
    before = {e.name: e for e in prev.edges}
    for e in cur.edges:
        p = before.get(e.name)
        if p is None or p.health == e.health:
            continue
        why = f" ({e.failed or e.reason})" if (e.failed or e.reason) else ""
        kind = (
            "recovery"
            if e.health == "up"
            else "failure"
            if e.health in ("failed", "down", "unknown")
            else "info"
        )
        out.append((kind, f"edge {e.name}: {p.health} -> {e.health}{why}", e.name))
    for ln in sorted(set(cur.links_down) - set(prev.links_down)):
        out.append(("failure", f"link {ln.replace('|', '-')} down", None))
    for ln in sorted(set(prev.links_down) - set(cur.links_down)):
        out.append(("recovery", f"link {ln.replace('|', '-')} up", None))
    clients = {c.name: c for c in prev.clients}
    for c in cur.clients:
        p = clients.get(c.name)
        if p is None:
            continue
        for method, kind in (("anycast", "route"), ("dns", "dns"), ("redirect", "redirect")):
            a, b = getattr(p, method), getattr(c, method)
            if a != b and not (b is None and method in c.errors and method in p.errors):
                where = b or f"no edge ({c.errors.get(method, 'no answer')})"
                out.append((kind, f"{c.name}: {method} {a or 'none'} -> {where}", c.name))
        if (
            c.dns is not None
            and c.dns == p.dns
            and c.dns_ttl is not None
            and p.dns_ttl is not None
            and c.dns_ttl > p.dns_ttl
        ):
            out.append(
                ("dns", f"{c.name}: DNS answer expired and renewed: {c.dns} (TTL {c.dns_ttl} s)", c.name)
            )
    return out


def client_state(
    name: str, region: str | None, answers: Mapping[str, tuple[str | None, str | None]], dns_ttl: int | None
) -> ClientState:
    """``answers``: method -> (edge, error)."""
    return ClientState(
        name=name,
        region=region,
        dns_ttl=dns_ttl,
        errors={m: err for m, (_, err) in answers.items() if err},
        **{m: edge for m, (edge, _) in answers.items()},
    )

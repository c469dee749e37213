"""Grader of lab dns-mapping: an ECS-aware mapping policy, called directly and inside the real DNS server.

Direct checks build ``EcsPolicy(spec)`` on a fixed mapping (regions with a nested prefix, edges, RTTs) and
compare its decisions with hand-written expectations and with the testbed's own ``EcsAware`` (inner
``GeoByResolver``) on random requests and random failures. The server check starts
``testbed.services.dns.DnsServer`` on loopback with the student's class as ``mapping.policy`` and queries
it with dnspython, with and without an ECS option.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from testbed.grade import Check, Fail
from testbed.services.mapping import EcsAware, MappingSpec, MapRequest, StaticEdgeState, hrw_rank

TITLE = "DNS mapping with EDNS Client Subnet (RFC 7871), never to a down edge"
MODULE = "mapping_policy"
CLASS = "EcsPolicy"
#: the reference implementation a submission may not import (contract.import_guard)
REFERENCE = ("testbed.services.mapping:EcsAware",)
SLIDES = 'lecture slides 11-12 "Server Selection" / "Trade-offs" (request by resolver, not client) and 21'

SPEC: dict[str, Any] = {
    "regions": {
        "eu": ["127.0.0.0/8", "10.1.0.0/16"],
        "us": ["10.2.0.0/16"],
        "us-west": ["10.2.128.0/20"],  # nested inside us: answers for 10.2/16 do not hold for all of it
        "asia": ["10.3.0.0/16"],
    },
    "default_region": "eu",
    "edges": [
        {"name": "eu1", "address": "10.9.1.1", "region": "eu"},
        {"name": "eu2", "address": "10.9.1.2", "region": "eu"},
        {"name": "us1", "address": "10.9.2.1", "region": "us"},
        {"name": "us2", "address": "10.9.2.2", "region": "us"},
        {"name": "usw1", "address": "10.9.2.129", "region": "us-west"},
        {"name": "as1", "address": "10.9.3.1", "region": "asia"},
    ],
    "rtt_ms": {
        "us": {"us1": 2, "us2": 3, "usw1": 20, "eu1": 90, "eu2": 92, "as1": 150},
        "asia": {"as1": 2, "usw1": 60, "us1": 80, "us2": 80, "eu1": 160, "eu2": 160},
        "eu": {"eu1": 2, "eu2": 2, "us1": 90, "us2": 90, "usw1": 100, "as1": 160},
    },
    "near_slack_ms": 5,
}
NAME = "a73.g.cdnlab.net."
RESOLVER_EU = "10.1.5.5"


FakeState = StaticEdgeState  # the named edges are down


def _spec() -> MappingSpec:
    return MappingSpec.model_validate(SPEC)


def _policy(mod: ModuleType) -> Any:
    cls = getattr(mod, CLASS, None)
    if not isinstance(cls, type):
        raise Fail(f"your module has no class {CLASS}")
    for m in ("choose", "source_key"):
        if not callable(getattr(cls, m, None)):
            raise Fail(f"{CLASS} has no {m}() (see MappingPolicy in testbed/services/mapping.py)")
    return cls(_spec())


def _req(source: str = RESOLVER_EU, subnet: str | None = None, name: str = NAME) -> MapRequest:
    return MapRequest(name, ipaddress.ip_address(source), ipaddress.ip_network(subnet) if subnet else None)


def _names(decision: Any) -> list[str]:
    return [e.name for e in decision.edges]


def _expect(
    mod: ModuleType,
    req: MapRequest,
    edges: list[str] | set[str],
    scope: int,
    label: str,
    down: set[str] | None = None,
    count: int = 1,
) -> None:
    d = _policy(mod).choose(req, FakeState(down), count)
    got = _names(d)
    ok = got == edges if isinstance(edges, list) else (len(got) == 1 and got[0] in edges)
    ecs = f" ECS {req.client_subnet}" if req.client_subnet else " no ECS"
    where = f"[{label}] resolver {req.source},{ecs}" + (f", down {sorted(down)}" if down else "")
    if not ok:
        want = edges if isinstance(edges, list) else f"one of {sorted(edges)}"
        raise Fail(f"{where}: expected edges {want}, got {got}")
    if d.scope_prefix != scope:
        raise Fail(f"{where}: expected scope_prefix {scope}, got {d.scope_prefix}")


def _hrw(names: list[str], edges: list[str]) -> list[str]:
    specs = [e for e in _spec().edges if e.name in edges]
    return [e.name for e in hrw_rank(NAME, specs)][: len(names) or None]


def check_no_ecs(mod: ModuleType) -> str:
    top_eu = _hrw([], ["eu1", "eu2"])[:1]
    _expect(mod, _req(), top_eu, 0, "no ECS: the resolver's region")
    _expect(mod, _req("10.3.0.53"), ["as1"], 0, "no ECS, resolver in asia")
    _expect(mod, _req(RESOLVER_EU, "0.0.0.0/0"), top_eu, 0, "ECS /0 means 'do not use' (RFC 7871 §7.1.2)")
    return "resolver address mapped, scope 0"


def check_ecs(mod: ModuleType) -> str:
    _expect(mod, _req(RESOLVER_EU, "10.3.7.0/24"), ["as1"], 16, "ECS in asia, resolver in eu")
    _expect(mod, _req(RESOLVER_EU, "10.2.130.0/24"), ["usw1"], 20, "ECS in the nested us-west /20")
    _expect(
        mod,
        _req(RESOLVER_EU, "192.0.2.0/24"),
        _hrw([], ["eu1", "eu2"])[:1],
        24,
        "ECS in no configured prefix: default region, scope = source prefix",
    )
    return "client subnet mapped, scope = the configured prefix"


def check_scope(mod: ModuleType) -> str:
    top_us = _hrw([], ["us1", "us2"])[:1]
    _expect(
        mod,
        _req(RESOLVER_EU, "10.2.200.0/24"),
        top_us,
        24,
        "us /16 has a more specific prefix inside: scope must be the source /24, not 16",
    )
    _expect(
        mod,
        _req(RESOLVER_EU, "10.2.200.9/32"),
        top_us,
        24,
        "a /32 client subnet is used only to /24 (ecs_max_prefix_v4, RFC 7871 §11.1)",
    )
    return "scope never claims more than the mapping knows"


def check_down(mod: ModuleType) -> str:
    _expect(
        mod,
        _req(RESOLVER_EU, "10.2.200.0/24"),
        {"us1", "us2"} - {_hrw([], ["us1", "us2"])[0]},
        24,
        "the hashed edge is down: the other us edge",
        down={_hrw([], ["us1", "us2"])[0]},
    )
    _expect(
        mod,
        _req(RESOLVER_EU, "10.2.200.0/24"),
        ["usw1"],
        24,
        "whole us cluster down: nearest live edge by rtt_ms",
        down={"us1", "us2"},
    )
    _expect(mod, _req("10.3.0.53"), ["usw1"], 0, "asia down: nearest live by rtt_ms", down={"as1"})
    _expect(
        mod,
        _req(RESOLVER_EU, "10.3.7.0/24"),
        [],
        16,
        "everything down: no edge",
        down={e["name"] for e in SPEC["edges"]},
    )
    return "down edges never returned; fallback to the nearest live cluster"


def check_count(mod: ModuleType) -> str:
    pol = _policy(mod)
    d = pol.choose(_req(RESOLVER_EU, "10.2.200.0/24"), FakeState({"us2"}), 3)
    got = _names(d)
    if len(got) > 3 or len(set(got)) != len(got) or "us2" in got or not got:
        raise Fail(f"count=3 with us2 down: expected up to 3 distinct live edges, got {got}")
    d = pol.choose(_req(RESOLVER_EU), FakeState(), 2)
    want = _hrw([], ["eu1", "eu2"])
    if _names(d) != want:
        raise Fail(f"count=2, resolver in eu: expected both eu edges in hash order {want}, got {_names(d)}")
    return "count respected, hash order kept"


def _random_req(rng: random.Random) -> MapRequest:
    src = rng.choice(["10.1.5.5", "10.2.0.53", "10.3.0.53", "127.0.0.1", "198.51.100.7"])
    if rng.random() < 0.25:
        subnet = None
    else:
        base = rng.choice(["10.1", "10.2", "10.3", "192.0", "10.2"])
        third = rng.choice([rng.randrange(256), 128 + rng.randrange(16)])
        plen = rng.choice([0, 8, 16, 20, 22, 24, 28, 32])
        subnet = str(ipaddress.ip_network(f"{base}.{third}.{rng.randrange(256)}/{plen}", strict=False))
    return _req(src, subnet, f"a{rng.randrange(1000)}.g.cdnlab.net.")


def check_random(mod: ModuleType) -> str:
    rng = random.Random(7871)
    spec = _spec().model_copy(update={"ecs_inner": "testbed.services.mapping:GeoByResolver"})
    ref, pol = EcsAware(spec), _policy(mod)
    names = [e["name"] for e in SPEC["edges"]]
    for i in range(400):
        req = _random_req(rng)
        down = set(rng.sample(names, rng.choice([0, 0, 1, 2, 3, 6])))
        st = FakeState(down)
        want, got = ref.choose(req, st, 2), pol.choose(req, st, 2)
        if (_names(got), got.scope_prefix, got.region) != (_names(want), want.scope_prefix, want.region):
            raise Fail(
                f"random request {i}: {req.name} from {req.source} ECS {req.client_subnet}, down "
                f"{sorted(down)}: expected edges {_names(want)} region {want.region} scope "
                f"{want.scope_prefix}, got {_names(got)} region {got.region} scope {got.scope_prefix}"
            )
        if any(n in down for n in _names(got)):
            raise Fail(f"random request {i}: returned a down edge {_names(got)} (down: {sorted(down)})")
    return "400 random requests agree with RFC 7871 mapping"


def check_source_key(mod: ModuleType) -> str:
    rng = random.Random(12)
    pol = _policy(mod)
    seen: dict[Any, tuple] = {}
    for i in range(300):
        req = _random_req(rng)
        req = MapRequest(NAME, req.source, req.client_subnet)
        k = pol.source_key(req)
        hash(k)
        d = pol.choose(req, FakeState(), 1)
        out = (_names(d), d.scope_prefix, d.region)
        if k in seen and seen[k][0] != out:
            raise Fail(
                f"request {i}: source_key {k!r} was also the key of a request answered {seen[k][0]} "
                f"({seen[k][1]}), but this one ({req.source}, ECS {req.client_subnet}) is answered {out}: "
                "the DNS server caches answers per source_key, so it would serve a wrong answer"
            )
        seen.setdefault(k, (out, f"{req.source}, ECS {req.client_subnet}"))
    if len(seen) < 3:
        raise Fail(f"source_key gave only {len(seen)} distinct keys for 300 varied requests")
    return f"{len(seen)} distinct keys, each with one decision"


async def _dns_scenario(mod: ModuleType) -> str:
    import dns.asyncquery
    import dns.edns
    import dns.message
    import dns.rcode

    from testbed.grade import student_module_name
    from testbed.services.dns import DnsConfig, DnsServer, free_dns_port
    from testbed.services.health import HealthConfig

    spec = dict(SPEC, policy=f"{student_module_name('dns-mapping')}:{CLASS}")
    cfg = DnsConfig.model_validate(
        {"port": free_dns_port(), "mapped": {}, "mapping": spec, "health": HealthConfig(enabled=False)}
    )
    if mod.__name__ != student_module_name("dns-mapping"):
        raise Fail("internal: the student module is not registered under its plug-in name")
    server = DnsServer(cfg)
    await server.start()
    addr = {e["address"]: e["name"] for e in SPEC["edges"]}

    async def ask(ecs: str | None) -> tuple[list[str], int | None, str]:
        opts = [dns.edns.ECSOption.from_text(ecs)] if ecs else []
        q = dns.message.make_query("a1.g.cdnlab.net", "A", use_edns=0, options=opts)
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=2)
        got = [addr.get(rr.address, rr.address) for rrset in r.answer for rr in rrset]
        scope = next((o.scopelen for o in r.options if isinstance(o, dns.edns.ECSOption)), None)
        rcode = dns.rcode.to_text(r.rcode())
        if rcode == "SERVFAIL" and server.stats.get("servfail"):
            rcode += " (your choose()/source_key() raised inside the server: fix the direct checks first)"
        return got, scope, rcode

    try:
        got = await ask(None)
        if len(got[0]) != 1 or got[0][0] not in ("eu1", "eu2") or got[2] != "NOERROR":
            raise Fail(
                f"query a1.g.cdnlab.net A from 127.0.0.1 (eu) without ECS: expected one eu edge, got "
                f"{got[0]} rcode {got[2]}"
            )
        got = await ask("10.3.7.0/24")
        if got[:2] != (["as1"], 16):
            raise Fail(
                f"query with ECS 10.3.7.0/24 (asia): expected answer ['as1'] and ECS scope 16, got "
                f"{got[0]} scope {got[1]} rcode {got[2]}"
            )
        for n in ("us1", "us2"):
            server.health.state[n].up = False
        server.health.generation += 1
        got = await ask("10.2.200.0/24")
        if got[0] != ["usw1"] or got[1] != 24:
            raise Fail(
                f"us1, us2 down, query with ECS 10.2.200.0/24: expected ['usw1'] (nearest live) scope 24, "
                f"got {got[0]} scope {got[1]} rcode {got[2]}"
            )
        errors = server.stats.get("servfail", 0)
        if errors:
            raise Fail(f"the DNS server answered SERVFAIL {errors} times: your policy raised inside it")
    finally:
        await server.stop()
    return "real DNS server: resolver mapping, ECS mapping with scope, no down edge"


def _dns_check(mod: ModuleType) -> str:
    logger = logging.getLogger("testbed.services.dns")  # the server logs the student's exceptions
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_dns_scenario(mod))
    finally:
        logger.setLevel(old)


# ---------------------------------------------------------------------------------------------------------
# network stage: the student's policy in the mapping DNS servers, behind real unbound resolvers with ECS


def _answers(cn: Any, client: str, resolver: str) -> list[str]:
    """The A records ``client`` gets for the customer's name through ``resolver`` (dig in its namespace)."""
    from testbed.net.launch import CUSTOMER_NAME

    out = cn.host(client).cmd(f"dig +time=2 +tries=2 +noall +answer @{cn.ip(resolver)} {CUSTOMER_NAME} A")
    return re.findall(r"\sIN\s+A\s+(\d+\.\d+\.\d+\.\d+)", out)


def _dns_network(mod: ModuleType, label: str, body: Callable[..., str]) -> str:
    from testbed.grade_network import lab_network, submission_of
    from testbed.net.launch import CdnOptions

    sub = submission_of(mod, REFERENCE)
    opts = CdnOptions(
        roles=("origin", "edge", "dns", "resolver"),
        ecs=True,
        mapping_policy=f"{mod.__name__}:{CLASS}",
        submissions={"dns": sub.model_dump(mode="json")},
        dns_ttl=1,
        resolver_cache=False,
    )
    with lab_network("mapping", opts) as (cn, svc):
        by_ip = {cn.ip(e.name): e.name for e in cn.topo.hosts_with("edge")}
        clients = [h for h in cn.topo.hosts_with("client")]

        def ask(client: Any) -> list[str]:
            res = svc.resolver_for(client.name)
            return [by_ip.get(a, a) for a in _answers(cn, client.name, res)] if res else []

        try:
            return f"{label}: " + body(cn, svc, clients, ask)
        except Fail as e:
            logs = sorted((Path(cn.run_dir) / "logs").glob("dns*.log")) if cn.run_dir else []
            errs = [ln for f in logs for ln in f.read_text(errors="replace").splitlines() if "Error" in ln]
            raise Fail(f"[{label}] {e}" + (f"; a DNS server logged: {errs[-1]}" if errs else "")) from None


def _own_region_edge(cn: Any, client: Any, down: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    return {e.name for e in cn.topo.hosts_with("edge") if e.region == client.region and e.name not in down}


def _visible_network(cn: Any, svc: Any, clients: list[Any], ask: Callable[[Any], list[str]]) -> str:
    for c in clients:
        got = ask(c)
        want = _own_region_edge(cn, c)
        if not got or not set(got) <= want:
            res = svc.resolver_for(c.name)
            raise Fail(
                f"{c.name} ({c.region}, resolver {res} in {cn.topo.host(res).region}) asked for the customer's "
                f"name: expected an edge of its own region {sorted(want)} (ECS carries its /24), got {got}"
            )
    far = [c.name for c in clients if cn.topo.host(svc.resolver_for(c.name)).region != c.region]
    return f"{len(clients)} clients each mapped to their own region, {len(far)} of them behind a far resolver"


def _hidden_network(cn: Any, svc: Any, clients: list[Any], ask: Callable[[Any], list[str]]) -> str:
    from testbed.util import DeadlineExceeded, wait_until

    victim = "e_c"
    svc.fail(victim)
    try:
        for c in clients:
            try:
                wait_until(
                    lambda c=c: (got := ask(c)) and victim not in got,
                    10,
                    0.5,
                    what="no answer to a dead edge",
                )
            except DeadlineExceeded:
                raise Fail(
                    f"{victim} was killed, but {c.name} ({c.region}) is still sent to it: got {ask(c)}"
                ) from None
    finally:
        svc.recover(victim)
    return f"with {victim} killed no client is sent to it"


def check_network_visible(mod: ModuleType) -> str:
    return _dns_network(mod, "mapping", _visible_network)


def check_network_hidden(mod: ModuleType) -> str:
    return _dns_network(mod, "hidden workload", _hidden_network)


def checks() -> list[Check]:
    rfc = "RFC 7871 §7.1.2 (source prefix), §7.2.1 (scope), §11.1 (privacy)"
    return [
        Check("no ECS: map the resolver", check_no_ecs, f"{SLIDES}; {rfc}"),
        Check("ECS: map the client subnet", check_ecs, f"{SLIDES}; {rfc}"),
        Check("ECS scope and source truncation", check_scope, rfc),
        Check(
            "never a down edge; fallback",
            check_down,
            'lecture slide 11 ("Any alive node: to provide fault tolerance"); MappingSpec.rtt_ms',
        ),
        Check("count and hash order", check_count, 'lecture slide 21 ("Uses aXYZ name and hash")'),
        Check(
            "source_key consistent with choose",
            check_source_key,
            "testbed/services/dns/answers.py caches answers per source_key (MappingPolicy docstring)",
        ),
        Check("random requests and failures", check_random, rfc, timeout=10),
        Check(
            "real DNS server on loopback (dnspython)",
            lambda m: asyncio.run(_dns_scenario(m)),
            "testbed/services/dns/answers.py _mapped(): your choose() answers aNN.g.cdnlab.net",
            timeout=10,
        ),
        Check(
            "network (mapping): unbound resolvers with ECS, near and far clients",
            check_network_visible,
            f"{SLIDES}; RFC 7871: the resolver forwards the client's /24, your policy maps it",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden workload): a region's edge killed",
            check_network_hidden,
            "the DNS server's health checks mark it down; your choose() must not answer with it",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]

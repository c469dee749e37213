"""Lab dns-mapping, reference solution: server selection with EDNS Client Subnet (RFC 7871).

The lecture (slide 12) names the weakness of naming-based selection: "request by resolver, not client".
RFC 7871 lets the resolver forward a prefix of the client's address; the authoritative mapping server
then maps the *client subnet* and says, with SCOPE PREFIX-LENGTH (§7.2.1), for which addresses the
answer may be reused from the resolver's cache.

:class:`EcsPolicy` plugs into the mapping DNS (``testbed/services/dns/``) and the redirector through
the ``MappingPolicy`` Protocol of ``testbed/services/mapping.py``: ``EcsPolicy(spec)``,
``source_key(req)``, ``choose(req, state, count)``.

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable

from testbed.services.mapping import Decision, EdgeState, IPAddress, MapRequest, _Base, hrw_rank


class EcsPolicy(_Base):
    """Map the client subnet when the query has one (else the resolver), never to a down edge."""

    uses_ecs = True

    def effective_source(self, req: MapRequest) -> tuple[IPAddress, int | None]:
        """(address to map, source prefix length used) - (resolver address, None) without usable ECS."""
        cs = req.client_subnet
        if cs is None or cs.version != 4 or cs.prefixlen == 0:  # §7.1.2: /0 means "do not use"
            return req.source, None
        plen = min(cs.prefixlen, self.spec.ecs_max_prefix_v4)  # §11.1: never more bits than we need
        net = ipaddress.ip_network(f"{cs.network_address}/{plen}", strict=False)
        return net.network_address, plen

    def scope_for(self, addr: IPAddress, plen: int | None) -> int:
        """SCOPE PREFIX-LENGTH (§7.2.1): the matched configured prefix when it maps as a whole."""
        if plen is None:
            return 0
        _, matched = self.lookup(addr)
        if matched is None:
            return plen
        nested = any(
            net != matched and net.version == matched.version and net.subnet_of(matched)  # type: ignore[arg-type]
            for net, _ in self._prefixes
        )
        return plen if nested else matched.prefixlen

    def source_key(self, req: MapRequest) -> Hashable:
        addr, plen = self.effective_source(req)
        region, matched = self.lookup(addr)
        return (region, plen, matched)

    def choose(self, req: MapRequest, state: EdgeState, count: int = 1) -> Decision:
        addr, plen = self.effective_source(req)
        region = self.region_of(addr)
        cluster = [e for e in self.by_region.get(region, []) if state.is_up(e.name)]
        reason = "ecs-client" if plen is not None else "ecs-resolver"
        if not cluster:  # the region's cluster is down: nearest live edges anywhere
            cluster, reason = self._fallback(region, state), reason + "-fallback"
        return Decision(hrw_rank(req.name, cluster)[:count], region, self.scope_for(addr, plen), reason)

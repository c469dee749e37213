"""Lab dns-mapping (starter): server selection with EDNS Client Subnet (RFC 7871).

Fill in the TODOs of :class:`EcsPolicy`. It plugs into the mapping DNS server (``testbed/services/dns/``)
through the ``MappingPolicy`` Protocol of ``testbed/services/mapping.py``: the server builds
``EcsPolicy(spec)`` and, for every ``aNN.g.cdnlab.net`` query, calls ``choose(MapRequest(name, resolver
address, client subnet or None), state, count)`` and puts the returned edges' addresses in the answer and
``decision.scope_prefix`` in the ECS option of the reply.

Given by the base class ``_Base`` (read testbed/services/mapping.py):

* ``self.spec`` - the MappingSpec (regions, edges, rtt_ms, ecs_max_prefix_v4, ...);
* ``self.lookup(addr) -> (region, matched configured prefix or None)`` - longest-prefix match;
* ``self.region_of(addr)``; ``self.by_region[region]`` - that region's edges (EdgeSpec);
* ``self._prefixes`` - every configured (prefix, region), longest first;
* ``self._fallback(region, state)`` - the nearest live edges anywhere (when the region's cluster is down).

``hrw_rank(name, edges)`` orders edges by rendezvous hashing of the name (same name -> same edge).

Grade with ``cdnlab grade dns-mapping --solution path/to/mapping_policy.py``.
"""

from __future__ import annotations

import ipaddress  # noqa: F401 - useful for truncating the client subnet
from collections.abc import Hashable

from testbed.services.mapping import Decision, EdgeState, IPAddress, MapRequest, _Base, hrw_rank  # noqa: F401


class EcsPolicy(_Base):
    """Map the client subnet when the query has one (else the resolver), never to a down edge."""

    uses_ecs = True

    def effective_source(self, req: MapRequest) -> tuple[IPAddress, int | None]:
        """(address to map, source prefix length used).

        TODO: without a usable client subnet - none, not IPv4, or prefix length 0 (RFC 7871 §7.1.2) -
        return (req.source, None). Otherwise use at most ``self.spec.ecs_max_prefix_v4`` bits of it
        (§11.1): return (network address of the subnet truncated to that length, that length).
        """
        raise NotImplementedError("TODO effective_source: client subnet if present (RFC 7871 §7.1.2, §11.1)")

    def scope_for(self, addr: IPAddress, plen: int | None) -> int:
        """SCOPE PREFIX-LENGTH for the reply (RFC 7871 §7.2.1).

        TODO: 0 when no client subnet was used (plen is None). Otherwise: if addr matched a configured
        prefix and no other configured prefix lies inside that one, the whole prefix maps alike, so
        return its length; else return plen (the answer holds only for the subnet we looked at).
        """
        raise NotImplementedError("TODO scope_for: RFC 7871 §7.2.1 SCOPE PREFIX-LENGTH")

    def source_key(self, req: MapRequest) -> Hashable:
        """A key such that equal keys (for the same name and health state) give equal decisions.

        TODO: e.g. (region, plen, matched prefix) of the effective source.
        """
        raise NotImplementedError("TODO source_key: what the decision depends on besides name and state")

    def choose(self, req: MapRequest, state: EdgeState, count: int = 1) -> Decision:
        """The edges for this request, best first.

        TODO: region of the effective source; its edges that ``state.is_up``; when none is up, use
        ``self._fallback(region, state)``; order with ``hrw_rank(req.name, ...)``, keep ``count``;
        return ``Decision(edges, region, scope, reason)``. Never return an edge that is down.
        """
        raise NotImplementedError(
            "TODO choose: ECS-aware, health-aware selection (lecture slides 11, 12, 21)"
        )

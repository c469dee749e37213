"""Lab server-selection (starter): design the redirector's server selection from the network map.

Fill in :meth:`Selector.choose` (and, if your answers depend on more than the region, ``source_key``).
The redirector (``testbed/services/redirector.py``) sees the client's own address and calls
``choose(req, state, count)`` for every request; it redirects the client to ``decision.edges[0]``.

What you have (``testbed/services/mapping.py``, class ``_Base`` which you extend):

* ``self.spec.edges``: every edge (``name``, ``address``, ``port``, ``region``);
* ``self.spec.network_map``: client prefix -> {edge name: RTT in ms}, what a mapping system measures;
  look up the longest prefix that holds ``req.source``;
* ``self.region_of(addr)``, ``self.spec.rtt_ms`` (region -> edge -> RTT), ``self._alive(edges, state)``;
* ``state.is_up(name)``: the health checker's verdict; ``hrw_rank(name, edges)``: rendezvous hashing.

Return ``Decision(edges, region, 0, reason)``: up to ``count`` live edges, best first (empty when none is
alive). Grade with ``cdnlab grade server-selection --solution path/to/selector.py``.
"""

from __future__ import annotations

from collections.abc import Hashable

from testbed.services.mapping import Decision, EdgeSpec, EdgeState, MapRequest, _Base, hrw_rank  # noqa: F401


class Selector(_Base):
    """Your server selection."""

    def source_key(self, req: MapRequest) -> Hashable:
        """Requests with equal keys (and equal name and edge state) must get equal answers."""
        return req.source

    def choose(self, req: MapRequest, state: EdgeState, count: int = 1) -> Decision:
        raise NotImplementedError(
            "TODO Selector.choose: the longest network_map prefix holding req.source, then the live edges by "
            "RTT (lecture slides 11-12: 'closest replica', 'any alive node')"
        )

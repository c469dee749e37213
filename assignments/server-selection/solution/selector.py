"""Lab server-selection, reference solution: nearest live edge by the network map.

The longest matching prefix of the client's address in the network map gives each edge's RTT; live edges
are ranked by RTT, equal RTTs by the rendezvous hash of the name (so one object keeps landing on one
cache). Without a map entry the region's configured RTTs rank them. The answer depends on the map prefix
(or the region) only, which is what ``source_key`` says.

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from testbed.services.mapping import Decision, EdgeSpec, EdgeState, MapRequest, _Base, hrw_rank


class Selector(_Base):
    def _entry(self, req: MapRequest) -> tuple[object, dict[str, float]] | None:
        best = None
        for net, row in self.spec.network_map.items():
            if net.version == req.source.version and req.source in net:
                if best is None or net.prefixlen > best[0].prefixlen:
                    best = (net, row)
        return best

    def source_key(self, req: MapRequest) -> Hashable:
        entry = self._entry(req)
        return ("map", entry[0]) if entry else ("region", self.region_of(req.source))

    def choose(self, req: MapRequest, state: EdgeState, count: int = 1) -> Decision:
        region = self.region_of(req.source)
        alive = hrw_rank(req.name, self._alive(self.spec.edges, state))
        entry = self._entry(req)
        if entry is not None:
            row = entry[1]

            def rtt(e: EdgeSpec) -> float:
                return row.get(e.name, math.inf)
        else:

            def rtt(e: EdgeSpec) -> float:
                return self._rtt(region, e)

        ranked = sorted(alive, key=rtt)  # stable: equal RTTs keep the hash order
        return Decision(ranked[:count], region, 0, "map" if entry else "region")

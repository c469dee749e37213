"""Lab multicast-tree (starter): the per-(source, group) shortest-path tree as per-switch ports.

Fill in :func:`build_tree`. The grader puts it in place of ``controller.multicast.build_tree``; the
controller turns your Tree into OpenFlow rules (controller/multicast.py ``tree_flows``): on each switch in
``out_ports``, packets of (S, G) arriving on ``in_port[switch]`` are copied to every port of
``out_ports[switch]`` (an OpenFlow ALL group); (S, G) packets arriving on any other port are dropped.

What you get (read contract/netview.py and controller/routing.py):

* ``view.host(name)`` -> HostView with ``.switch`` and ``.port`` (its port on that switch);
* ``routes.reachable(a, b)``; ``routes.path[a][b]`` - the switches from a to b, *taken from the Dijkstra
  tree rooted at b*; ``routes.port[a][b]`` - a's port on the next hop from a towards b (a != b).

Grade with ``cdnlab grade multicast-tree --solution path/to/mcast_tree.py``.
"""

from __future__ import annotations

from contract.netview import NetView
from controller.multicast import Tree
from controller.routing import Routes


def build_tree(view: NetView, routes: Routes, source: str, group: str, members: set[str]) -> Tree:
    """The shortest-path tree from host ``source`` to the host names in ``members``.

    TODO: ``t = Tree(source, group, members - {source})``; root = the source's switch. For each member:
    if its switch cannot reach the root, add it to ``t.unreachable``; otherwise walk the path root ->
    member switch (reverse ``routes.path[member switch][root]`` so every path comes from the same tree
    rooted at root) and for each hop a -> b add ``routes.port[a][b]`` to ``t.out_ports[a]`` and set
    ``t.in_port[b] = routes.port[b][a]``; finally add the member's host port to ``t.out_ports[its
    switch]``. If the tree is not empty, ``t.in_port[root]`` is the source's host port.
    """
    raise NotImplementedError("TODO build_tree: union of root->member paths from one shortest-path tree")

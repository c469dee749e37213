"""Lab multicast-tree, reference solution: the per-(source, group) shortest-path tree as switch ports.

Pushing one stream to many edges (CDN content replication, lecture slide 9: "CDN replicates customers'
content") is cheapest when every link carries each packet once. The controller builds, for each
(source S, group G), a shortest-path tree rooted at S's switch (the source tree of PIM-SSM, RFC 4607):

* every member's path is taken from ONE Dijkstra tree rooted at S's switch - ``routes.path[m][root]``
  comes from the Dijkstra tree rooted at ``root`` (controller/routing.py), so the union of the paths is a
  tree: no loops, one copy per link;
* per switch on the tree: ``in_port`` - the port towards S (the reverse-path-forwarding check: copies
  arriving elsewhere are dropped), and ``out_ports`` - child links and member host ports;
* members that cannot be reached (partitioned network) go to ``unreachable``; the source is never its
  own member. ``controller/multicast.py`` turns the tree into OpenFlow ALL groups.

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

from contract.netview import NetView
from controller.multicast import Tree
from controller.routing import Routes


def build_tree(view: NetView, routes: Routes, source: str, group: str, members: set[str]) -> Tree:
    src = view.host(source)
    root = src.switch
    t = Tree(source, group, set(members) - {source})
    for m in sorted(t.members):
        h = view.host(m)
        if not routes.reachable(h.switch, root):
            t.unreachable.add(m)
            continue
        path = list(reversed(routes.path[h.switch][root]))  # root, ..., member's switch
        for a, b in zip(path, path[1:], strict=False):
            t.out_ports.setdefault(a, set()).add(routes.port[a][b])
            t.in_port[b] = routes.port[b][a]
        t.out_ports.setdefault(h.switch, set()).add(h.port)
    if t.out_ports:
        t.in_port[root] = src.port
    return t

"""The CDN's authoritative name servers: static zones, the high-level and the low-level mapping server.

This is the naming-based server selection of the lecture's "How Akamai Works" slides (19-22):

* the customer zone delegates its content name with CNAMEs, ``www.customer.example`` ->
  ``cache.customer.example.cdnlab-dns.net`` -> ``a73.g.cdnlab.net`` (slide 21), held as static ``zones``;
* the **high-level** server (authoritative for ``cdnlab.net``, config section ``delegation``) answers any
  name under the low-level zone ``g.cdnlab.net`` with a referral: NS + glue A of the low-level server of the
  *resolver's* region, with a long TTL (3600 s);
* the **low-level** server (authoritative for ``g.cdnlab.net``, config section ``mapped``) answers
  ``aXYZ.g.cdnlab.net`` A with edges chosen by the mapping policy (region, then hash of the name) with a
  short TTL (20 s), never an edge the health checker marks down.

One process may hold any combination of the three. Protocol details: RFC 1034/1035 (answers, referrals,
CNAME chains followed inside our own zones, NXDOMAIN/NODATA with the SOA in the authority section,
RFC 2308 negative TTL), REFUSED outside our zones, RFC 6891 EDNS0 (UDP payload size, truncation with the
TC bit, full answers over TCP with the 2-byte length prefix of RFC 1035 §4.2.2 / RFC 7766), RFC 7871
EDNS Client Subnet (validated, echoed with the SCOPE PREFIX-LENGTH the policy decided, §7.2.1).
Malformed queries get FORMERR when the header is readable and are dropped otherwise; both are counted.

Limits over TCP: at most ``tcp_max_connections`` connections at once, one more is closed at once unanswered
(RFC 7766 §6.2.2 lets a server limit concurrent connections), and at most
``tcp_max_queries_per_connection`` queries answered on one connection: after the last answer the server
half-closes it (§6.2.4: either end may close, e.g. to defend itself) and throws away what still arrives
until the client closes, so no RST destroys that answer. Counted as ``tcp_refused_connections`` and
``tcp_query_limit_closes``. Unanswered queries are the client's to retry on a new connection.

Hot path: the full wire response (without the 2-byte ID) is cached per (query bytes after the ID,
transport, source address) and dropped whenever the health checker's generation changes. The mapping path
itself has a fast path (:meth:`MappingDns._fast_mapped`): a plain ``aN.<zone> IN A`` query, with at most
one OPT record (EDNS version 0, optionally ECS), is parsed and answered with ``struct`` instead of dnslib,
byte for byte what the general path would send (a test compares the two); anything else takes the
general path.
"""

from testbed.services.dns.answers import MappingDns, QueryError
from testbed.services.dns.config import DnsConfig
from testbed.services.dns.ports import free_dns_port, free_loopback_address
from testbed.services.dns.server import DAEMON, main, serve
from testbed.services.dns.transport import DnsServer

__all__ = [
    "DAEMON",
    "DnsConfig",
    "DnsServer",
    "MappingDns",
    "QueryError",
    "free_dns_port",
    "free_loopback_address",
    "main",
    "serve",
]

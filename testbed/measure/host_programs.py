"""Small programs that run inside emulated hosts, as ``python -c PROGRAM ARGS`` in a host's namespace.

Graders, benchmarks and the Mininet-tier tests start them to see what the network delivers, independently
of the CDN's own services: a multicast receiver that joins with IGMP (RFC 3376) and records each datagram, a
sender of numbered datagrams, an HTTP server that names itself (which anycast member answered), and a
watcher that sees a resolver refill its cache (the start of a TTL).
"""

#: a multicast receiver for a Mininet host: joins GROUP on its address (IGMP), appends each datagram to OUT
MCAST_RECEIVER = r"""
import socket, struct, sys
group, port, me, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(me)))
with open(out, "a", buffering=1) as f:
    while True:
        f.write(s.recv(100).decode() + "\n")
"""

#: a multicast sender: N datagrams "TAG-i" to GROUP from address ME, 20 ms apart
MCAST_SENDER = r"""
import socket, sys, time
group, port, me, tag, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(me))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
for i in range(n):
    s.sendto(f"{tag}-{i}".encode(), (group, port)); time.sleep(0.02)
"""

#: an HTTP server that answers every GET with its own NAME (argv: NAME PORT); keep-alive
HTTP_SERVER = r"""
import http.server, socket, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so tests can hold a connection across a change
    def do_GET(self):
        body = name.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
S(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
"""

#: waits for a resolver to refill its cache (argv: RESOLVER NAME TIMEOUT_S): asks for NAME's A record every
#: 10 ms and exits 0, printing the new TTL, as soon as an answer's TTL is higher than the one before (the
#: cached answer expired and was fetched again: its whole TTL lies ahead); exit 1 when none came in time
RESOLVER_REFILL = r"""
import sys, time
import dns.message, dns.query, dns.rdatatype
resolver, name, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
last = None
while time.monotonic() < deadline:
    try:
        r = dns.query.udp(dns.message.make_query(name, dns.rdatatype.A), resolver, timeout=0.5)
        ttl = min((rr.ttl for rr in r.answer if rr.rdtype == dns.rdatatype.A), default=None)
    except Exception:
        ttl = None
    if ttl is not None and last is not None and ttl > last:
        print(ttl)
        sys.exit(0)
    last = ttl if ttl is not None else last
    time.sleep(0.01)
sys.exit(1)
"""

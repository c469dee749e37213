"""The replication drivers of the multicast-ingest comparison (``cdnlab bench ingest`` and the ``multicast``
experiment): scripts run inside the origin's and the edges' namespaces.

* :data:`DRIVER` - in the origin: ``multicast`` pushes an object set with an
  :class:`~testbed.services.mcast.sender.IngestSender` and waits until every receiver delivered it;
  ``unicast`` sends the same objects over one TCP connection per edge and waits for every count;
* :data:`UNICAST_SINK` - in each edge: receives the unicast copies and acknowledges the count.

Both print one JSON object. :data:`GROUP`, :data:`MPORT` and :data:`TPORT` are the group, its port and
the unicast TCP port they use.
"""

from __future__ import annotations

GROUP, MPORT, TPORT = "239.255.41.1", 17410, 17411

UNICAST_SINK = r"""
import asyncio, pathlib, struct, sys
addr, port, out = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
async def handle(r, w):
    n = 0
    while True:
        try:
            hdr = await r.readexactly(6)
        except asyncio.IncompleteReadError:
            break
        plen, blen = struct.unpack("!HI", hdr)
        path = (await r.readexactly(plen)).decode()
        body = await r.readexactly(blen)
        (out / path.strip("/").replace("/", "%2F")).write_bytes(body)
        n += 1
    w.write(struct.pack("!I", n)); await w.drain(); w.close()
async def main():
    out.mkdir(parents=True, exist_ok=True)
    srv = await asyncio.start_server(handle, addr, port)
    (out / ".ready").touch()
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""

DRIVER = r"""
import asyncio, json, pathlib, struct, sys, time
mode, objdir, edges, statdir, rate = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3].split(","), pathlib.Path(sys.argv[4]), float(sys.argv[5])
objs = {"/" + f.name: f.read_bytes() for f in sorted(objdir.iterdir())}
async def multicast():
    from testbed.services.mcast.sockets import EndpointRunner, GroupConfig
    from testbed.services.mcast.sender import IngestSender
    runner = EndpointRunner(GroupConfig(group=sys.argv[6], port=int(sys.argv[7]), iface_addr=sys.argv[8], ttl=1, loop=False))
    snd = IngestSender(runner.transmit, session_id=9, rate_bps=rate * 1e6 / 8, report_interval=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(snd, stop))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    for p, b in objs.items():
        snd.push(p, b)
    runner.kick()
    def done():
        for i in range(len(edges)):
            try:
                if json.loads((statdir / f"rx{i}.json").read_text())["delivered"] < len(objs):
                    return False
            except (OSError, ValueError, KeyError):
                return False
        return True
    deadline = t0 + 60
    sent_s = None
    while not done() and time.monotonic() < deadline:
        if sent_s is None and snd.idle:
            sent_s = time.monotonic() - t0
        await asyncio.sleep(0.005)
    t = time.monotonic() - t0
    ok = done()
    stop.set(); await task
    return {"time_s": t, "sent_s": sent_s, "complete": ok, "repairs": snd.stats.repair_packets, "nacks": snd.stats.nacks_received}
async def unicast():
    async def one(addr):
        r, w = await asyncio.open_connection(addr, int(sys.argv[9]))
        for p, b in objs.items():
            pb = p.encode()
            w.write(struct.pack("!HI", len(pb), len(b)) + pb + b)
            await w.drain()
        w.write_eof()
        (n,) = struct.unpack("!I", await r.readexactly(4))
        w.close()
        return n
    t0 = time.monotonic()
    counts = await asyncio.wait_for(asyncio.gather(*(one(a) for a in edges)), 60)
    return {"time_s": time.monotonic() - t0, "complete": all(c == len(objs) for c in counts)}
print(json.dumps(asyncio.run(multicast() if mode == "multicast" else unicast())))
"""

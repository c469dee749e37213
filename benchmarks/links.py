"""``cdnlab bench links``: does an emulated link have the RTT and rate its spec says?

Builds one small Mininet network (OVS switch ``bls1`` in standalone mode, no controller, on the kernel
datapath where it exists; ``--datapath`` forces one) with every shaped link in ``--links`` mode (``netem``
in the Vagrant VM and ``make test-vm``, ``relay`` where the kernel has no netem; ``auto`` picks):

* a peer pair ``blh0a``/``blh0b`` on plain links: the RTT of the emulation machinery itself (OVS, veths);
* one pair per one-way delay D in 5/20/50/150 ms: ``blhNa`` --[D]-- ``bls1`` --[plain]-- ``blhNb``;
  expected RTT = 2 x D (2 x the sum of the configured one-way delays on the path);
* a rate pair: ``blh9a`` --[20 ms, 50 Mbit/s]-- ``bls1`` --[plain]-- ``blh9b`` for a 3 s iperf3 TCP run;
* a queue pair: ``blh8a`` --[500 ms, 0.125 Mbit/s, 20-packet queue]-- ``bls1``, overloaded at twice its
  rate with UDP probes (:mod:`testbed.measure.linkmeasure`): the frames delivered after the last probe
  reached the queue are the queue (``queue_limit_error_pkts`` = measured - configured);
* loss pairs ``blh6a``/``blh7a`` --[1 ms, 1 % / 10 % loss]--: 10000 one-way probes each
  (``loss_error_pct``: the larger error, in percentage points).

RTT: 5 warm-up pings, then the median of 20 pings at 0.05 s intervals. Rate: iperf3 reports goodput
(TCP payload); the cap applies to Ethernet frames (HTB counts 1514-byte frames for 1448-byte segments),
so ``bw_error_pct`` compares the frame rate (goodput x 1514/1448) with the cap; the goodput itself is
printed and given as ``goodput_mbit``. Targets (reported, not asserted): RTT error <= max(1 ms, 2 %) on
every path, rate within 5 % of the cap, queue within 1 packet, loss within 1 point. Last line: JSON with
``max_rtt_error_ms``, ``max_rtt_error_pct``, ``bw_error_pct``, ``queue_limit_error_pkts``,
``loss_error_pct``, ``mode`` (the link mode), ``datapath``, ``targets_met``. Exit status 1 when a
measurement failed (a path that does not answer, probes that did not arrive).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

DELAYS_MS = (5.0, 20.0, 50.0, 150.0)
BW_MBIT = 50.0
BW_DELAY_MS = 20.0
FRAME_PER_PAYLOAD = 1514 / 1448  # Ethernet frame bytes per TCP payload byte (MSS 1448 with timestamps)
QUEUE_LINK = {"delay_ms": 500.0, "bw": 0.125, "max_queue_size": 20}  # 67 ms frames: exact under TCG too
LOSS_PCTS = (1.0, 10.0)


def iperf(client, server, seconds: int, logdir: Path) -> dict:
    """Run iperf3 (TCP, client -> server) for ``seconds`` after a 1 s omitted warm-up; return its JSON."""
    from testbed.util import free_port, json_in, wait_until

    port = free_port()
    log = logdir / "iperf3-server.log"
    server.cmd(f"iperf3 -s -1 -p {port} > {log} 2>&1 &")
    srv_pid = server.cmd("echo $!").strip()
    try:
        wait_until(
            lambda: f":{port}" in server.cmd("ss -ltn"),
            5,
            interval=0.05,
            what=f"iperf3 server on port {port}",
        )
        out = client.cmd(f"iperf3 -c {server.IP()} -p {port} -t {seconds} -O 1 -J 2>&1")
        return json_in(out)
    finally:
        server.cmd(f"kill {srv_pid} 2>/dev/null; wait {srv_pid} 2>/dev/null")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench links", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    ap.add_argument("--links", "--mode", dest="links", default="auto", choices=("auto", "netem", "relay"),
                    help="link emulation: netem (the VM), relay, or auto (netem where the kernel has it)")
    ap.add_argument("--datapath", default="auto", choices=("auto", "kernel", "user"),
                    help="Open vSwitch datapath (auto: kernel where the module exists)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("cdnlab bench links: needs root (Mininet)", file=sys.stderr)
        return 2

    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch

    from testbed.measure import linkmeasure, ping
    from testbed.net import host_env, links

    try:
        mode = links.choose_link_class(args.links)
        datapath = host_env.ovs_datapath(args.datapath)
    except (links.LinkEmulationError, RuntimeError) as e:
        print(f"cdnlab bench links: {e}", file=sys.stderr)
        return 2
    setLogLevel("warning")
    logdir = Path(tempfile.mkdtemp(prefix="cdnlab-bench-links-"))
    os.environ.setdefault("CDNLAB_RELAY_LOG_DIR", str(logdir))

    def shaped(**kw):
        return links.link_class_for(args.links, **kw), kw

    # as the builder does: OVS's userspace datapath drops on small default socket buffers (restored below)
    saved = {k: host_env.read_sysctl(k) for k in host_env.USERSPACE_SYSCTLS}
    for k, v in host_env.USERSPACE_SYSCTLS.items():
        if int(saved[k]) < v:
            host_env.write_sysctl(k, v)
    net = Mininet(
        switch=partial(OVSSwitch, datapath=datapath, failMode="standalone"),
        controller=None,
        build=False,
        autoSetMacs=False,
    )
    rows: list[dict] = []
    result: dict = {"mode": mode, "datapath": datapath}
    try:
        s1 = net.addSwitch("bls1", dpid="00000000000b1001")
        pairs: list[tuple[str, float, float | None]] = [("0", 0.0, None)]
        pairs += [(str(i + 1), d, None) for i, d in enumerate(DELAYS_MS)]
        pairs.append(("9", BW_DELAY_MS, BW_MBIT))
        extra = {"8": dict(QUEUE_LINK), "6": {"delay_ms": 1.0, "loss": LOSS_PCTS[0]},
                 "7": {"delay_ms": 1.0, "loss": LOSS_PCTS[1]}}
        specs = [(tag, {k: v for k, v in (("delay_ms", delay), ("bw", bw)) if v}) for tag, delay, bw in pairs]
        for tag, kw in [*specs, *extra.items()]:
            a = net.addHost(f"blh{tag}a", ip=f"10.91.{tag}.1/24")
            b = net.addHost(f"blh{tag}b", ip=f"10.91.{tag}.2/24")
            cls, kw = shaped(**kw)
            net.addLink(a, s1, cls=cls, **kw)
            net.addLink(b, s1, cls=links.PlainLink)
        net.build()
        net.start()
        for intf in s1.intfList():
            if intf.name != "lo":
                links.offloads_off(s1, intf.name)
        links.finish_links(net)
        t0 = time.monotonic()
        print(f"link emulation mode: {mode}, datapath {datapath}   (logs in {logdir})")
        print(f"{'path':<22}{'expected RTT':>14}{'median RTT':>12}{'min':>9}{'error':>10}{'error %':>9}")
        base = None
        for tag, delay, bw in pairs:
            if bw:
                continue
            a, b = net.get(f"blh{tag}a"), net.get(f"blh{tag}b")
            rtts = ping.precise_rtts(a, b.IP())
            if len(rtts) < 10:
                raise RuntimeError(f"path {tag}: only {len(rtts)} of 20 pings answered")
            med = statistics.median(rtts)
            expected = 2 * delay
            err = med - expected
            row = {
                "delay_ms": delay,
                "expected_ms": expected,
                "median_ms": med,
                "min_ms": min(rtts),
                "err_ms": err,
            }
            if delay == 0:
                base = med
                name = "peer (no delay)"
            else:
                row["err_pct"] = 100 * abs(err) / expected
                rows.append(row)
                name = f"one-way {delay:g} ms"
            pct = f"{row['err_pct']:.2f}" if "err_pct" in row else "-"
            print(f"{name:<22}{expected:>11.1f} ms{med:>9.2f} ms{min(rtts):>9.2f}{err:>+8.2f} ms{pct:>9}")
        # rate
        a, b = net.get("blh9a"), net.get("blh9b")
        rep = iperf(a, b, 3, logdir)
        end = rep.get("end", {})
        goodput = end.get("sum_received", {}).get("bits_per_second", 0.0) / 1e6
        retrans = end.get("sum_sent", {}).get("retransmits")
        wire = goodput * FRAME_PER_PAYLOAD
        bw_err = 100 * abs(wire - BW_MBIT) / BW_MBIT
        print(
            f"TCP {BW_MBIT:g} Mbit/s cap, {BW_DELAY_MS:g} ms one-way: goodput {goodput:.2f} Mbit/s, "
            f"frames {wire:.2f} Mbit/s (error {bw_err:.2f} %), retransmits {retrans}"
        )
        # the queue, overloaded; the loss, counted
        a, b = net.get("blh8a"), net.get("blh8b")
        a.cmd(f"ping -n -q -c 2 -W 2 {b.IP()}")
        qm = linkmeasure.measure_queue(a, b, b.IP(), QUEUE_LINK["bw"], QUEUE_LINK["delay_ms"],
                                       QUEUE_LINK["max_queue_size"], workdir=logdir / "queue")
        q_err = qm.queue_pkts - QUEUE_LINK["max_queue_size"]
        print(f"queue of {QUEUE_LINK['max_queue_size']} packets behind {QUEUE_LINK['bw']:g} Mbit/s, "
              f"{QUEUE_LINK['delay_ms']:g} ms: measured {qm.queue_pkts} (error {q_err:+d}), "
              f"{qm.received} of {qm.sent} probes delivered at {qm.rate_mbit:.3f} Mbit/s")
        loss_errs = []
        for tag, want in zip(("6", "7"), LOSS_PCTS, strict=True):
            a, b = net.get(f"blh{tag}a"), net.get(f"blh{tag}b")
            a.cmd(f"ping -n -q -c 5 -i 0.05 -W 1 {b.IP()} >/dev/null")
            got = linkmeasure.measure_loss(a, b, b.IP(), workdir=logdir / f"loss{tag}")
            loss_errs.append(got - want)
            print(f"loss {want:g} %: measured {got:.2f} % of 10000 one-way probes (error {got - want:+.2f} points)")
        loss_err = max(loss_errs, key=abs)
        worst_ms = max(abs(r["err_ms"]) for r in rows)
        worst_pct = max(r["err_pct"] for r in rows)
        ok_rtt = all(abs(r["err_ms"]) <= max(1.0, 0.02 * r["expected_ms"]) for r in rows)
        ok_q, ok_loss = abs(q_err) <= 1, abs(loss_err) <= 1.0
        print(
            f"targets: RTT error <= max(1 ms, 2 %): {'met' if ok_rtt else 'NOT met'}; "
            f"rate within 5 %: {'met' if bw_err <= 5 else 'NOT met'}; "
            f"queue within 1 packet: {'met' if ok_q else 'NOT met'}; "
            f"loss within 1 point: {'met' if ok_loss else 'NOT met'}  "
            f"(peer RTT without emulation: {base:.2f} ms; {time.monotonic() - t0:.1f} s)"
        )
        result.update(
            max_rtt_error_ms=round(worst_ms, 3),
            max_rtt_error_pct=round(worst_pct, 3),
            bw_error_pct=round(bw_err, 3),
            goodput_mbit=round(goodput, 3),
            peer_rtt_ms=round(base or 0.0, 3),
            max_rtt_error_beyond_peer_ms=round(max(abs(r["err_ms"] - (base or 0.0)) for r in rows), 3),
            rtt_targets_met=ok_rtt,
            bw_target_met=bw_err <= 5,
            queue_limit_error_pkts=q_err,
            queue_pkts_measured=qm.queue_pkts,
            loss_error_pct=round(loss_err, 3),
            targets_met=ok_rtt and bw_err <= 5 and ok_q and ok_loss,
        )
    finally:
        net.stop()
        for k, v in saved.items():
            host_env.write_sysctl(k, v)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Link classes for Mininet that are never quietly unlike their spec: netem where it exists, else a relay.

Mininet's ``TCLink(delay=...)`` prints an error and runs *without* the delay when the kernel lacks
``sch_netem`` (as this machine's does). cdnlab instead picks, per run, one of:

* :class:`PlainLink` -- a veth pair (no delay, loss or rate), TX offloads off on both ends;
* :class:`RateLink` -- a veth pair with an HTB rate limit on both ends' egress (rate only), verified;
* :class:`NetemLink` -- a veth pair with netem at the root of each egress (S. Hemminger, "Network
  Emulation with NetEm", LCA 2005) and, with a rate, HTB + ``pfifo`` under it, checked afterwards with
  ``tc``: a missing netem, delay, rate or queue raises;
* :class:`RelayLink` -- two veth pairs through a hidden network namespace owned by a userspace delay
  line (:mod:`testbed.net.relay`) with HTB on its egress interfaces for the rate.

:func:`choose_link_class` decides between netem and the relay (``auto`` probes netem once, in a throwaway
namespace); :func:`link_class_for` gives the class for one link's parameters. Every link accepts TCLink's
parameters (``delay`` as '20ms' or ``delay_ms`` as a number, ``bw`` in Mbit/s, ``loss`` in %,
``max_queue_size`` in packets) plus ``delay_ms_ba`` for the node2->node1 direction of asymmetric links.

Queues. With a rate (``bw``) the bottleneck queue is the HTB leaf (a ``pfifo``), ``max_queue_size``
packets per direction; by default one bandwidth-delay product, at least 100 packets
(:func:`default_queue_pkts`; 50 Mbit/s x 40 ms RTT -> 167 packets), which lets one TCP flow fill the link
without adding more than one RTT of queueing delay. The relay's delay line itself holds up to 10000
frames per direction (tail drop beyond), or ``max_queue_size`` when the link has no rate. A netem link
has the same two limits (netem's ``limit``, and the ``pfifo`` under it), so ``queue_pkts`` means the same
queue in both modes: frames waiting to be sent, not frames in flight.

After ``net.start()`` call :func:`finish_links`: Open vSwitch removes the qdisc of every port it adds,
so the HTB/netem on switch-side interfaces is re-applied there (with the port's QoS set to
``linux-noop`` so OVS leaves it alone) and every link is verified. The relay's own HTB lives in its
namespace and is unaffected.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mininet.link import Link

from testbed.net import host_env
from testbed.net.relay_pool import RelayError, RelayPool, RelayProcess, counters_by_process, shared_pool
from testbed.net.spec import MAX_BW_MBIT, MAX_DELAY_MS, MAX_QUEUE_PKTS
from testbed.util import wait_until

RELAY_DELAY_LINE_PKTS = 10000
OFFLOADS = " ".join(host_env.OFFLOADS_OFF)  # tx off tso off gso off gro off
# TCLink-only parameters that make no sense for the classes here (silently ignoring them would lie)
_UNSUPPORTED = ("jitter", "speedup", "use_hfsc", "use_tbf", "enable_ecn", "enable_red", "latency_ms")


class LinkEmulationError(RuntimeError):
    """A link could not be made exactly as specified (missing netem, tc failure, relay did not start)."""


# -- pure helpers -----------------------------------------------------------------------------------
_DELAY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|usec|ms|msec|s|sec)\s*$")
_DELAY_UNIT_MS = {"us": 1e-3, "usec": 1e-3, "ms": 1.0, "msec": 1.0, "s": 1000.0, "sec": 1000.0}


def parse_delay(value: str | float | int | None) -> float | None:
    """One-way delay in milliseconds from ``'20ms'``, ``'500us'``, ``'0.1s'`` or a number (taken as ms).

    ``None`` and ``''`` mean "no delay" (None). A string without a unit is rejected: ``tc`` would read
    ``'20'`` as 20 microseconds, Mininet users usually mean milliseconds.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"delay must be a number of ms or a string like '20ms', not {value!r}")
    if isinstance(value, int | float):
        ms = float(value)
    elif isinstance(value, str):
        m = _DELAY_RE.match(value)
        if not m:
            raise ValueError(
                f"bad delay {value!r}: expected a number with a unit, e.g. '20ms', '500us', '0.1s'"
            )
        ms = float(m.group(1)) * _DELAY_UNIT_MS[m.group(2)]
    else:
        raise ValueError(f"delay must be a number of ms or a string like '20ms', not {value!r}")
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"delay must be finite and >= 0 ms, not {value!r}")
    return ms


_RATE_UNITS = {
    "bit": 1,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "tbit": 1e12,
    "bps": 8,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
}


def parse_tc_rate(text: str) -> float:
    """Bits per second from a tc rate such as ``50Mbit``, ``1500Kbit``, ``2Gbit``, ``125000bps``."""
    m = re.match(r"^([0-9]*\.?[0-9]+)([A-Za-z]*)$", text.strip())
    if not m or m.group(2).lower() not in _RATE_UNITS:
        raise ValueError(f"not a tc rate: {text!r}")
    return float(m.group(1)) * _RATE_UNITS[m.group(2).lower()]


def check_htb(tc_class_show: str, bw_mbit: float) -> str | None:
    """None if ``tc class show`` output has an HTB class at ``bw_mbit`` (within 1 %), else the problem."""
    m = re.search(r"class htb \S+ .*?\brate (\S+)", tc_class_show)
    if not m:
        return f"no HTB class installed (tc class show: {tc_class_show.strip()!r})"
    got = parse_tc_rate(m.group(1)) / 1e6
    if abs(got - bw_mbit) > 0.01 * bw_mbit:
        return f"HTB rate is {got:g} Mbit/s, expected {bw_mbit:g}"
    return None


def check_netem(tc_qdisc_show: str, delay_ms: float | None, loss_pct: float | None,
                limit: int | None = None) -> str | None:
    """None if ``tc qdisc show`` output has netem with this delay (within 1 %/10 us), loss and (if given)
    ``limit`` in packets, else the problem."""
    m = re.search(r"qdisc netem \S+ [^\n]*", tc_qdisc_show)
    if not m:
        return f"netem is not installed (tc qdisc show: {tc_qdisc_show.strip()!r})"
    line = m.group(0)
    if limit is not None:
        lim = re.search(r"\blimit (\d+)", line)
        if not lim or int(lim.group(1)) != limit:
            return f"netem limit is not {limit} packets: {line!r}"
    if not delay_ms and re.search(r"\bdelay ([1-9][0-9.]*|0\.[0-9]*[1-9])", line):
        return f"netem has a delay where the spec has none: {line!r}"
    if delay_ms:
        d = re.search(r"\bdelay ([0-9.]+)(us|ms|s)\b", line)
        if not d:
            return f"netem has no delay (expected {delay_ms:g} ms): {line!r}"
        got = parse_delay(d.group(1) + d.group(2)) or 0.0
        if abs(got - delay_ms) > max(0.01, 0.01 * delay_ms):
            return f"netem delay is {got:g} ms, expected {delay_ms:g} ms"
    if loss_pct:
        lo = re.search(r"\bloss ([0-9.]+)%", line)
        if not lo or abs(float(lo.group(1)) - loss_pct) > 1e-3:
            return f"netem loss is not {loss_pct:g}%: {line!r}"
    return None


def check_pfifo(tc_qdisc_show: str, queue_pkts: int) -> str | None:
    """None if ``tc qdisc show`` output has a ``pfifo`` of ``queue_pkts`` packets (the bottleneck queue)."""
    m = re.search(r"qdisc pfifo \S+ [^\n]*\blimit (\d+)p", tc_qdisc_show)
    if not m:
        return f"no pfifo bottleneck queue installed (tc qdisc show: {tc_qdisc_show.strip()!r})"
    if int(m.group(1)) != queue_pkts:
        return f"the bottleneck queue is {m.group(1)} packets, expected {queue_pkts}"
    return None


def default_queue_pkts(bw_mbit: float, rtt_ms: float, mtu: int = 1500) -> int:
    """Bottleneck queue in packets: one bandwidth-delay product, at least 100 packets."""
    bdp_bytes = bw_mbit * 1e6 / 8 * rtt_ms / 1000
    return max(100, math.ceil(bdp_bytes / mtu))


@dataclass(frozen=True)
class LinkShape:
    """What a link must do, per direction (ab = node1->node2, ba = node2->node1)."""

    delay_ab_ms: float = 0.0
    delay_ba_ms: float = 0.0
    bw_mbit: float | None = None
    loss_pct: float = 0.0
    queue_pkts: int | None = None  # None: the default of the class

    @property
    def needs_emulation(self) -> bool:
        """True if the link needs netem or the relay (delay, loss, or a queue without a rate: the delay
        line's limit), not just a veth (+ HTB)."""
        return bool(self.delay_ab_ms or self.delay_ba_ms or self.loss_pct
                    or (self.queue_pkts is not None and not self.bw_mbit))

    @property
    def bottleneck_queue(self) -> int:
        if self.queue_pkts is not None:
            return self.queue_pkts
        assert self.bw_mbit
        return default_queue_pkts(self.bw_mbit, self.delay_ab_ms + self.delay_ba_ms)


def link_shape(
    delay: str | float | None = None,
    delay_ms: float | None = None,
    delay_ms_ba: float | None = None,
    bw: float | None = None,
    loss: float | None = None,
    max_queue_size: int | None = None,
) -> LinkShape:
    """Validate TCLink-style parameters into a :class:`LinkShape` (ValueError names the bad one)."""
    d1 = parse_delay(delay)
    d2 = parse_delay(delay_ms)
    if d1 is not None and d2 is not None and abs(d1 - d2) > 1e-9:
        raise ValueError(f"delay={delay!r} and delay_ms={delay_ms!r} disagree")
    ab = d1 if d1 is not None else (d2 or 0.0)
    ba_p = parse_delay(delay_ms_ba)
    ba = ab if ba_p is None else ba_p
    if bw is not None:
        if isinstance(bw, bool) or not isinstance(bw, int | float) or not math.isfinite(bw) or bw <= 0:
            raise ValueError(f"bw must be a positive number of Mbit/s, not {bw!r}")
        if bw > MAX_BW_MBIT:
            raise ValueError(f"bw={bw!r} Mbit/s is beyond what a veth + HTB can emulate (max {MAX_BW_MBIT})")
    loss_v = 0.0 if loss is None else loss
    if isinstance(loss_v, bool) or not isinstance(loss_v, int | float) or not 0 <= loss_v <= 100:
        raise ValueError(f"loss must be a percentage within 0..100, not {loss!r}")
    if max_queue_size is not None and (
        isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int)
        or not 1 <= max_queue_size <= MAX_QUEUE_PKTS
    ):
        raise ValueError(f"max_queue_size must be an integer number of packets within 1..{MAX_QUEUE_PKTS}, "
                         f"not {max_queue_size!r}")
    for name, d in (("delay", ab), ("delay_ms_ba", ba)):
        if not 0 <= d <= MAX_DELAY_MS:
            raise ValueError(f"{name} must be within 0..{MAX_DELAY_MS} ms, not {d!r}")
    return LinkShape(ab, ba, float(bw) if bw else None, float(loss_v), max_queue_size)


# -- choosing ---------------------------------------------------------------------------------------
def netem_probe() -> tuple[bool, str]:
    """Try ``tc qdisc add ... netem delay 1ms`` on a veth in a throwaway namespace: (works, detail)."""
    if os.geteuid() != 0:
        return False, "not root: cannot probe for netem"
    unshare = shutil.which("unshare")
    if not unshare:
        return False, "unshare(1) not found: cannot probe for netem"
    script = (
        "ip link add cdnp0 type veth peer name cdnp1 && ip link set cdnp0 up && "
        "tc qdisc add dev cdnp0 root netem delay 1ms && tc qdisc show dev cdnp0"
    )
    try:
        r = subprocess.run([unshare, "--net", "sh", "-c", script], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"netem probe failed to run: {e}"
    ok = r.returncode == 0 and "netem" in r.stdout
    return ok, (r.stdout + r.stderr).strip()


@functools.cache
def netem_available() -> bool:
    """True if this kernel has a working ``sch_netem`` (probed once per process)."""
    return netem_probe()[0]


def choose_link_class(mode: str = "auto", probe: Callable[[], bool] | None = None) -> str:
    """'netem' or 'relay' for links with delay/loss. ``mode``: auto | netem | relay."""
    probe = probe or netem_available
    if mode == "relay":
        return "relay"
    if mode == "netem":
        if not probe():
            raise LinkEmulationError(
                "link mode 'netem' was forced but this kernel has no netem (sch_netem): "
                "use mode 'relay' or 'auto' (cdnlab up --links relay)"
            )
        return "netem"
    if mode == "auto":
        return "netem" if probe() else "relay"
    raise ValueError(f"link mode must be auto, netem or relay, not {mode!r}")


def link_class_for(mode: str = "auto", probe: Callable[[], bool] | None = None, **params: Any) -> type[Link]:
    """The link class for one link's TCLink-style ``params`` (delay/delay_ms/delay_ms_ba/bw/loss/...)."""
    shape = link_shape(**{k: params[k] for k in _SHAPE_KEYS if k in params})
    if shape.needs_emulation:
        return NetemLink if choose_link_class(mode, probe) == "netem" else RelayLink
    if shape.bw_mbit:
        return RateLink
    return PlainLink


_SHAPE_KEYS = ("delay", "delay_ms", "delay_ms_ba", "bw", "loss", "max_queue_size")


def _pop_shape(params: dict[str, Any]) -> LinkShape:
    bad = [k for k in _UNSUPPORTED if params.get(k)]
    if bad:
        raise LinkEmulationError(f"link parameters {bad} are not supported by cdnlab's link classes")
    for k in _UNSUPPORTED:
        params.pop(k, None)
    for k in ("txo", "rxo", "gro", "disable_gro"):
        params.pop(k, None)
    try:
        return link_shape(**{k: params.pop(k) for k in _SHAPE_KEYS if k in params})
    except ValueError as e:
        raise LinkEmulationError(f"bad link parameters: {e}") from e


# -- shell snippets ----------------------------------------------------------------------------------
def htb_commands(dev: str, bw_mbit: float, queue_pkts: int, parent: str | None = None) -> list[str]:
    """tc commands: HTB with one class at ``bw_mbit`` and a ``pfifo`` of ``queue_pkts`` under it; at the
    root (replacing what is there), or under ``parent`` (a class id such as ``1:1``)."""
    burst = max(15000, int(bw_mbit * 1e6 / 8 * 0.001))  # >= 1 ms worth of bytes
    where = f"parent {parent}" if parent else "root"
    return [
        *([] if parent else [f"tc qdisc del dev {dev} root >/dev/null 2>&1 || true"]),
        f"tc qdisc add dev {dev} {where} handle 5: htb default 1",
        f"tc class add dev {dev} parent 5: classid 5:1 htb rate {bw_mbit:g}mbit burst {burst} quantum 1600",
        f"tc qdisc add dev {dev} parent 5:1 handle 10: pfifo limit {queue_pkts}",
    ]


def htb_rate_command(dev: str, bw_mbit: float) -> str:
    """The tc command that changes the rate of :func:`htb_commands`' class in place (a bandwidth trace's
    step, :mod:`testbed.net.traces`): queued packets stay, the new rate applies at once."""
    burst = max(15000, int(bw_mbit * 1e6 / 8 * 0.001))
    return f"tc class change dev {dev} parent 5: classid 5:1 htb rate {bw_mbit:g}mbit burst {burst} quantum 1600"


def _check_rate(link: Any, mbit: float) -> None:
    if not getattr(link, "shape", None) or not link.shape.bw_mbit:
        raise LinkEmulationError(f"{link}: a link without a rate (bw) has no HTB class to change")
    if not 0 < mbit <= MAX_BW_MBIT:
        raise LinkEmulationError(f"rate {mbit!r} Mbit/s is outside (0, {MAX_BW_MBIT}]")


def netem_commands(dev: str, shape: LinkShape, delay_ms: float) -> list[str]:
    """tc commands for one direction of a :class:`NetemLink`: netem at the root (``delay_ms``, the shape's
    loss) and, with a rate, HTB + ``pfifo`` of the bottleneck queue as its child. The delay line holds
    :data:`RELAY_DELAY_LINE_PKTS` frames, or ``queue_pkts`` when the link has no rate -- the relay's limits."""
    loss = f" loss {shape.loss_pct:g}%" if shape.loss_pct else ""
    limit = RELAY_DELAY_LINE_PKTS if shape.bw_mbit else (shape.queue_pkts or RELAY_DELAY_LINE_PKTS)
    cmds = [
        f"tc qdisc del dev {dev} root >/dev/null 2>&1 || true",
        f"tc qdisc add dev {dev} root handle 1: netem limit {limit} delay {delay_ms:g}ms{loss}",
    ]
    if shape.bw_mbit:
        cmds += htb_commands(dev, shape.bw_mbit, shape.bottleneck_queue, parent="1:1")
    return cmds


def _node_run(node, cmd: str) -> None:
    """Run ``cmd`` in a Mininet node's shell; raise with its output if it fails."""
    out = node.cmd(f"{cmd} 2>&1; echo __rc=$?")
    rc = out.rstrip().rsplit("__rc=", 1)
    if len(rc) != 2 or rc[1].strip() != "0":
        raise LinkEmulationError(f"{node.name}: `{cmd}` failed: {rc[0].strip()}")


def _node_exec(node, cmd: str) -> None:
    """Run ``cmd`` in its own process in a Mininet node's network namespace; raise with its output if it
    fails. Safe from any thread: unlike :func:`_node_run` it never touches the node's shell, which Mininet
    lets run one command at a time (a trace's rate change from its thread while a test or experiment runs
    ``node.cmd`` would trip ``sendCmd``'s assertion)."""
    argv = ["mnexec", "-a", str(node.pid), "sh", "-c", cmd]
    if getattr(node, "isRemote", False):  # a node on another server (testbed.net.cluster): run it there
        from testbed.net.servers import command

        argv = command(node.serverIP, argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise LinkEmulationError(f"{node.name}: `{cmd}` failed (exit {r.returncode}): {(r.stdout + r.stderr).strip()}")


def offloads_off(node, intf: str) -> None:
    """TX checksum/TSO/GSO and GRO off (OVS's userspace datapath and the relay copy frames verbatim)."""
    host_env.offloads_off(intf, node=node)


class PlainLink(Link):
    """A Mininet veth link with TX offloads off on both ends; rejects delay/loss/bw instead of ignoring them."""

    def __init__(self, node1, node2, **params: Any) -> None:
        shape = _pop_shape(params)
        if shape.needs_emulation or shape.bw_mbit:
            raise LinkEmulationError(f"PlainLink {node1.name}-{node2.name} cannot emulate {shape}")
        super().__init__(node1, node2, **params)
        offloads_off(self.intf1.node, self.intf1.name)
        offloads_off(self.intf2.node, self.intf2.name)

    def verify(self) -> None:
        return None


class RateLink(Link):
    """A veth link with an HTB rate limit (``bw`` Mbit/s, ``max_queue_size`` pfifo) on both egresses."""

    def __init__(self, node1, node2, **params: Any) -> None:
        self.shape = _pop_shape(params)
        if self.shape.needs_emulation or not self.shape.bw_mbit:
            raise LinkEmulationError(
                f"RateLink {node1.name}-{node2.name} needs bw and no delay/loss: {self.shape}"
            )
        super().__init__(node1, node2, **params)
        try:
            for intf in (self.intf1, self.intf2):
                offloads_off(intf.node, intf.name)
            self._apply((self.intf1, self.intf2))
            self.verify()
        except BaseException:
            self.delete()
            raise

    def _apply(self, intfs) -> None:
        assert self.shape.bw_mbit
        for intf in intfs:
            for c in htb_commands(intf.name, self.shape.bw_mbit, self.shape.bottleneck_queue):
                _node_run(intf.node, c)

    def finish(self) -> None:
        """After ``net.start()``: OVS clears the qdisc of a port it adds; make it keep ours and re-apply."""
        self._apply(_keep_qdiscs_on_ovs_ports(self))
        self.verify()

    def set_rate(self, mbit: float) -> None:
        """Change both directions' rate now (a bandwidth trace's step)."""
        _check_rate(self, mbit)
        for intf in (self.intf1, self.intf2):
            _node_exec(intf.node, htb_rate_command(intf.name, mbit))
        self.shape = replace(self.shape, bw_mbit=float(mbit))

    def verify(self) -> None:
        """Raise LinkEmulationError unless both HTB classes are installed at the right rate."""
        assert self.shape.bw_mbit
        for intf in (self.intf1, self.intf2):
            problem = check_htb(intf.node.cmd(f"tc class show dev {intf.name}"), self.shape.bw_mbit)
            if problem:
                raise LinkEmulationError(f"{intf.name}: {problem}")


class NetemLink(Link):
    """A veth pair shaped by netem on each end's egress, verified after configuration.

    Per direction: ``netem`` at the root (delay, loss; S. Hemminger, "Network Emulation with NetEm",
    LCA 2005) and, with a rate, HTB with a ``pfifo`` of the bottleneck queue as netem's child
    (:func:`netem_commands`). Frames leave netem's delay line into the rate limiter, so the ``pfifo``
    holds only frames waiting to be sent, exactly as the relay's queue does; Mininet's TCLink puts netem
    *under* HTB instead, where netem's ``limit`` also counts the frames still in flight on the delay (on a
    500 ms, 1.5 Mbit/s link about 62 of a 100-packet limit). Raises LinkEmulationError where the kernel has
    no netem, or when ``tc`` shows anything unlike the spec.
    """

    def __init__(self, node1, node2, **params: Any) -> None:
        self.shape = _pop_shape(params)
        if not netem_available():
            raise LinkEmulationError(
                f"NetemLink {node1.name}-{node2.name}: this kernel has no netem; use RelayLink (--links relay)"
            )
        super().__init__(node1, node2, **params)
        try:
            for intf in (self.intf1, self.intf2):
                offloads_off(intf.node, intf.name)
            self._apply((self.intf1, self.intf2))
            self.verify()
        except BaseException:
            self.delete()
            raise

    def _delay(self, intf) -> float:
        return self.shape.delay_ab_ms if intf is self.intf1 else self.shape.delay_ba_ms

    def _apply(self, intfs) -> None:
        for intf in intfs:
            for c in netem_commands(intf.name, self.shape, self._delay(intf)):
                _node_run(intf.node, c)

    def finish(self) -> None:
        """After ``net.start()``: OVS clears the qdisc of a port it adds; make it keep ours and re-apply."""
        self._apply(_keep_qdiscs_on_ovs_ports(self))
        self.verify()

    def set_rate(self, mbit: float) -> None:
        """Change both directions' rate now (a bandwidth trace's step): the HTB class under netem."""
        _check_rate(self, mbit)
        for intf in (self.intf1, self.intf2):
            _node_exec(intf.node, htb_rate_command(intf.name, mbit))
        self.shape = replace(self.shape, bw_mbit=float(mbit))

    def verify(self) -> None:
        """Raise LinkEmulationError unless both ends have the spec's netem (delay, loss, limit), rate and queue."""
        s = self.shape
        for intf in (self.intf1, self.intf2):
            qdiscs = intf.node.cmd(f"tc qdisc show dev {intf.name}")
            limit = RELAY_DELAY_LINE_PKTS if s.bw_mbit else (s.queue_pkts or RELAY_DELAY_LINE_PKTS)
            problem = check_netem(qdiscs, self._delay(intf), s.loss_pct, limit)
            if problem is None and s.bw_mbit:
                problem = check_htb(intf.node.cmd(f"tc class show dev {intf.name}"), s.bw_mbit) or check_pfifo(
                    qdiscs, s.bottleneck_queue)
            if problem:
                raise LinkEmulationError(f"{intf.name}: {problem}")


# -- the relay link --------------------------------------------------------------------------------
_relay_numbers = itertools.count(1)


def relay_log_dir() -> Path:
    d = Path(os.environ.get("CDNLAB_RELAY_LOG_DIR") or Path(tempfile.gettempdir()) / "cdnlab-relays")
    d.mkdir(parents=True, exist_ok=True)
    return d


class RelayLink(Link):
    """node1 -- [veth] -- relay namespace (delay line + HTB) -- [veth] -- node2, looking like one Mininet link.

    ``link.intf1`` (e.g. ``s1-eth3``) is on node1 and ``link.intf2`` on node2, as for any Mininet link.
    The delay line is one link of a relay process of a :class:`~testbed.net.relay_pool.RelayPool` (one
    process per core serves every link): the link's two inner ends ``cdnr<N>a/b`` live in that process's
    network namespace. When the process dies -- its last link stopped, or SIGKILL via PR_SET_PDEATHSIG
    when the Python process that made the link dies -- the namespace and the veth pairs vanish with it.
    Make links from the main thread (PDEATHSIG follows the creating thread).

    Parameters (besides Mininet's ``port1/port2/intfName1/intfName2/addr1/addr2/params1/params2``):
    ``delay`` ('20ms') or ``delay_ms`` (float): one-way delay node1->node2 (and back unless
    ``delay_ms_ba`` is given); ``bw`` Mbit/s (HTB on the relay's egress interfaces, both directions);
    ``loss`` % per direction; ``max_queue_size`` packets (bottleneck queue with bw, delay-line limit
    without); ``seed`` for the loss RNG; ``pool`` the RelayPool to use (default: one shared per ``state``
    and ``log_dir``); ``outer_offloads=False`` leaves TX offloads on the nodes' ends to the caller (the
    builder turns them off on every interface of a node with one command); ``state`` a :class:`~testbed.net.state.RunState` that gets the relay processes' PIDs
    (role ``relay``); ``log_dir`` for the processes' ``relay-proc-*.log`` (default
    ``$CDNLAB_RELAY_LOG_DIR`` or ``/tmp/cdnlab-relays``).
    """

    def __init__(
        self,
        node1,
        node2,
        *,
        seed: int | None = None,
        state=None,
        log_dir: str | Path | None = None,
        pool: RelayPool | None = None,
        outer_offloads: bool = True,
        **params: Any,
    ) -> None:
        self.shape = _pop_shape(params)
        self.outer_offloads = outer_offloads
        self.number = next(_relay_numbers)
        self.seed = self.number if seed is None else seed
        self.pool = pool or shared_pool(Path(log_dir or relay_log_dir()), state)
        self.relay: RelayProcess | None = None
        self.final: dict[str, Any] | None = None  # the counters when the link was removed
        self.ra, self.rb = f"cdnr{self.number}a", f"cdnr{self.number}b"
        self.intf1 = self.intf2 = None
        self._made: list[tuple[Any, str]] = []
        params.pop("fast", None)
        try:
            super().__init__(node1, node2, fast=True, **params)
        except RelayError as e:
            self._teardown()
            raise LinkEmulationError(f"relay link {node1.name}-{node2.name}: {e}") from e
        except BaseException:
            self._teardown()
            raise

    # Link.__init__ calls this (fast=True) to make the "pair": here two pairs through the relay.
    def makeIntfPair(
        self,
        intfname1,
        intfname2,
        addr1=None,
        addr2=None,
        node1=None,
        node2=None,  # noqa: N802
        deleteIntfs=True,
    ):  # noqa: N803, ARG002
        self.relay = self.pool.place()
        # one script in the relay's namespace (few programs: each exec costs) makes both veth pairs, each
        # outer end directly in its node's namespace (moving a device there afterwards waits for an RCU
        # grace period, ~12 ms), turns offloads off on all four ends, then brings the inner ends up
        adds = ["link set lo up"]
        outer = []
        for node, name, addr, peer in ((node1, intfname1, addr1, self.ra), (node2, intfname2, addr2, self.rb)):
            adds.append(self._veth_into(node, name, addr, peer))
            outer += self._outer_offloads(node, name)
        self._serve(adds, outer)

    def _veth_into(self, node, name: str, addr: str | None, peer: str) -> str:
        """The ``ip -batch`` line making the veth pair ``peer`` (here) -- ``name`` (in ``node``'s namespace)."""
        address = f" address {addr}" if addr else ""
        self._made.append((node, name))
        return f"link add name {peer} type veth peer name {name}{address} netns {node.pid}"

    def _outer_offloads(self, node, name: str) -> list[str]:
        if not self.outer_offloads:
            return []
        return [f"nsenter -t {node.pid} -n ethtool -K {name} {OFFLOADS} >/dev/null 2>&1 || true"]

    def _serve(self, adds: list[str], outer: list[str]) -> None:
        """In the relay's namespace: ``adds`` (``ip -batch`` lines), offloads off on the two inner ends
        ``ra``/``rb`` (and ``outer``), both up, the rate limit on them; then the relay serves the link."""
        s = self.shape
        relay = self.relay
        assert relay is not None
        delay_line = RELAY_DELAY_LINE_PKTS if s.bw_mbit else (s.queue_pkts or RELAY_DELAY_LINE_PKTS)
        script = ["set -e", "ip -batch - <<'EOF'", *adds, "EOF"]
        for dev in (self.ra, self.rb):
            vlan = "rxvlan off txvlan off"
            script.append(f"ethtool -K {dev} {OFFLOADS} {vlan} rx-vlan-stag-hw-parse off tx-vlan-stag-hw-insert off "
                          f">/dev/null 2>&1 || ethtool -K {dev} {OFFLOADS} {vlan} >/dev/null 2>&1 || "
                          f"ethtool -K {dev} {OFFLOADS} >/dev/null")  # the last for a tunnel's tap device
        script += outer
        script += ["ip -batch - <<'EOF'", f"link set {self.ra} up", f"link set {self.rb} up", "EOF"]
        if s.bw_mbit:
            for dev in (self.ra, self.rb):
                script += htb_commands(dev, s.bw_mbit, s.bottleneck_queue)
        self._in_ns("\n".join(script))
        if s.bw_mbit:
            self._verify_htb()
        self.pool.add(relay, self.number, a=self.ra, b=self.rb, delay_ms=s.delay_ab_ms,
                      delay_ms_ba=s.delay_ba_ms, loss_pct=s.loss_pct, queue_pkts=delay_line, seed=self.seed)

    def _in_ns(self, script: str) -> str:
        assert self.relay is not None
        r = self.relay.run_in_ns(script)
        if r.returncode != 0:
            raise LinkEmulationError(
                f"relay link {self.number}: namespace setup failed: {(r.stdout + r.stderr).strip()}"
            )
        return r.stdout

    def _verify_htb(self) -> None:
        assert self.shape.bw_mbit
        for dev in (self.ra, self.rb):
            problem = check_htb(self._in_ns(f"tc class show dev {dev}"), self.shape.bw_mbit)
            if problem:
                raise LinkEmulationError(f"relay link {self.number} {dev}: {problem}")

    def set_rate(self, mbit: float) -> None:
        """Change both directions' rate now (a bandwidth trace's step): the HTB classes on the relay's
        own devices, in its namespace."""
        _check_rate(self, mbit)
        self._in_ns("\n".join(["set -e", *(htb_rate_command(dev, mbit) for dev in (self.ra, self.rb))]))
        self.shape = replace(self.shape, bw_mbit=float(mbit))

    def verify(self) -> None:
        """Raise LinkEmulationError if the relay is gone or its rate limit is not in place."""
        if not self.alive():
            raise LinkEmulationError(
                f"relay link {self.number} is not being relayed; log {self.log_path}: {self.log_tail()}"
            )
        if self.shape.bw_mbit:
            self._verify_htb()

    # -- inspection ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The PID of the relay process serving this link (it serves others too)."""
        return self.relay.pid if self.relay is not None and self.relay.proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.relay.log_path if self.relay is not None else None

    def alive(self) -> bool:
        return self.relay is not None and self.relay.alive() and self.number in self.relay.links

    def log_tail(self, n: int = 2000) -> str:
        return self.relay.log_tail(n) if self.relay is not None else "(no relay)"

    def counters(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The link's counters: so far (``"final": false``) while it is relayed, else those it had when it was
        removed (``"final": true``); None if its relay process died (or never answered)."""
        if self.alive():
            assert self.relay is not None
            got = counters_by_process({self.relay: [self.number]}, timeout)
            return got.get((self.relay, self.number))
        return self.final

    # -- teardown -----------------------------------------------------------------------------------
    def _stop_relay(self) -> None:
        if self.relay is not None:
            final = self.pool.remove(self.relay, self.number)
            if final is not None:
                self.final = final
            self.relay = None

    def _teardown(self) -> None:
        if self.relay is not None and self.relay.alive():  # a half-made link: its pairs in the relay's netns
            self.relay.run_in_ns(f"ip link del {self.ra}; ip link del {self.rb}")
        self._stop_relay()
        for node, name in self._made:  # delete our ends (the kernel removes their peers in the relay's netns)
            node.cmd(f"ip link del {name} >/dev/null 2>&1")
        self._made.clear()

    def delete(self) -> None:
        """Stop relaying and remove both veth pairs (idempotent)."""
        self._stop_relay()
        for intf in (self.intf1, self.intf2):
            if intf is not None:
                intf.delete()
        self.intf1 = self.intf2 = None
        self._teardown()

    def stop(self) -> None:
        self.delete()

    def status(self) -> str:
        if self.intf1 is None or self.intf2 is None:
            return "(deleted)"
        return f"({self.intf1.status()} {self.intf2.status()} relay {'OK' if self.alive() else 'DEAD'})"

    def __str__(self) -> str:
        return f"{self.intf1}<~relay{self.number}~>{self.intf2}"


def relay_pids(net) -> list[int]:
    """PIDs of the running relay processes of a Mininet network (each serves several links)."""
    pids = {ln.pid for ln in net.links if isinstance(ln, RelayLink) and ln.alive() and ln.pid is not None}
    return sorted(pids)


def relay_counters(relay_links: list[RelayLink], timeout: float = 10.0) -> dict[RelayLink, dict[str, Any]]:
    """The counters so far of many relayed links, with one request per relay process; a link whose process
    is gone or silent is left out."""
    by_proc: dict[RelayProcess, list[int]] = {}
    for ln in relay_links:
        if ln.alive():
            assert ln.relay is not None
            by_proc.setdefault(ln.relay, []).append(ln.number)
    got = counters_by_process(by_proc, timeout)
    return {ln: got[(ln.relay, ln.number)] for ln in relay_links if (ln.relay, ln.number) in got}


def _keep_qdiscs_on_ovs_ports(link) -> list:
    """Give the link's OVS switch ports QoS type ``linux-noop`` (OVS then leaves their qdiscs alone).

    Returns those interfaces: OVS already removed their qdiscs when it added the ports.
    """
    from mininet.node import OVSSwitch

    found = []
    for intf in (link.intf1, link.intf2):
        if isinstance(intf.node, OVSSwitch):
            cmd = f"ovs-vsctl -- set port {intf.name} qos=@q -- --id=@q create qos type=linux-noop"
            _node_run(intf.node, cmd)
            found.append(intf)
    return found


def finish_links(net) -> None:
    """Call once after ``net.start()``: re-apply qdiscs OVS removed from its ports, then verify every link.

    Raises LinkEmulationError if any link is not as specified.
    """
    for ln in net.links:
        finish = getattr(ln, "finish", None)
        if callable(finish):
            finish()
    verify_links(net)


def verify_links(net) -> None:
    """Re-check every cdnlab link of ``net`` (call after ``net.start()``); raises LinkEmulationError."""
    for ln in net.links:
        verify = getattr(ln, "verify", None)
        if callable(verify):
            verify()


def wait_gone(ifnames: list[str], timeout: float = 5.0) -> None:
    """Wait until none of ``ifnames`` exists in the root namespace (after a relay died)."""

    def gone() -> bool:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        return not any(re.search(rf"^\d+: {re.escape(n)}[@:]", out, re.M) for n in ifnames)

    wait_until(gone, timeout, what=f"interfaces {ifnames} removed")


__all__ = [
    "LinkEmulationError",
    "LinkShape",
    "NetemLink",
    "PlainLink",
    "RateLink",
    "RelayLink",
    "check_htb",
    "check_netem",
    "choose_link_class",
    "default_queue_pkts",
    "finish_links",
    "htb_commands",
    "link_class_for",
    "link_shape",
    "netem_available",
    "netem_probe",
    "parse_delay",
    "parse_tc_rate",
    "relay_counters",
    "relay_pids",
    "verify_links",
    "wait_gone",
]

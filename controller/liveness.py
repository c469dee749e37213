"""Active liveness of anycast members (pure state machine; the app sends and receives the packets).

Every ``interval_ms`` the controller packet-outs a probe straight to each member's switch port:

* ``tcp``: a TCP SYN to VIP:port from a reserved probe IP/MAC (the member holds the VIP on its loopback).
  The kernel answers SYN-ACK when a process listens (alive) or RST when none does (dead: the service
  process was killed). Replies to the probe IP reach the controller by a table-0 flow; after a SYN-ACK
  the controller sends a RST so no half-open connection lingers (the half-open-scan idea, RFC 9293 3.5.2).
* ``icmp``: an ICMP echo request to the member's unicast IP (RFC 792), for UDP-only services: proves the
  host is up, not the process.

No answer within ``timeout_ms`` is a failure; ``threshold`` consecutive failures, or one RST, withdraw
the member; ``threshold`` consecutive successes restore it. Each probe has its own token (TCP source port
or ICMP id), so late answers are matched to the right probe. Port status (a member's access link going
down) withdraws at once as well (handled by the core).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from contract.netview import ProbeView

TOKEN_MIN, TOKEN_MAX = 20000, 60000


@dataclass
class Prober:
    service: str
    member: str
    cfg: ProbeView
    alive: bool = True
    fails: int = 0
    oks: int = 0
    next_at: float = 0.0
    outstanding: dict[int, float] = field(default_factory=dict)  # token -> deadline
    last_rtt_ms: float | None = None
    sent_at: dict[int, float] = field(default_factory=dict)

    def _fail(self, hard: bool) -> bool:
        self.oks = 0
        self.fails = self.cfg.threshold if hard else self.fails + 1
        if self.alive and self.fails >= self.cfg.threshold:
            self.alive = False
            return True
        return False

    def _ok(self) -> bool:
        self.fails = 0
        self.oks += 1
        if not self.alive and self.oks >= self.cfg.threshold:
            self.alive = True
            return True
        return False


@dataclass(frozen=True)
class ProbeToSend:
    service: str
    member: str
    token: int
    kind: str


@dataclass(frozen=True)
class Transition:
    service: str
    member: str
    alive: bool
    reason: str


class Liveness:
    """All probers; :meth:`tick` says which probes to send, :meth:`answer` digests replies."""

    def __init__(self) -> None:
        self.probers: dict[tuple[str, str], Prober] = {}
        self.by_token: dict[int, Prober] = {}
        self._next_token = TOKEN_MIN

    def add(self, service: str, member: str, cfg: ProbeView) -> None:
        self.probers[(service, member)] = Prober(service, member, cfg)

    def _token(self) -> int:
        for _ in range(TOKEN_MAX - TOKEN_MIN):
            t = self._next_token
            self._next_token = TOKEN_MIN if t + 1 >= TOKEN_MAX else t + 1
            if t not in self.by_token:
                return t
        raise RuntimeError("no free probe token")

    def tick(
        self, now: float, can_probe: Callable[[str, str], bool] = lambda s, m: True
    ) -> tuple[list[ProbeToSend], list[Transition]]:
        """Expire unanswered probes (failures) and return the probes due now.

        Members for which ``can_probe`` is false (their switch is not connected) are neither probed nor
        failed: their state is kept until probing is possible again."""
        sends, trans = [], []
        for p in self.probers.values():
            if not can_probe(p.service, p.member):
                for tok in p.outstanding:
                    self.by_token.pop(tok, None)
                p.outstanding.clear()
                p.sent_at.clear()
                continue
            for tok, deadline in list(p.outstanding.items()):
                if now >= deadline:
                    del p.outstanding[tok]
                    p.sent_at.pop(tok, None)
                    self.by_token.pop(tok, None)
                    if p._fail(hard=False):
                        trans.append(
                            Transition(p.service, p.member, False, f"{p.cfg.threshold} probes unanswered")
                        )
            if now >= p.next_at:
                tok = self._token()
                p.outstanding[tok] = now + p.cfg.timeout_ms / 1000
                p.sent_at[tok] = now
                self.by_token[tok] = p
                p.next_at = now + p.cfg.interval_ms / 1000
                sends.append(ProbeToSend(p.service, p.member, tok, p.cfg.kind))
        return sends, trans

    def answer(self, token: int, ok: bool, now: float) -> Transition | None:
        """A reply to probe ``token``: ``ok`` (SYN-ACK / echo reply) or refused (RST)."""
        p = self.by_token.pop(token, None)
        if p is None:
            return None  # late, duplicate or foreign
        p.outstanding.pop(token, None)
        sent = p.sent_at.pop(token, None)
        if sent is not None:
            p.last_rtt_ms = (now - sent) * 1000
        if ok:
            if p._ok():
                return Transition(p.service, p.member, True, "probe answered")
            return None
        if p._fail(hard=True):
            return Transition(p.service, p.member, False, "connection refused (RST)")
        return None

    def status(self) -> dict[str, dict[str, object]]:
        return {
            f"{p.service}/{p.member}": {
                "alive": p.alive,
                "consecutive_failures": p.fails,
                "last_rtt_ms": p.last_rtt_ms,
            }
            for p in self.probers.values()
        }

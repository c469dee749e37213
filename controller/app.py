"""The thin Ryu app: unpack OpenFlow events, call :class:`controller.core.ControllerCore`, send its messages.

All decisions live in the pure core; this module only knows Ryu (through controller/ryu_adapter.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from contract.netview import NetView
from controller import ryu_adapter as ra
from controller.core import ControllerCore
from controller.flows import Message, to_ryu

log = logging.getLogger("cdnlab.controller")

# Filled by controller.__main__ before the app manager instantiates the app.
SETTINGS: dict[str, Any] = {"view": None, "lldp": True}

ofp_event = ra.ofp_event
set_ev_cls = ra.set_ev_cls
MAIN, CONFIG, DEAD = ra.MAIN_DISPATCHER, ra.CONFIG_DISPATCHER, ra.DEAD_DISPATCHER


class CdnlabController(ra.app_manager.RyuApp):
    OFP_VERSIONS = [ra.ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": ra.wsgi().WSGIApplication}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        view: NetView | None = SETTINGS.get("view")
        if view is None:
            raise RuntimeError("controller.app.SETTINGS['view'] is not set (start with python -m controller)")
        self.core = ControllerCore(view, wall_clock_us=lambda: time.time_ns() // 1000)
        self.datapaths: dict[int, Any] = {}
        self._parts: dict[tuple[int, str], set[int]] = {}  # multipart state replies being collected
        from controller import rest

        rest.register(kwargs["wsgi"], self)
        intervals = [a.probe.interval_ms for a in view.anycast]
        self.tick_s = min(0.05, max(0.002, min(intervals) / 4000)) if intervals else 0.25
        self.threads.append(ra.hub.spawn(self._ticker))
        if SETTINGS.get("lldp"):
            self.threads.append(ra.hub.spawn(self._lldp_check))

    # ------------------------------------------------------------------ plumbing
    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            dp = self.datapaths.get(m.dpid)
            if dp is None:
                continue
            try:
                dp.send_msg(to_ryu(dp, m))
            except Exception:  # noqa: BLE001 - one bad message must not stop the controller
                log.exception("cannot send %r", m)

    def _ticker(self) -> None:
        while True:
            try:
                self.send(self.core.tick())
            except Exception:  # noqa: BLE001
                log.exception("tick failed")
            ra.hub.sleep(self.tick_s)

    def _lldp_check(self) -> None:
        api, _ = ra.topology_api()
        while True:
            ra.hub.sleep(2)
            try:
                links = api.get_link(self)
                found = {(lk.src.dpid, lk.src.port_no, lk.dst.dpid, lk.dst.port_no) for lk in links}
                if self.datapaths:
                    self.core.set_lldp_links(found)
            except Exception:  # noqa: BLE001
                log.exception("LLDP check failed")

    # ------------------------------------------------------------------ events
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG)
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        self.datapaths[dp.id] = dp
        self.send(self.core.switch_connected(dp.id))
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN)
    def _port_desc(self, ev: Any) -> None:
        dp = ev.msg.datapath
        for p in ev.msg.body:
            if p.port_no < dp.ofproto.OFPP_MAX and self._is_down(dp, p):
                self.send(self.core.port_status(dp.id, p.port_no, up=False))

    @staticmethod
    def _is_down(dp: Any, desc: Any) -> bool:
        ofp = dp.ofproto
        return bool(desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN, DEAD])
    def _state(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state == DEAD and dp.id is not None and self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            self._parts.pop((dp.id, "flows"), None)
            self._parts.pop((dp.id, "groups"), None)
            self.core.switch_disconnected(dp.id)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, [CONFIG, MAIN])
    def _flow_stats(self, ev: Any) -> None:
        self._state_part(ev.msg, "flows", {f.cookie for f in ev.msg.body})

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, [CONFIG, MAIN])
    def _group_desc(self, ev: Any) -> None:
        self._state_part(ev.msg, "groups", {g.group_id for g in ev.msg.body})

    def _state_part(self, msg: Any, what: str, ids: set[int]) -> None:
        dp = msg.datapath
        acc = self._parts.setdefault((dp.id, what), set())
        acc |= ids
        if not msg.flags & dp.ofproto.OFPMPF_REPLY_MORE:
            self.send(self.core.switch_state(dp.id, what, self._parts.pop((dp.id, what))))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN)
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        down = msg.reason == dp.ofproto.OFPPR_DELETE or self._is_down(dp, msg.desc)
        self.send(self.core.port_status(dp.id, msg.desc.port_no, up=not down))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        in_port = msg.match.get("in_port")
        if in_port is None or msg.data is None:
            return
        self.send(self.core.packet_in(msg.datapath.id, in_port, bytes(msg.data)))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG, MAIN])
    def _error(self, ev: Any) -> None:
        m = ev.msg
        log.error(
            "switch %s: OpenFlow error type=%s code=%s data=%s",
            m.datapath.id,
            m.type,
            m.code,
            bytes(m.data[:64]).hex() if m.data else "",
        )

"""Read an MPEG-DASH manifest (MPD, ISO/IEC 23009-1) into what an adaptive-bitrate client needs.

Supported: one Period, one video ``AdaptationSet`` whose ``SegmentTemplate`` (on the set or on each
``Representation``) uses ``@duration`` and ``$Number$`` addressing (the DASH-IF live profile, which both
on-demand and live services use); ``type="static"`` with ``mediaPresentationDuration`` or
``type="dynamic"`` with ``availabilityStartTime``. Anything else is rejected with :class:`MpdError` naming
the element or attribute, never guessed.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

NS = "{urn:mpeg:dash:schema:mpd:2011}"
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


#: a template identifier (ISO/IEC 23009-1 §5.3.9.4.4): $$, or a name with an optional %0<width>d
_IDENT = re.compile(r"\$(RepresentationID|Number|Bandwidth|Time|)(%0(\d+)d)?\$")


class MpdError(ValueError):
    """A manifest this client cannot play; the message names the element or attribute."""


def parse_duration(text: str, what: str) -> float:
    """An ``xs:duration`` such as ``PT1M30.5S`` in seconds (days, hours, minutes, seconds)."""
    m = _DURATION.match(text.strip())
    if not m or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise MpdError(f"{what}: {text!r} is not an xs:duration such as PT4S")
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def parse_time(text: str, what: str) -> float:
    """An ``xs:dateTime`` (UTC ``Z`` or with an offset) as a POSIX timestamp."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MpdError(f"{what}: {text!r} is not an xs:dateTime such as 2026-01-01T00:00:00Z") from None
    if dt.tzinfo is None:
        raise MpdError(f"{what}: {text!r} has no time zone (DASH times are UTC: end it with Z)")
    return dt.timestamp()


@dataclass(frozen=True)
class Representation:
    id: str
    bandwidth: int  # bit/s, as the manifest promises
    width: int = 0
    height: int = 0
    init: str = ""  # URL relative to the manifest
    media: str = ""  # template with $Number$


@dataclass(frozen=True)
class Manifest:
    """What the client plays: the ladder (ascending bandwidth) and how to name and time segments."""

    live: bool
    segment_s: float
    start_number: int
    representations: tuple[Representation, ...]
    duration_s: float | None = None  # on demand
    availability_start: float | None = None  # live
    window_s: float | None = None  # live: timeShiftBufferDepth
    presentation_delay_s: float | None = None  # live: suggestedPresentationDelay
    min_buffer_s: float = 0.0

    @property
    def bitrates_kbps(self) -> tuple[int, ...]:
        return tuple(r.bandwidth // 1000 for r in self.representations)

    @property
    def segments(self) -> int | None:
        """Number of segments of an on-demand presentation (None when live)."""
        if self.duration_s is None:
            return None
        return max(1, math.ceil(self.duration_s / self.segment_s - 1e-9))

    def segment_url(self, rep: Representation, number: int) -> str:
        return _fill(rep.media, rep, number)

    def init_url(self, rep: Representation) -> str:
        return _fill(rep.init, rep, None)

    def live_edge(self, now: float) -> int:
        """The newest available segment number at ``now`` (live; segment n ends n*d after the start)."""
        assert self.availability_start is not None
        return self.start_number - 1 + math.floor((now - self.availability_start) / self.segment_s + 1e-9)

    def available_at(self, number: int) -> float:
        """When segment ``number`` of a live presentation becomes available (its end)."""
        assert self.availability_start is not None
        return self.availability_start + (number - self.start_number + 1) * self.segment_s


def _fill(template: str, rep: Representation, number: int | None) -> str:
    def sub(m: re.Match[str]) -> str:
        ident, width = m.group(1), int(m.group(3) or 0)
        if ident == "":
            return "$"  # $$ is a literal dollar
        if ident == "RepresentationID" and not width:
            return rep.id
        if ident == "Bandwidth":
            return str(rep.bandwidth).zfill(width)
        if ident == "Number" and number is not None:
            return str(number).zfill(width)
        raise MpdError(
            f"SegmentTemplate: identifier ${m.group(0)[1:-1]}$ in {template!r} is not supported "
            "($Time$ addressing?)"
        )

    if "$" in _IDENT.sub("", template):
        raise MpdError(f"SegmentTemplate: unbalanced or unknown $ identifier in {template!r}")
    return _IDENT.sub(sub, template)


def _int(el: ET.Element, attr: str, where: str, default: int | None = None) -> int:
    v = el.get(attr)
    if v is None:
        if default is None:
            raise MpdError(f"{where}: missing @{attr}")
        return default
    try:
        return int(v)
    except ValueError:
        raise MpdError(f"{where}: @{attr}={v!r} is not an integer") from None


def parse_mpd(text: str | bytes) -> Manifest:
    """Parse a manifest; raises :class:`MpdError` naming what is wrong."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise MpdError(f"MPD: not well-formed XML ({e})") from None
    if root.tag != f"{NS}MPD":
        raise MpdError(f"MPD: the root element is {root.tag!r}, not MPD in the {NS[1:-1]} namespace")
    kind = root.get("type", "static")
    if kind not in ("static", "dynamic"):
        raise MpdError(f"MPD: @type={kind!r} (static or dynamic)")
    periods = root.findall(f"{NS}Period")
    if len(periods) != 1:
        raise MpdError(f"MPD: {len(periods)} Period elements; this client plays exactly one")
    sets = [
        a
        for a in periods[0].findall(f"{NS}AdaptationSet")
        if a.get("contentType", "video") == "video" and a.get("mimeType", "video/mp4").startswith("video/")
    ]
    if not sets:
        raise MpdError("Period: no video AdaptationSet")
    aset = sets[0]
    set_tpl = aset.find(f"{NS}SegmentTemplate")
    reps: list[Representation] = []
    seg_s: float | None = None
    start = 1
    for i, r in enumerate(aset.findall(f"{NS}Representation")):
        where = f"Representation[{i}]"
        rid = r.get("id")
        if not rid:
            raise MpdError(f"{where}: missing @id")
        tpl = r.find(f"{NS}SegmentTemplate")
        tpl = tpl if tpl is not None else set_tpl
        if tpl is None:
            raise MpdError(
                f"{where} ({rid}): no SegmentTemplate (SegmentBase and SegmentList are not supported)"
            )
        if tpl.find(f"{NS}SegmentTimeline") is not None:
            raise MpdError(f"{where} ({rid}): SegmentTimeline is not supported (use @duration)")
        timescale = _int(tpl, "timescale", f"{where} SegmentTemplate", 1)
        dur = _int(tpl, "duration", f"{where} SegmentTemplate")
        if timescale <= 0 or dur <= 0:
            raise MpdError(f"{where} SegmentTemplate: @duration and @timescale must be positive")
        d = dur / timescale
        if seg_s is not None and abs(d - seg_s) > 1e-6:
            raise MpdError(
                f"{where} ({rid}): segment duration {d} s differs from {seg_s} s (unaligned ladder)"
            )
        seg_s = d
        start = _int(tpl, "startNumber", f"{where} SegmentTemplate", 1)
        media = tpl.get("media")
        if not media or "$Number" not in media:
            raise MpdError(f"{where} SegmentTemplate: @media must hold $Number$")
        bw = _int(r, "bandwidth", where)
        if bw <= 0:
            raise MpdError(f"{where}: @bandwidth must be positive")
        reps.append(
            Representation(
                rid,
                bw,
                _int(r, "width", where, 0),
                _int(r, "height", where, 0),
                tpl.get("initialization", ""),
                media,
            )
        )
    if not reps or seg_s is None:
        raise MpdError("AdaptationSet: no Representation")
    reps.sort(key=lambda r: r.bandwidth)
    mbt = root.get("minBufferTime")
    common = {
        "segment_s": seg_s,
        "start_number": start,
        "representations": tuple(reps),
        "min_buffer_s": parse_duration(mbt, "MPD@minBufferTime") if mbt else 0.0,
    }
    if kind == "static":
        mpd_dur = root.get("mediaPresentationDuration") or periods[0].get("duration")
        if not mpd_dur:
            raise MpdError("MPD: a static MPD needs @mediaPresentationDuration")
        return Manifest(
            live=False, duration_s=parse_duration(mpd_dur, "MPD@mediaPresentationDuration"), **common
        )
    ast = root.get("availabilityStartTime")
    if not ast:
        raise MpdError("MPD: a dynamic MPD needs @availabilityStartTime")
    tsb, spd = root.get("timeShiftBufferDepth"), root.get("suggestedPresentationDelay")
    return Manifest(
        live=True,
        availability_start=parse_time(ast, "MPD@availabilityStartTime"),
        window_s=parse_duration(tsb, "MPD@timeShiftBufferDepth") if tsb else None,
        presentation_delay_s=parse_duration(spd, "MPD@suggestedPresentationDelay") if spd else None,
        **common,
    )

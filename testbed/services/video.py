"""Video at the origin: MPEG-DASH titles (ISO/IEC 23009-1) made of synthetic segments of exact sizes.

A :class:`VideoConfig` lists titles; each has a ladder of representations (default six, 0.3-6 Mbit/s) cut
into segments of ``segment_s`` seconds. The origin serves, for title ``T``:

* ``/dash/T/manifest.mpd`` - the MPD (``type="static"``, or ``type="dynamic"`` for a live title), one
  ``AdaptationSet`` with a ``SegmentTemplate`` (``$RepresentationID$/seg-$Number$.m4s``);
* ``/dash/T/<rep>/init.mp4`` - the initialisation segment (a few hundred bytes);
* ``/dash/T/<rep>/seg-<n>.m4s`` - media segment ``n`` (from 1).

**Synthetic segments, and why.** A segment's bytes are seeded pseudo-random data of exactly
``bandwidth * segment_s / 8`` bytes (times ``1 +/- size_variation`` per segment when set, which keeps the
mean), so the manifest's promise holds to the byte. Experiments on adaptive bitrate need exactly that: the
bytes on the wire per second of video are what the manifest says, at every bitrate, so the client's
choices and stalls depend on the network and the policy only, not on how an encoder treated a test
pattern; the content is the same on every machine without an encoder at set-up; any duration costs
nothing (segments are made on request and never stored at the origin). A browser's player cannot decode
them: it can fetch the manifest and segments (the headers are those of a real video origin) but
``MediaSource`` rejects the bytes.

**Cache headers** as video origins send them: segments and init segments never change, so
``public, max-age=31536000, immutable``; a static manifest ``public, max-age=60``; a live manifest a
fraction of a segment (``max-age`` half the segment duration, at least 1 s), so an edge never serves a
manifest older than the live edge it describes.

**Live.** A live title's segment ``n`` becomes available ``n * segment_s`` after the title's
``availabilityStartTime`` (when its first segment started), as the DASH live profile's
``SegmentTemplate`` with ``$Number$`` prescribes (ISO/IEC 23009-1 §5.3.9.5); a segment not yet available,
or older than the ``timeShiftBufferDepth`` window, is ``404`` with ``Cache-Control: no-store`` so no
cache keeps the miss.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PREFIX = "/dash"
MPD_TYPE = "application/dash+xml"
SEGMENT_TYPE = "video/iso.segment"  # the IANA type of ISO BMFF media segments (DASH-IF)
INIT_TYPE = "video/mp4"
SEGMENT_CACHE_CONTROL = "public, max-age=31536000, immutable"
VOD_MPD_CACHE_CONTROL = "public, max-age=60"
INIT_BYTES = 640

#: the default ladder (kbit/s) and each rung's picture size, as common 16:9 ladders pair them
DEFAULT_LADDER = (300, 750, 1200, 2400, 4000, 6000)
_HEIGHTS = ((400, 240), (1000, 360), (2000, 480), (3000, 720), (5000, 1080), (10**9, 1440))


#: a file name of a ``files`` title (no dot segments, no separators)
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
#: browsers' players fetch manifests and segments from another origin than the page's, as from any CDN
CORS = {"Access-Control-Allow-Origin": "*"}

#: a media segment's name, as the manifest writes it: ASCII digits, no leading zero
_SEGMENT = re.compile(r"seg-(0|[1-9][0-9]{0,9})\.m4s", re.ASCII)


def _floor(t: float, step: float) -> float:
    return t - t % step


def _height(kbps: int) -> int:
    return next(h for top, h in _HEIGHTS if kbps < top)


class VideoTitle(BaseModel):
    """One title: its ladder, segment length and duration, on demand or live."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("testcard", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    #: representations' bitrates in kbit/s, each the exact mean size of its segments
    bitrates_kbps: list[int] = Field(
        default_factory=lambda: list(DEFAULT_LADDER), min_length=1, max_length=16
    )
    segment_s: float = Field(2.0, gt=0, le=30)
    #: on demand: the title's length; live: ignored (a live title has no end)
    duration_s: float = Field(120.0, gt=0, le=86400)
    live: bool = False
    #: live: how far back segments stay available (the MPD's timeShiftBufferDepth)
    window_s: float = Field(60.0, gt=0, le=86400)
    #: live: the wall-clock time segment 1 started (availabilityStartTime); None: one window before the
    #: origin started (rounded down to a whole segment), so a full window is available from the start
    start_time: float | None = None
    #: ``synthetic``: segments of exact sizes made on request; ``files``: a DASH presentation on disk in
    #: ``directory`` (real media, e.g. made by ``python -m testbed.services.video_encode``), served as is
    source: Literal["synthetic", "files"] = "synthetic"
    directory: str | None = None

    @model_validator(mode="after")
    def _files(self) -> VideoTitle:
        if self.source == "files":
            if not self.directory:
                raise ValueError(
                    "directory: a title with source 'files' needs the directory of its presentation"
                )
            if self.live:
                raise ValueError("live: only synthetic titles can be live")
            if not (Path(self.directory) / "manifest.mpd").is_file():
                raise ValueError(f"directory: {self.directory} holds no manifest.mpd")
        return self

    @field_validator("bitrates_kbps")
    @classmethod
    def _ladder(cls, v: list[int]) -> list[int]:
        if any(b < 16 or b > 200_000 for b in v):
            raise ValueError("each bitrate must be 16 to 200000 kbit/s")
        if len(set(v)) != len(v):
            raise ValueError("bitrates must differ")
        return sorted(v)

    @property
    def segments(self) -> int:
        """How many segments an on-demand title has (the last may be shorter in time, never in size)."""
        return max(1, int(-(-self.duration_s // self.segment_s)))

    def rep_id(self, kbps: int) -> str:
        return f"v{kbps}"


class VideoConfig(BaseModel):
    """The titles an origin serves under ``/dash/`` (see the module doc)."""

    model_config = ConfigDict(extra="forbid")

    titles: list[VideoTitle] = Field(
        default_factory=lambda: [VideoTitle(), VideoTitle(name="testcard-live", live=True)], max_length=64
    )
    #: each segment's size is the ladder's exact mean times (1 + u * size_variation), u uniform in [-1, 1]
    size_variation: float = Field(0.0, ge=0, le=0.9)
    seed: int = 1

    @model_validator(mode="after")
    def _unique(self) -> VideoConfig:
        names = [t.name for t in self.titles]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"titles: duplicate names {dup}")
        return self


@dataclass(frozen=True)
class VideoFile:
    """What the origin answers for one video path: bytes to send (or a status) and the headers."""

    status: int
    body: bytes
    headers: dict[str, str]


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}".rstrip("0").rstrip(".") + "S"


def _iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class VideoLibrary:
    """The titles of a :class:`VideoConfig`: manifests, segment sizes and bytes, availability (pure given
    ``now``; :meth:`lookup` is what the origin's handler calls)."""

    def __init__(self, cfg: VideoConfig | None = None, started: float | None = None) -> None:
        self.cfg = cfg or VideoConfig()
        self.titles = {t.name: t for t in self.cfg.titles}
        started = time.time() if started is None else started
        self.start_times = {
            t.name: (t.start_time if t.start_time is not None else _floor(started - t.window_s, t.segment_s))
            for t in self.cfg.titles
        }

    # ---- sizes and bytes ---------------------------------------------------------------------------
    def segment_size(self, title: VideoTitle, kbps: int, number: int) -> int:
        """Bytes of segment ``number`` at ``kbps``: the ladder's promise, varied around it when configured."""
        exact = kbps * 1000 * title.segment_s / 8
        v = self.cfg.size_variation
        if v:
            u = random.Random(f"{self.cfg.seed}:{title.name}:{number}:size").uniform(-1.0, 1.0)
            exact *= 1.0 + u * v
        return max(1, round(exact))

    def _bytes(self, key: str, size: int) -> bytes:
        block = random.Random(f"{self.cfg.seed}:{key}").randbytes(min(size, 65536))
        reps, rest = divmod(size, len(block))
        head = f"cdnlab {key}\n".encode()[:size]
        return (head + (block * reps + block[:rest])[len(head) :])[:size]

    def _etag(self, path: str) -> str:
        return '"' + hashlib.sha1(f"{self.cfg.seed}:{path}".encode()).hexdigest()[:16] + '"'

    # ---- manifests ---------------------------------------------------------------------------------
    def mpd(self, title: VideoTitle) -> str:
        """The title's MPD (ISO/IEC 23009-1, DASH-IF live profile, one video AdaptationSet)."""
        d_ms = round(title.segment_s * 1000)
        lines = ['<?xml version="1.0" encoding="UTF-8"?>']
        common = (
            'xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" '
            f'minBufferTime="{_iso_duration(2 * title.segment_s)}"'
        )
        if title.live:
            ast = self.start_times[title.name]
            lines.append(
                f'<MPD {common} type="dynamic" availabilityStartTime="{_iso_time(ast)}" '
                f'publishTime="{_iso_time(ast)}" minimumUpdatePeriod="PT30S" '
                f'timeShiftBufferDepth="{_iso_duration(title.window_s)}" '
                f'suggestedPresentationDelay="{_iso_duration(3 * title.segment_s)}">'
            )
        else:
            lines.append(
                f'<MPD {common} type="static" mediaPresentationDuration="{_iso_duration(title.duration_s)}">'
            )
        lines += [
            '  <Period id="1" start="PT0S">',
            '    <AdaptationSet id="1" contentType="video" mimeType="video/mp4" segmentAlignment="true" '
            'startWithSAP="1">',
            f'      <SegmentTemplate timescale="1000" duration="{d_ms}" startNumber="1" '
            'initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/seg-$Number$.m4s"/>',
        ]
        for kbps in title.bitrates_kbps:
            h = _height(kbps)
            lines.append(
                f'      <Representation id="{title.rep_id(kbps)}" bandwidth="{kbps * 1000}" '
                f'width="{h * 16 // 9}" height="{h}" codecs="avc1.64001f" frameRate="30"/>'
            )
        lines += ["    </AdaptationSet>", "  </Period>", "</MPD>", ""]
        return "\n".join(lines)

    def available(self, title: VideoTitle, number: int, now: float) -> bool:
        """Is segment ``number`` available at ``now``? (On demand: it exists; live: it has ended and is
        still inside the time-shift window.)"""
        if number < 1:
            return False
        if not title.live:
            return number <= title.segments
        end = self.start_times[title.name] + number * title.segment_s
        return end <= now and end >= now - title.window_s

    # ---- the origin's view -------------------------------------------------------------------------
    def lookup(self, path: str, now: float | None = None) -> VideoFile | None:
        """The answer for ``path`` under ``/dash/`` (None: not a video path, the origin answers 404)."""
        now = time.time() if now is None else now
        parts = path.removeprefix(PREFIX + "/").split("/")
        title = self.titles.get(parts[0]) if path.startswith(PREFIX + "/") else None
        if title is None:
            return None
        if title.source == "files":
            return self._file(title, parts[1:])
        if parts[1:] == ["manifest.mpd"]:
            cc = (
                f"public, max-age={max(1, int(title.segment_s / 2))}" if title.live else VOD_MPD_CACHE_CONTROL
            )
            body = self.mpd(title).encode()
            return VideoFile(
                200,
                body,
                {
                    "Content-Type": MPD_TYPE,
                    "Cache-Control": cc,
                    "ETag": '"' + hashlib.sha1(body).hexdigest()[:16] + '"',
                    **CORS,
                },
            )
        if len(parts) != 3:
            return None
        reps = {title.rep_id(k): k for k in title.bitrates_kbps}
        kbps = reps.get(parts[1])
        if kbps is None:
            return None
        name = parts[2]
        if name == "init.mp4":
            return VideoFile(
                200,
                self._bytes(path, INIT_BYTES),
                {
                    "Content-Type": INIT_TYPE,
                    "Cache-Control": SEGMENT_CACHE_CONTROL,
                    "ETag": self._etag(path),
                    **CORS,
                },
            )
        m = _SEGMENT.fullmatch(name)
        if m is None:
            return None
        number = int(m.group(1))
        if not self.available(title, number, now):
            why = "not yet available" if title.live and number >= 1 else "no such segment"
            if title.live and number >= 1 and self.start_times[title.name] + number * title.segment_s < now:
                why = "outside the time-shift window"
            return VideoFile(
                404,
                f"segment {number}: {why}\n".encode(),
                {"Content-Type": "text/plain", "Cache-Control": "no-store", **CORS},
            )
        size = self.segment_size(title, kbps, number)
        return VideoFile(
            200,
            self._bytes(path, size),
            {
                "Content-Type": SEGMENT_TYPE,
                "Cache-Control": SEGMENT_CACHE_CONTROL,
                "ETag": self._etag(path),
                **CORS,
            },
        )

    def _file(self, title: VideoTitle, parts: list[str]) -> VideoFile | None:
        """A file of a ``files`` title: only plain names one or two levels deep, inside its directory."""
        if not parts or len(parts) > 2 or not all(_FILE_PART.fullmatch(x) for x in parts):
            return None
        assert title.directory
        root = Path(title.directory).resolve()
        f = root.joinpath(*parts).resolve()
        if not f.is_relative_to(root) or not f.is_file():
            return None
        body = f.read_bytes()
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        if f.suffix == ".mpd":
            return VideoFile(
                200,
                body,
                {"Content-Type": MPD_TYPE, "Cache-Control": VOD_MPD_CACHE_CONTROL, "ETag": etag, **CORS},
            )
        ctype = SEGMENT_TYPE if f.suffix == ".m4s" and "init" not in f.name else INIT_TYPE
        return VideoFile(
            200, body, {"Content-Type": ctype, "Cache-Control": SEGMENT_CACHE_CONTROL, "ETag": etag, **CORS}
        )

    def describe(self) -> list[dict[str, object]]:
        """The titles for ``/_origin/catalog`` (``video``): name, manifest path, ladder, live."""
        return [
            {
                "name": t.name,
                "manifest": f"{PREFIX}/{t.name}/manifest.mpd",
                "bitrates_kbps": t.bitrates_kbps,
                "segment_s": t.segment_s,
                "live": t.live,
                **({} if t.live else {"duration_s": t.duration_s, "segments": t.segments}),
            }
            for t in self.cfg.titles
        ]

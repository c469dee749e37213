"""Stored partial content (RFC 9111 §3.3, §3.4; RFC 9110 §14): the byte ranges of one object a cache holds.

A cache may store an incomplete response (a ``206 Partial Content``) and use it for a later range request
that lies inside what it holds (§3.3). Parts can be combined only when they are of the same
representation: their validators match with the strong comparison (§3.4; a weak ``ETag`` or none at all
never combines, a strong one must be equal, else ``Last-Modified`` must be equal). When the parts cover
the whole representation they become one complete response.

Pure data and functions; the edge (:mod:`testbed.services.edge`) stores a :class:`PartialObject` per
object and variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes 4-9/10`` -> ``(4, 9, 10)``; ``bytes 4-9/*`` -> ``(4, 9, None)``; None when invalid (RFC 9110
    §14.4)."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total


def parse_range_spec(value: str | None) -> tuple[int | None, int | None] | None:
    """One ``bytes=`` range before the size is known: ``(first, last)`` with ``last`` None for ``first-``
    and ``first`` None for a suffix ``-n`` (then ``last`` is n). None for anything else (several ranges,
    other units, malformed): such requests are not served from parts."""
    m = _RANGE.fullmatch((value or "").replace(" ", ""))
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(2)) if m.group(2) else None
    if first is not None and last is not None and last < first:
        return None
    if first is None and not last:
        return None
    return first, last


def resolve(spec: tuple[int | None, int | None], total: int) -> tuple[int, int] | None:
    """A parsed range against a known size: inclusive ``(first, last)``, or None when unsatisfiable."""
    first, last = spec
    if first is None:  # suffix: the last ``last`` bytes
        assert last is not None
        return (max(0, total - last), total - 1) if total else None
    if first >= total:
        return None
    return first, total - 1 if last is None else min(last, total - 1)


def validator(etag: str | None, last_modified: str | None) -> str | None:
    """The strong validator parts are combined by: a strong ETag, else Last-Modified; None: none (§3.4)."""
    if etag:
        etag = etag.strip()
        return None if etag.startswith("W/") else "etag:" + etag
    return "lm:" + last_modified.strip() if last_modified else None


@dataclass
class PartialObject:
    """The stored ranges of one representation: non-overlapping ``(first, bytes)`` segments, sorted."""

    total: int
    validator: str | None
    headers: dict[str, str]  # of the latest part, without Content-Range/Content-Length
    response_time: float
    segments: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(b) for _, b in self.segments)

    def add(self, first: int, data: bytes) -> None:
        """Merge ``data`` at offset ``first`` (newer bytes win where parts overlap)."""
        merged: list[tuple[int, bytes]] = []
        cur_first, cur = first, data
        for s, b in self.segments:
            e = s + len(b)
            if e < cur_first or s > cur_first + len(cur):  # disjoint, not touching
                merged.append((s, b))
                continue
            lo = min(s, cur_first)
            hi = max(e, cur_first + len(cur))
            buf = bytearray(hi - lo)
            buf[s - lo : e - lo] = b
            buf[cur_first - lo : cur_first - lo + len(cur)] = cur
            cur_first, cur = lo, bytes(buf)
        merged.append((cur_first, cur))
        self.segments = sorted(merged)

    def covers(self, first: int, last: int) -> bool:
        return any(s <= first and last < s + len(b) for s, b in self.segments)

    def slice(self, first: int, last: int) -> bytes:
        for s, b in self.segments:
            if s <= first and last < s + len(b):
                return b[first - s : last - s + 1]
        raise KeyError((first, last))

    def complete(self) -> bytes | None:
        """The whole representation when the parts cover it, else None."""
        if len(self.segments) == 1 and self.segments[0][0] == 0 and len(self.segments[0][1]) == self.total:
            return self.segments[0][1]
        return None

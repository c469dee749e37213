"""Stored partial content: parsing ranges and Content-Range, merging parts, coverage (pure functions)."""

from __future__ import annotations

import pytest

from testbed.services.partial import PartialObject, parse_content_range, parse_range_spec, resolve, validator


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("bytes 4-9/10", (4, 9, 10)),
        ("bytes 0-0/*", (0, 0, None)),
        ("bytes 9-4/10", None),
        ("bytes 4-10/10", None),
        ("bytes */10", None),
        ("items 0-1/2", None),
        (None, None),
    ],
)
def test_content_range(value, want):
    assert parse_content_range(value) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, None)),
        ("bytes=-5", (None, 5)),
        ("bytes=0-1,5-6", None),
        ("bytes=-0", None),
        ("bytes=9-4", None),
        ("bytes=-", None),
        ("lines=0-1", None),
    ],
)
def test_range_spec(value, want):
    assert parse_range_spec(value) == want


def test_resolve_against_a_size():
    assert resolve((None, 5), 10) == (5, 9)
    assert resolve((None, 50), 10) == (0, 9)
    assert resolve((3, None), 10) == (3, 9)
    assert resolve((3, 99), 10) == (3, 9)
    assert resolve((10, None), 10) is None


def test_parts_merge_cover_and_complete():
    p = PartialObject(10, validator('"a"', None), {}, 0.0)
    p.add(0, b"0123")
    p.add(6, b"6789")
    assert p.covers(0, 3) and p.covers(6, 9) and not p.covers(3, 6) and p.complete() is None
    p.add(3, b"XYZ")  # overlaps the first part and touches the second: newer bytes win
    assert p.segments == [(0, b"012XYZ6789")] and p.complete() == b"012XYZ6789"
    assert p.slice(2, 4) == b"2XY" and p.size == 10


def test_only_strong_validators_combine():
    assert validator('W/"x"', "Mon, 01 Jan 2024 00:00:00 GMT") is None
    assert validator('"x"', None) == 'etag:"x"'
    assert validator(None, "Mon, 01 Jan 2024 00:00:00 GMT").startswith("lm:")
    assert validator(None, None) is None

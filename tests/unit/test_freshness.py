"""RFC 9111 freshness, age, storability and Vary rules (pure functions)."""

from __future__ import annotations

import pytest

from testbed.services.freshness import (
    RangeNotSatisfiable,
    current_age,
    etag_matches,
    format_http_date,
    freshness_lifetime,
    is_storable,
    needs_revalidation,
    not_modified,
    parse_cache_control,
    parse_http_date,
    parse_range,
    stale_if_error_window,
    vary_key,
    vary_names,
)

NOW = 1_750_000_000.0


def test_parse_cache_control_directives_and_quotes():
    cc = parse_cache_control('Public, MAX-AGE=60, no-cache="Set-Cookie", max-age=5,,')
    assert cc == {"public": None, "max-age": "60", "no-cache": "Set-Cookie"}
    assert parse_cache_control(None) == {}


def test_lifetime_prefers_s_maxage_then_max_age_then_expires():
    date = format_http_date(NOW)
    h = {"Cache-Control": "max-age=10, s-maxage=99", "Date": date, "Expires": format_http_date(NOW + 500)}
    assert freshness_lifetime(h) == 99
    assert freshness_lifetime(h, shared=False) == 10
    assert freshness_lifetime({"Date": date, "Expires": format_http_date(NOW + 500)}) == 500
    assert freshness_lifetime({"Date": date, "Expires": "0"}) == 0  # invalid Expires = already expired
    assert freshness_lifetime({"Cache-Control": "max-age=bogus"}) == 0


def test_no_heuristic_freshness():
    assert freshness_lifetime({"Last-Modified": format_http_date(NOW - 86400)}) == 0


def test_current_age_rfc9111_4_2_3():
    # Date 10 s before the response arrived, Age 3 from an upstream cache, 2 s response delay, 5 s resident
    h = {"Date": format_http_date(NOW - 10), "Age": "3"}
    age = current_age(h, request_time=NOW - 2, response_time=NOW, now=NOW + 5)
    assert age == pytest.approx(10 + 5)  # apparent age 10 > corrected age value 3+2
    h2 = {"Date": format_http_date(NOW), "Age": "30"}
    assert current_age(h2, NOW - 2, NOW, NOW + 5) == pytest.approx(30 + 2 + 5)


@pytest.mark.parametrize(
    ("resp", "req", "ok"),
    [
        ({"Cache-Control": "max-age=60"}, {}, True),
        ({"Cache-Control": "no-store, max-age=60"}, {}, False),
        ({"Cache-Control": "private, max-age=60"}, {}, False),
        ({"Cache-Control": "no-cache"}, {}, True),
        ({"Cache-Control": "max-age=60"}, {"Cache-Control": "no-store"}, False),
        ({"Cache-Control": "max-age=60", "Vary": "*"}, {}, False),
        ({"Cache-Control": "max-age=60"}, {"Authorization": "Basic eA=="}, False),
        ({"Cache-Control": "public, max-age=60"}, {"Authorization": "Basic eA=="}, True),
    ],
)
def test_is_storable(resp, req, ok):
    assert is_storable("GET", 200, req, resp) is ok


def test_is_storable_method_and_status():
    assert not is_storable("POST", 200, {}, {"Cache-Control": "max-age=60"})
    assert not is_storable("GET", 206, {}, {"Cache-Control": "max-age=60"})
    assert not is_storable("GET", 500, {}, {"Cache-Control": "max-age=60"})


def test_needs_revalidation():
    h = {"Cache-Control": "max-age=60"}
    assert not needs_revalidation(h, 10)
    assert needs_revalidation(h, 60)
    assert needs_revalidation({"Cache-Control": "no-cache, max-age=60"}, 0)
    assert needs_revalidation(h, 10, {"Cache-Control": "no-cache"})
    assert needs_revalidation(h, 10, {"Cache-Control": "max-age=5"})
    assert needs_revalidation(h, 10, {"Pragma": "no-cache"})


def test_stale_if_error_window():
    assert stale_if_error_window({"Cache-Control": "max-age=1, stale-if-error=30"}) == 30
    assert stale_if_error_window({"Cache-Control": "max-age=1"}, default=7) == 7
    assert stale_if_error_window({"Cache-Control": "max-age=1, must-revalidate, stale-if-error=30"}) == 0


def test_vary_key():
    assert vary_names({"Vary": "Accept-Language, accept-encoding"}) == ("accept-encoding", "accept-language")
    assert vary_names({"Vary": "*"}) is None
    assert vary_names({}) == ()
    names = ("accept-language",)
    assert vary_key(names, {"Accept-Language": "fr"}) == vary_key(names, {"accept-language": " fr "})
    assert vary_key(names, {"Accept-Language": "fr"}) != vary_key(names, {"Accept-Language": "de"})


def test_conditionals():
    assert etag_matches('"a", W/"b"', '"b"')
    assert etag_matches("*", '"x"')
    assert not etag_matches('"a"', '"b"')
    lm = parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT")
    assert not_modified({"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, None, lm)
    assert not not_modified({"If-Modified-Since": "Sun, 31 Dec 2023 00:00:00 GMT"}, None, lm)
    # If-None-Match takes precedence over If-Modified-Since
    assert not not_modified(
        {"If-None-Match": '"x"', "If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, '"y"', lm
    )


def test_parse_range():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-1000", 100) == (50, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None  # multi-range: whole representation
    assert parse_range("items=0-1", 100) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)

"""RFC 9111 freshness, age, storability and Vary rules (pure functions)."""

from __future__ import annotations

import pytest

from testbed.services.freshness import (
    RangeNotSatisfiable,
    current_age,
    etag_matches,
    format_http_date,
    freshness_lifetime,
    heuristic_lifetime,
    is_storable,
    needs_revalidation,
    not_modified,
    omitted_fields,
    parse_cache_control,
    parse_http_date,
    parse_range,
    policy_headers,
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
    assert not is_storable("GET", 304, {}, {"Cache-Control": "max-age=60"})
    assert not is_storable("GET", 500, {}, {})  # no explicit freshness, not heuristically cacheable


@pytest.mark.parametrize("status", [302, 307, 400, 403, 500, 503])
def test_any_final_status_with_explicit_freshness_is_storable(status):
    assert is_storable("GET", status, {}, {"Cache-Control": "max-age=60"})
    assert is_storable(
        "GET", status, {}, {"Expires": format_http_date(NOW + 60), "Date": format_http_date(NOW)}
    )
    assert not is_storable("GET", status, {}, {})


def test_must_understand_overrides_no_store_only_for_known_statuses():
    cc = {"Cache-Control": "must-understand, no-store, max-age=60"}
    assert is_storable("GET", 200, {}, cc)
    assert not is_storable("GET", 299, {}, cc)
    assert not is_storable("GET", 200, {}, {"Cache-Control": "no-store, max-age=60"})


def test_qualified_private_and_no_cache_omit_fields():
    h = {"Cache-Control": 'max-age=60, private="Set-Cookie, X-User", no-cache="X-Token"'}
    assert is_storable("GET", 200, {}, h)
    assert omitted_fields(h) == {"set-cookie", "x-user", "x-token"}
    assert omitted_fields(h, shared=False) == {"x-token"}
    assert not needs_revalidation(h, 1)  # qualified no-cache does not force revalidation
    assert not is_storable("GET", 200, {}, {"Cache-Control": "private, max-age=60"})


@pytest.mark.parametrize("value", ["100a", "1.5", "-1", "+10", "", "0x10", " 10"])
def test_invalid_max_age_makes_the_response_stale(value):
    date = format_http_date(NOW)
    h = {"Cache-Control": f"max-age={value}", "Date": date, "Expires": format_http_date(NOW + 500)}
    assert freshness_lifetime(h) == 0
    assert freshness_lifetime({"Cache-Control": f"s-maxage={value}, max-age=60"}) == 0


def test_delta_seconds_spacing_duplicates_and_clamp():
    assert freshness_lifetime({"Cache-Control": "max-age = 10"}) == 0
    assert freshness_lifetime({"Cache-Control": "max-age =10"}) == 0
    assert freshness_lifetime({"Cache-Control": "max-age=10, max-age=1000"}) == 10  # the first wins
    assert freshness_lifetime({"Cache-Control": "max-age=99999999999999"}) == 2**31
    assert freshness_lifetime({"Cache-Control": 'max-age="60"'}) == 60  # quoted-string form
    assert parse_cache_control('no-cache="a, b", max-age=5') == {"no-cache": "a, b", "max-age": "5"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", True),
        ("Sunday, 06-Nov-94 08:49:37 GMT", True),
        ("Sun Nov  6 08:49:37 1994", True),
        ("Sun, 06 Nov 1994 08:49:37 UTC", False),
        ("Sun, 06 Nov 1994 08:49:37 +1000", False),
        ("Sun, 6 Nov 1994 08:49:37 GMT", False),
        ("Sun 06 Nov 1994 08:49:37 GMT", False),
        ("Sun, 06  Nov 1994 08:49:37 GMT", False),
        ("sun, 06 NOV 1994 08:49:37 gmt", True),  # names in any case: robust parsing
        ("Sun, 06 Nov 1994 8:49:37 GMT", False),
        ("Sun, 06 Nov 1994 08.49.37 GMT", False),
        ("Sun, 31 Feb 1994 08:49:37 GMT", False),
        ("1994-11-06", False),
        ("0", False),
    ],
)
def test_http_date_exactly_the_three_formats(value, ok):
    got = parse_http_date(value)
    assert (got == 784111777.0) if ok else got is None


def test_invalid_expires_means_expired():
    date = format_http_date(NOW)
    assert freshness_lifetime({"Date": date, "Expires": "Sun, 06 Nov 2094 08:49:37 UTC"}) == 0
    assert freshness_lifetime({"Date": date, "Expires": format_http_date(NOW + 60)}) == 60


@pytest.mark.parametrize(("raw", "want"), [("30", 30), ("-5", 0), ("abc", 0), ("3.5", 0), ("9" * 20, 2**31)])
def test_age_header_parsing(raw, want):
    assert current_age({"Age": raw}, NOW, NOW, NOW) == want


def test_heuristic_freshness_is_a_fraction_of_the_age_since_last_modified():
    h = {"Date": format_http_date(NOW), "Last-Modified": format_http_date(NOW - 10_000)}
    assert heuristic_lifetime(200, h, 0.1, NOW) == pytest.approx(1000)
    assert heuristic_lifetime(200, h, 0.0, NOW) == 0  # turned off
    assert heuristic_lifetime(500, h, 0.1, NOW) == 0  # not heuristically cacheable
    assert heuristic_lifetime(200, {**h, "Cache-Control": "max-age=5"}, 0.1, NOW) == 0  # explicit wins
    assert heuristic_lifetime(200, {"Date": format_http_date(NOW)}, 0.1, NOW) == 0  # no Last-Modified


def test_request_max_stale_and_min_fresh():
    h = {"Cache-Control": "max-age=60"}
    assert not needs_revalidation(h, 70, {"Cache-Control": "max-stale"})
    assert not needs_revalidation(h, 70, {"Cache-Control": "max-stale=20"})
    assert needs_revalidation(h, 90, {"Cache-Control": "max-stale=20"})
    assert needs_revalidation(
        {"Cache-Control": "max-age=60, must-revalidate"}, 70, {"Cache-Control": "max-stale"}
    )
    assert needs_revalidation(
        {"Cache-Control": "max-age=60, proxy-revalidate"}, 70, {"Cache-Control": "max-stale"}
    )
    assert needs_revalidation({"Cache-Control": "s-maxage=60"}, 70, {"Cache-Control": "max-stale"})
    assert not needs_revalidation(h, 10, {"Cache-Control": "min-fresh=40"})
    assert needs_revalidation(h, 30, {"Cache-Control": "min-fresh=40"})


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


def test_vary_normalises_whitespace_and_accept_lists():
    k = ("accept-language", "foo")
    assert vary_key(k, {"Accept-Language": "en, de", "Foo": "1,2"}) == vary_key(
        k, {"Accept-Language": "DE,en ", "Foo": " 1, 2 "}
    )
    assert vary_key(("foo",), {"Foo": "1,2"}) != vary_key(("foo",), {"Foo": "2,1"})  # unknown: order kept
    assert vary_key(("accept-language",), {}) == ("",)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("max-age=600", True),
        ("no-store", True),
        ("max-age=600, stale-if-error=30, foo;a=1", True),
        ('max-age="600"', False),  # wrong type
        ("max-age=600, &&&&&", False),  # not a dictionary
        ("max-age", False),
        ("", False),
    ],
)
def test_targeted_field_must_be_a_structured_dictionary(value, ok):
    h = {"Cache-Control": "max-age=5", "CDN-Cache-Control": value, "Expires": "x"}
    got = policy_headers(h, ("CDN-Cache-Control",))
    assert (got["Cache-Control"] == value and "Expires" not in got) if ok else got is h

"""The MPD reader (testbed/measure/mpd.py): what it accepts, and that every refusal names the culprit."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from testbed.measure.mpd import MpdError, parse_duration, parse_mpd, parse_time

NS = "urn:mpeg:dash:schema:mpd:2011"

# set-level SegmentTemplate, Representations out of bandwidth order
STATIC = f"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="{NS}" type="static" mediaPresentationDuration="PT1M1S" minBufferTime="PT4S"
     profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0">
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="90000" duration="360000" startNumber="1"
                       initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/$Bandwidth$/seg-$Number$.m4s"/>
      <Representation id="hd" bandwidth="3000000" width="1280" height="720"/>
      <Representation id="sd" bandwidth="800000" width="640" height="360"/>
      <Representation id="fhd" bandwidth="6000000" width="1920" height="1080"/>
    </AdaptationSet>
  </Period>
</MPD>
"""

# a SegmentTemplate per Representation with a padded $Number%05d$, and an audio set before the video one
PER_REP = f"""<MPD xmlns="{NS}" type="static" mediaPresentationDuration="PT10S">
  <Period>
    <AdaptationSet contentType="audio" mimeType="audio/mp4">
      <SegmentTemplate duration="2" media="a/$Number$.m4s"/>
      <Representation id="aac" bandwidth="128000"/>
    </AdaptationSet>
    <AdaptationSet mimeType="video/mp4">
      <Representation id="b" bandwidth="2000000">
        <SegmentTemplate timescale="1000" duration="3000" startNumber="0"
                         initialization="init-$RepresentationID$.mp4" media="$RepresentationID$-$Number%05d$.m4s"/>
      </Representation>
      <Representation id="a" bandwidth="500000">
        <SegmentTemplate timescale="1000" duration="3000" startNumber="0"
                         initialization="init-$RepresentationID$.mp4" media="$RepresentationID$-$Number%05d$.m4s"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""

DYNAMIC = f"""<MPD xmlns="{NS}" type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z"
     timeShiftBufferDepth="PT1M" suggestedPresentationDelay="PT6S" minBufferTime="PT2S">
  <Period start="PT0S">
    <AdaptationSet contentType="video">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" media="$RepresentationID$/seg-$Number$.m4s"/>
      <Representation id="v1" bandwidth="1000000"/>
      <Representation id="v2" bandwidth="2000000"/>
    </AdaptationSet>
  </Period>
</MPD>
"""

T2026 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_static_mpd_with_a_set_level_template():
    m = parse_mpd(STATIC)
    assert not m.live and m.availability_start is None
    assert m.segment_s == 4.0 and m.duration_s == 61.0 and m.min_buffer_s == 4.0
    assert [r.id for r in m.representations] == ["sd", "hd", "fhd"]
    assert m.bitrates_kbps == (800, 3000, 6000)
    assert (m.representations[0].width, m.representations[0].height) == (640, 360)
    assert m.segments == math.ceil(61 / 4) == 16
    sd = m.representations[0]
    assert m.segment_url(sd, 12) == "sd/800000/seg-12.m4s"
    assert m.init_url(m.representations[2]) == "fhd/init.mp4"
    assert parse_mpd(STATIC.encode()) == m  # bytes as well as text


def test_per_representation_templates_with_padded_numbers():
    m = parse_mpd(PER_REP)
    assert [r.id for r in m.representations] == ["a", "b"]  # the audio set is skipped, video sorted
    assert m.segment_s == 3.0 and m.start_number == 0
    assert m.segments == math.ceil(10 / 3) == 4
    a, b = m.representations
    assert m.segment_url(a, 7) == "a-00007.m4s"
    assert m.segment_url(b, 123456) == "b-123456.m4s"
    assert m.init_url(b) == "init-b.mp4"
    assert m.min_buffer_s == 0.0


@pytest.mark.parametrize(
    "duration,segment,count", [("PT120S", 2000, 60), ("PT121S", 2000, 61), ("PT0.5S", 2000, 1)]
)
def test_segment_count_is_the_ceiling(duration, segment, count):
    m = parse_mpd(
        STATIC.replace("PT1M1S", duration).replace(
            'timescale="90000" duration="360000"', f'timescale="1000" duration="{segment}"'
        )
    )
    assert m.segments == count


def test_period_duration_stands_in_for_the_presentation_duration():
    text = STATIC.replace(' mediaPresentationDuration="PT1M1S"', "").replace(
        '<Period id="p0">', '<Period id="p0" duration="PT8S">'
    )
    assert parse_mpd(text).duration_s == 8.0


def test_dynamic_mpd():
    m = parse_mpd(DYNAMIC)
    assert m.live and m.segments is None and m.duration_s is None
    assert m.availability_start == T2026
    assert m.window_s == 60.0 and m.presentation_delay_s == 6.0 and m.min_buffer_s == 2.0
    assert m.live_edge(T2026 + 1.999) == 0
    assert m.live_edge(T2026 + 2) == 1
    assert m.live_edge(T2026 + 101) == 50
    assert m.available_at(1) == T2026 + 2 and m.available_at(50) == T2026 + 100
    assert m.segment_url(m.representations[1], 9) == "v2/seg-9.m4s"
    assert m.init_url(m.representations[0]) == ""


def test_dynamic_mpd_with_an_offset_time_zone():
    m = parse_mpd(DYNAMIC.replace("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00"))
    assert m.availability_start == T2026


def expect(text: str | bytes, *fragments: str) -> str:
    with pytest.raises(MpdError) as e:
        parse_mpd(text)
    msg = str(e.value)
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def test_not_xml():
    expect("this is not xml", "MPD", "XML")
    expect(b"<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'><Period>", "MPD", "XML")
    assert issubclass(MpdError, ValueError)


def test_wrong_root_or_namespace():
    expect(STATIC.replace(f'xmlns="{NS}"', ""), "root element", "MPD", NS)
    expect(STATIC.replace(NS, "urn:example:other"), "root element", NS)
    expect(f'<Manifest xmlns="{NS}"/>', "root element", "Manifest")


def test_bad_type():
    expect(STATIC.replace('type="static"', 'type="live"'), "@type", "live")


def test_period_count():
    two = STATIC.replace("</Period>", '</Period>\n  <Period id="p1"/>')
    expect(two, "2 Period")
    expect(f'<MPD xmlns="{NS}" mediaPresentationDuration="PT1S"/>', "0 Period")


def test_no_video_adaptation_set():
    audio_only = STATIC.replace(
        'contentType="video" mimeType="video/mp4"', 'contentType="audio" mimeType="audio/mp4"'
    )
    expect(audio_only, "Period", "no video AdaptationSet")
    subtitles = STATIC.replace('contentType="video" mimeType="video/mp4"', 'mimeType="application/ttml+xml"')
    expect(subtitles, "no video AdaptationSet")


def test_no_representation():
    empty = f'<MPD xmlns="{NS}" mediaPresentationDuration="PT1S"><Period><AdaptationSet/></Period></MPD>'
    expect(empty, "AdaptationSet", "no Representation")


def test_representation_without_bandwidth():
    expect(STATIC.replace(' bandwidth="800000"', ""), "Representation[1]", "@bandwidth", "missing")


def test_non_integer_bandwidth():
    msg = expect(STATIC.replace('bandwidth="800000"', 'bandwidth="800k"'), "Representation[1]", "@bandwidth")
    assert "'800k'" in msg and "integer" in msg
    expect(
        STATIC.replace('bandwidth="800000"', 'bandwidth="0"'), "Representation[1]", "@bandwidth", "positive"
    )


def test_representation_without_id():
    expect(STATIC.replace(' id="sd"', ""), "Representation[1]", "@id")


def test_segment_timeline_is_refused():
    tl = STATIC.replace(
        'media="$RepresentationID$/$Bandwidth$/seg-$Number$.m4s"/>',
        'media="$RepresentationID$/$Bandwidth$/seg-$Number$.m4s"><SegmentTimeline><S t="0" d="360000" r="14"/>'
        "</SegmentTimeline></SegmentTemplate>",
    )
    expect(tl, "Representation[0]", "SegmentTimeline")


def test_time_addressing_is_refused():
    time_only = STATIC.replace("seg-$Number$.m4s", "seg-$Time$.m4s")
    expect(time_only, "SegmentTemplate", "@media", "$Number$")
    # $Number$ and $Time$ together: accepted, but naming a segment says what is not supported
    both = parse_mpd(STATIC.replace("seg-$Number$.m4s", "seg-$Number$-$Time$.m4s"))
    with pytest.raises(MpdError) as e:
        both.segment_url(both.representations[0], 1)
    assert "SegmentTemplate" in str(e.value) and "$Time$" in str(e.value)


def test_no_segment_template_and_missing_duration():
    no_tpl = PER_REP.replace("<SegmentTemplate", "<SegmentBase").replace("</SegmentTemplate", "</SegmentBase")
    expect(no_tpl, "Representation", "no SegmentTemplate")
    expect(STATIC.replace(' duration="360000"', ""), "SegmentTemplate", "@duration")
    expect(STATIC.replace('duration="360000"', 'duration="0"'), "SegmentTemplate", "@duration")
    expect(STATIC.replace('timescale="90000"', 'timescale="x"'), "SegmentTemplate", "@timescale")


def test_mismatched_segment_durations():
    text = PER_REP.replace('duration="3000"', 'duration="2000"', 1)  # rep "b" 2 s, rep "a" 3 s
    msg = expect(text, "Representation[1]", "(a)", "differs")
    assert "3.0" in msg and "2.0" in msg


def test_static_needs_a_duration():
    expect(STATIC.replace(' mediaPresentationDuration="PT1M1S"', ""), "static", "@mediaPresentationDuration")


def test_dynamic_needs_an_availability_start_time():
    expect(
        DYNAMIC.replace(' availabilityStartTime="2026-01-01T00:00:00Z"', ""),
        "dynamic",
        "@availabilityStartTime",
    )


def test_availability_start_time_without_a_time_zone():
    expect(
        DYNAMIC.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"), "availabilityStartTime", "time zone"
    )
    expect(DYNAMIC.replace("2026-01-01T00:00:00Z", "yesterday"), "availabilityStartTime", "'yesterday'")


def test_bad_durations_name_the_attribute():
    expect(STATIC.replace("PT1M1S", "4S"), "MPD@mediaPresentationDuration", "'4S'", "xs:duration")
    expect(STATIC.replace('minBufferTime="PT4S"', 'minBufferTime="4"'), "MPD@minBufferTime", "'4'")
    expect(
        DYNAMIC.replace('timeShiftBufferDepth="PT1M"', 'timeShiftBufferDepth="PTM"'),
        "MPD@timeShiftBufferDepth",
    )
    expect(
        DYNAMIC.replace('suggestedPresentationDelay="PT6S"', 'suggestedPresentationDelay="6s"'),
        "MPD@suggestedPresentationDelay",
    )


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("PT1M30.5S", 90.5),
        ("P1DT1H", 90000.0),
        ("PT4S", 4.0),
        ("PT0S", 0.0),
        ("PT2H", 7200.0),
        ("P2D", 172800.0),
        ("PT0.25S", 0.25),
        (" PT1M ", 60.0),
        ("P1DT2H3M4.5S", 86400 + 7200 + 180 + 4.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("text", ["4S", "P", "PT", "", "PT-1S", "P1Y", "P1M", "PT1.S", "T4S", "PT4s", "1:30"])
def test_parse_duration_refuses(text):
    with pytest.raises(MpdError) as e:
        parse_duration(text, "Thing@attr")
    assert "Thing@attr" in str(e.value) and repr(text) in str(e.value)


def test_parse_time():
    assert parse_time("2026-01-01T00:00:00Z", "x") == T2026
    assert parse_time("2026-01-01T00:00:01.500Z", "x") == T2026 + 1.5
    assert parse_time("2025-12-31T19:00:00-05:00", "x") == T2026
    with pytest.raises(MpdError, match="X@y.*time zone"):
        parse_time("2026-01-01T00:00:00", "X@y")
    with pytest.raises(MpdError, match="X@y.*xs:dateTime"):
        parse_time("01/01/2026", "X@y")


def test_escaped_dollar_in_a_template_is_a_literal_dollar():
    m = parse_mpd(STATIC.replace("seg-$Number$.m4s", "seg$$-$Number$.m4s"))
    assert m.segment_url(m.representations[0], 3) == "sd/800000/seg$-3.m4s"

"""Titles of real media on disk (``source: files``) and the ffmpeg command that makes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from testbed.services.video import MPD_TYPE, SEGMENT_CACHE_CONTROL, VideoConfig, VideoLibrary, VideoTitle
from testbed.services.video_encode import LADDER, ffmpeg_command


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "real"
    d.mkdir()
    (d / "manifest.mpd").write_text("<MPD/>")
    (d / "init-0.m4s").write_bytes(b"init")
    (d / "seg-0-1.m4s").write_bytes(b"media one")
    (tmp_path / "secret.txt").write_text("outside")
    (d / "link.m4s").symlink_to(tmp_path / "secret.txt")
    return d


def _lib(media: Path) -> VideoLibrary:
    return VideoLibrary(VideoConfig(titles=[VideoTitle(name="real", source="files", directory=str(media))]))


def test_files_are_served_with_video_headers(media: Path) -> None:
    lib = _lib(media)
    mpd = lib.lookup("/dash/real/manifest.mpd")
    assert mpd is not None and mpd.body == b"<MPD/>" and mpd.headers["Content-Type"] == MPD_TYPE
    assert mpd.headers["Access-Control-Allow-Origin"] == "*"
    seg = lib.lookup("/dash/real/seg-0-1.m4s")
    assert seg is not None and seg.body == b"media one"
    assert seg.headers["Content-Type"] == "video/iso.segment" and seg.headers["Cache-Control"] == SEGMENT_CACHE_CONTROL
    init = lib.lookup("/dash/real/init-0.m4s")
    assert init is not None and init.headers["Content-Type"] == "video/mp4"
    assert seg.headers["ETag"] != init.headers["ETag"]


@pytest.mark.parametrize("path", [
    "/dash/real/../secret.txt", "/dash/real/link.m4s", "/dash/real/.hidden", "/dash/real/a/b/c.m4s",
    "/dash/real/nope.m4s", "/dash/real/", "/dash/real/%2e%2e/secret.txt", "/dash/real/seg-0-1.m4s\x00",
])
def test_nothing_outside_the_directory_or_missing_is_served(media: Path, path: str) -> None:
    assert _lib(media).lookup(path) is None


def test_a_files_title_is_checked_on_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="directory: a title with source 'files' needs"):
        VideoTitle(name="x", source="files")
    with pytest.raises(ValidationError, match="holds no manifest.mpd"):
        VideoTitle(name="x", source="files", directory=str(tmp_path))
    (tmp_path / "manifest.mpd").write_text("<MPD/>")
    with pytest.raises(ValidationError, match="live: only synthetic titles can be live"):
        VideoTitle(name="x", source="files", directory=str(tmp_path), live=True)


def test_the_ffmpeg_command_aligns_segments_across_the_ladder(tmp_path: Path) -> None:
    cmd = ffmpeg_command(tmp_path, duration_s=8, segment_s=2, fps=30)
    assert cmd[-1] == str(tmp_path / "manifest.mpd")
    assert cmd.count("-map") == len(LADDER) >= 5
    # a key frame exactly every segment, no scene-cut key frames: every rung's segments start together
    assert cmd[cmd.index("-g") + 1] == "60" and cmd[cmd.index("-keyint_min") + 1] == "60"
    assert cmd[cmd.index("-sc_threshold") + 1] == "0" and cmd[cmd.index("-seg_duration") + 1] == "2"
    assert cmd[cmd.index("-use_timeline") + 1] == "0" and cmd[cmd.index("-use_template") + 1] == "1"
    rates = [cmd[i + 1] for i, a in enumerate(cmd) if a.startswith("-b:v:")]
    assert rates == [f"{k}k" for k, _ in LADDER]
    assert "testsrc2=size=1920x1080:rate=30:duration=8" in cmd

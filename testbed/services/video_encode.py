"""Real DASH media for the origin, encoded with Debian's ``ffmpeg`` from a generated test pattern.

The synthetic titles of :mod:`testbed.services.video` keep every segment at the exact size the manifest
promises, which the ABR experiments need; browsers cannot decode them. This module makes a title a real
player can play: ``ffmpeg``'s ``testsrc2`` pattern encoded once into an H.264 ladder (one
encode, split and scaled per rung, key frames exactly every segment so segments align across rungs),
packaged by ffmpeg's DASH muxer as fragmented MP4 with a ``SegmentTemplate`` and ``$Number$``. Serve it
with a title of ``source: files`` and ``directory:`` the output directory.

``python -m testbed.services.video_encode DIR [--duration S] [--segment S]`` writes ``DIR/manifest.mpd``,
``DIR/init-<rep>.m4s`` and ``DIR/seg-<rep>-<n>.m4s``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

#: the real-media ladder: (kbit/s, picture height), 0.3 to 4.5 Mbit/s, 16:9
LADDER = ((300, 240), (750, 360), (1200, 480), (2400, 720), (4500, 1080))


def ffmpeg_command(
    out: Path,
    duration_s: float = 8.0,
    segment_s: float = 2.0,
    fps: int = 30,
    ladder: tuple[tuple[int, int], ...] = LADDER,
    ffmpeg: str = "ffmpeg",
) -> list[str]:
    """The ffmpeg command line that encodes the ladder into ``out`` (pure: nothing runs)."""
    n = len(ladder)
    top = max(h for _, h in ladder)
    split = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))
    scales = ";".join(f"[s{i}]scale=-2:{h}[o{i}]" for i, (_, h) in enumerate(ladder))
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={top * 16 // 9}x{top}:rate={fps}:duration={duration_s:g}",
        "-filter_complex",
        f"{split};{scales}",
    ]
    for i, (kbps, _) in enumerate(ladder):
        cmd += [
            "-map",
            f"[o{i}]",
            f"-c:v:{i}",
            "libx264",
            f"-b:v:{i}",
            f"{kbps}k",
            f"-maxrate:v:{i}",
            f"{kbps}k",
            f"-bufsize:v:{i}",
            f"{2 * kbps}k",
        ]
    gop = round(fps * segment_s)
    cmd += [
        "-preset",
        "ultrafast",
        "-profile:v",
        "main",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-f",
        "dash",
        "-seg_duration",
        f"{segment_s:g}",
        "-use_template",
        "1",
        "-use_timeline",
        "0",
        "-adaptation_sets",
        "id=0,streams=v",
        "-init_seg_name",
        "init-$RepresentationID$.m4s",
        "-media_seg_name",
        "seg-$RepresentationID$-$Number$.m4s",
        str(out / "manifest.mpd"),
    ]
    return cmd


def encode(out: Path, duration_s: float = 8.0, segment_s: float = 2.0, timeout_s: float = 300.0) -> Path:
    """Encode a title into ``out`` (created); returns the manifest's path. RuntimeError, naming what is
    missing or what ffmpeg said, when it cannot."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg; `make setup` installs it)")
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ffmpeg_command(out, duration_s, segment_s, ffmpeg=ffmpeg),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    mpd = out / "manifest.mpd"
    if p.returncode != 0 or not mpd.is_file():
        raise RuntimeError(f"ffmpeg failed ({p.returncode}): {p.stderr.strip()[-1000:]}")
    return mpd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m testbed.services.video_encode", description=__doc__.split("\n")[0]
    )
    ap.add_argument("out", type=Path, help="the directory to write the presentation into")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of video (default 8)")
    ap.add_argument("--segment", type=float, default=2.0, help="segment length in seconds (default 2)")
    a = ap.parse_args(argv)
    try:
        print(encode(a.out, a.duration, a.segment))
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

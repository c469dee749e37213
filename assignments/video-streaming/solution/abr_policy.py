"""Lab video-streaming, reference solution: a throughput rule whose safety margin follows the buffer.

The rate-based rule (the highest bitrate under 0.9 x the harmonic mean of the last five segments'
throughput) ignores the buffer: with 25 s buffered it still leaves 10 % of the link unused, and with 1 s
buffered it still bets on 90 % of an estimate that may be stale. The buffer-based rule (BBA-0, Huang et
al., SIGCOMM 2014) ignores the throughput and spends the start of every session at the lowest rate. This
policy keeps the throughput estimate and scales it by the buffer: 0.6 of it with an empty buffer, up to
1.2 of it when the buffer is half full (a full buffer can absorb a segment that downloads slower than it
plays).

Instructors: this file is the answer key; strip ``solution/`` directories before handing labs out.
"""

from __future__ import annotations

from testbed.measure.abr import AbrContext, harmonic_mean, highest_below


class Abr:
    name = "buffer-scaled-throughput"

    def choose(self, ctx: AbrContext) -> int:
        if not ctx.throughput_kbps:
            return 0  # nothing measured yet: start low, start fast
        estimate = harmonic_mean(list(ctx.throughput_kbps[-5:]))
        fill = min(1.0, ctx.buffer_s / (0.5 * ctx.max_buffer_s))
        return highest_below(ctx.bitrates_kbps, (0.6 + 0.6 * fill) * estimate)

"""Lab video-streaming (starter): the adaptive-bitrate (ABR) policy of a DASH player.

Fill in :meth:`Abr.choose`. The player (``testbed/measure/player.py``) calls it once per segment, before
requesting it, with an :class:`AbrContext` (``testbed/measure/abr.py``):

* ``bitrates_kbps``: the ladder, ascending (the testbed's titles: 300, 750, 1200, 2400, 4000, 6000);
* ``segment_s``: seconds of video per segment (2 s); ``buffer_s`` and ``max_buffer_s``: seconds buffered
  now, and how much the buffer holds;
* ``last``: the ladder index of the previous segment (None before the first);
* ``throughput_kbps``: the measured throughput of every segment so far, oldest first;
* ``segment``, ``segments_left``, ``live``.

Return an index into ``bitrates_kbps``. The session is scored by the linear QoE of Yin et al. (SIGCOMM
2015, ``testbed/measure/qoe.py``): the sum of the bitrates, minus the bitrate changes, minus 3000 per
second of rebuffering and of startup delay. Helpers you may use: ``harmonic_mean`` and ``highest_below``.

Grade with ``cdnlab grade video-streaming --solution path/to/abr_policy.py``; play with it in a running
CDN: ``play c1 --policy abr_policy:Abr`` after ``export PYTHONPATH=path/to/your/dir``.
"""

from __future__ import annotations

from testbed.measure.abr import AbrContext, harmonic_mean, highest_below  # noqa: F401


class Abr:
    """Your policy: which representation to fetch next."""

    name = "mine"

    def choose(self, ctx: AbrContext) -> int:
        """The ladder index of the next segment."""
        raise NotImplementedError(
            "TODO Abr.choose: estimate the throughput (harmonic_mean of the last few), keep a safety margin, "
            "and use the buffer: low buffer -> be careful, full buffer -> you can afford more"
        )

"""How reports print figures: shares as percentages, as the console prints them."""

from __future__ import annotations


def test_report_tables_print_shares_as_percentages_as_the_console_does() -> None:
    from experiments.framework import md_table

    t = md_table([{"method": "anycast", "optimal_edge_fraction": 1.0, "offload": 0.0421, "hit_ratio": 0.5,
                   "total_ms_p50": 18.46, "requests": 93}],
                 ["method", "optimal_edge_fraction", "offload", "hit_ratio", "total_ms_p50", "requests"])
    assert t.splitlines()[2] == "| anycast | 100 % | 4.2 % | 50 % | 18.5 | 93 |"

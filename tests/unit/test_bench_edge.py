"""`cdnlab bench edge` in a tiny mode: it runs end to end and prints the JSON keys with positive values."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import edge as bench


def test_parse_wrk_units():
    out = "  Latency Distribution\n     50%  250.00us\n     99%    1.50ms\nRequests/sec:   1234.5\n"
    assert bench.parse_wrk(out) == (1234.5, 1.5)
    assert bench.parse_wrk("     99%    2.00s\nRequests/sec: 5\n") == (5.0, 2000.0)


def test_wrk_errors_fail_the_figures():
    out = (
        "     99%    1.50ms\n  Socket errors: connect 0, read 3, write 0, timeout 1\n"
        "  Non-2xx or 3xx responses: 17\nRequests/sec:   1234.5\n"
    )
    assert bench.wrk_errors(out) == {"non-2xx": 17, "read": 3, "timeout": 1}
    with pytest.raises(bench.LoadErrors, match="non-2xx 17"):
        bench.parse_wrk(out)


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
@pytest.mark.skipif(not shutil.which(bench.NGINX), reason=f"nginx is not installed at {bench.NGINX}")
def test_bench_edge_tiny(capsys):
    rc = bench.main(["--json", "--duration", "1", "--objects", "10", "--connections", "4", "--runs", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    data = json.loads(out[-1])
    for key in ("edge_rps", "nginx_rps", "ratio", "edge_p99_ms", "nginx_p99_ms"):
        assert data[key] > 0, key
    assert data["runs"] == 2 and len(data["ratios"]) == 2 and data["errors"] == 0

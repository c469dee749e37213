"""Reading a doc's commands and matching its example output by pattern (tests/support/doc_steps.py)."""

from __future__ import annotations

from pathlib import Path

from doc_steps import line_pattern, missing_lines, steps

DOC = '''# A doc

```sh
.venv/bin/cdnlab topo show mini   # look first
```

It prints:

```
mini: smallest useful CDN
  origin     origin     east   10.0.0.1        on s1 (1 ms)
```

```sh
sudo .venv/bin/cdnlab up mini
```

```
cdnlab> fetch c1 /img/img0001.jpg
dns 0.0 ms  connect 9.0 ms
HTTP 200, 27747 bytes from 10.0.0.200
X-Served-By: e1
   ... about 20 s later ...
cdnlab> c1 curl -s http://10.0.0.2/_cdn/stats     # e1's counters
cdnlab> cdn
│ e1   │ 10.0.0.2 │ up     │   0 B │
```
'''


def test_commands_outputs_and_waits_in_order(tmp_path: Path) -> None:
    p = tmp_path / "doc.md"
    p.write_text(DOC)
    got = steps(p)
    assert [(s.kind, s.command) for s in got] == [
        ("shell", ".venv/bin/cdnlab topo show mini"), ("shell", "sudo .venv/bin/cdnlab up mini"),
        ("cli", "fetch c1 /img/img0001.jpg"), ("cli", "c1 curl -s http://10.0.0.2/_cdn/stats"), ("cli", "cdn")]
    assert got[0].expected[0] == "mini: smallest useful CDN" and got[0].line == 4
    assert got[1].expected == []
    assert len(got[2].expected) == 3 and got[3].wait_s == 20 and got[3].expected == []


def test_patterns_hold_the_doc_to_what_it_shows_not_to_its_figures() -> None:
    out = "dns 4.3 ms  connect 12.25 ms\nHTTP 200, 1234 bytes from 10.0.0.200\nX-Served-By: e1\n"
    assert missing_lines(["dns 0.0 ms  connect 9.0 ms", "HTTP 200, 27747 bytes from 10.0.0.200",
                          "X-Served-By: e1"], out) == []
    assert missing_lines(["X-Served-By: e2"], out) == ["X-Served-By: e2"]  # names are literal
    assert missing_lines(["HTTP 404, 27747 bytes from 10.0.0.200"], out) != []  # status codes too
    assert missing_lines(["X-Served-By: e1", "dns 0.0 ms  connect 9.0 ms"], out) != []  # order counts
    run_dir = line_pattern("  logs and configs: /tmp/cdnlab/mini-71ba7231")
    assert run_dir is not None and run_dir.search("logs and configs: /tmp/cdnlab/mini-0abfa5f2")
    row = line_pattern("│ e1   │ 10.0.0.2 │ up     │   0 B │")
    assert row is not None and row.search("│ e1 │ 10.0.0.2 │ up │ 28 B │") and not row.search("│ e2 │ 10.0.0.3 │ up │ 0 B │")
    assert line_pattern("┏━━━━━━┳━━━━┓") is None and line_pattern("...") is None
    dots = line_pattern("anycast      ...ms      ...ms")
    assert dots is not None and dots.search("anycast      9.1ms     18.5ms")

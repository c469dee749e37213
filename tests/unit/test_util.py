"""``testbed.util``'s helpers that other tests do not already cover."""

from __future__ import annotations

import pytest

from testbed.util import json_in


def test_json_in_finds_the_document_among_other_output() -> None:
    assert json_in('[1] 4242\n{"a": {"b": [1, 2]}}\ntrailing words {x') == {"a": {"b": [1, 2]}}
    assert json_in('{"segments": 3}\n{"second": true}\n') == {"segments": 3}  # the first of several
    assert json_in('curl said\n[{"path": "/a"}]\n') == [{"path": "/a"}]
    assert json_in('{"ok": 1}\n200') == {"ok": 1}


def test_json_in_says_what_it_got_when_there_is_no_json() -> None:
    with pytest.raises(ValueError, match="no JSON in the output.*connection refused"):
        json_in("curl: (7) connection refused {")
    with pytest.raises(ValueError, match="no JSON"):
        json_in("[1] 4242\n")

"""``CdnServices.control``: the JSON answer of a 2xx, and RuntimeError naming method, URL, status and body for
anything else (a refusal, a bad request, an unknown object, a conflict, a server error, no JSON)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnServices
from testbed.net.spec import load_topology


class _Host:
    def __init__(self, out: str) -> None:
        self.out, self.cmds = out, []

    def cmd(self, line: str) -> str:
        self.cmds.append(line)
        return self.out


def _svc(tmp_path: Path, out: str) -> tuple[CdnServices, _Host]:
    cn = CdnNet(load_topology("mini"), BuildOptions(run_dir=tmp_path))
    host = _Host(out)
    cn.host = lambda name: host  # type: ignore[method-assign] - curl's output, scripted
    return CdnServices(cn), host


def test_a_2xx_json_answer_is_returned(tmp_path: Path) -> None:
    svc, host = _svc(tmp_path, '{"purged": ["/a"], "not_found": []}\n200')
    assert svc.control("e1", "http://10.0.0.3/_cdn/purge", "POST", {"paths": ["/a"]}) == {
        "purged": ["/a"],
        "not_found": [],
    }
    assert "-X POST" in host.cmds[0] and "--data" in host.cmds[0] and "-H @" in host.cmds[0]


@pytest.mark.parametrize(
    ("out", "status"),
    [
        ('{"error": "forbidden"}\n403', "403"),
        ('{"error": "no object /nope"}\n404', "404"),
        ('{"error": "bad path"}\n400', "400"),
        ('{"error": "multicast ingest is not configured"}\n409', "409"),
        ('{"error": "boom"}\n502', "502"),
        ("not json\n200", "200"),
        ("", "?"),
    ],
)
def test_anything_else_raises_with_status_and_body(tmp_path: Path, out: str, status: str) -> None:
    svc, _ = _svc(tmp_path, out)
    want = re.escape(f"POST http://10.0.0.1/_origin/update/nope from origin: HTTP {status}")
    with pytest.raises(RuntimeError, match=want):
        svc.control("origin", "http://10.0.0.1/_origin/update/nope", "POST")

"""The relay process's control socket: every malformed request is refused with a message naming what is
wrong, and the relay keeps serving; it exits when its owner closes the socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.net.relay import LinkConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def relay():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.net.relay", "--control-fd", "0", "--rt-priority", "0"],
        stdin=theirs.fileno(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    theirs.close()
    ours.settimeout(10)
    reader = ours.makefile("rb")

    def ask(raw: bytes | dict) -> dict:
        ours.sendall((json.dumps(raw).encode() if isinstance(raw, dict) else raw) + b"\n")
        return json.loads(reader.readline())

    try:
        yield proc, ours, ask
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        ours.close()


def test_a_relay_refuses_bad_requests_by_name_and_keeps_serving(relay) -> None:
    proc, _sock, ask = relay
    # realtime: None, as --rt-priority 0 asked for none
    assert ask({"op": "ping", "seq": 7}) == {"ok": True, "links": 0, "pid": proc.pid, "realtime": None, "seq": 7}
    cases = [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        ({"op": "fly"}, "unknown op 'fly'"),
        ({"op": "add", "id": 1, "a": "x0"}, "missing field 'b'"),
        ({"op": "add", "id": 1, "a": "x0", "b": "x1", "delay_ms": -3}, "delay_ms must be a number >= 0"),
        ({"op": "add", "id": 1, "a": "x0", "b": "x1", "loss_pct": 150}, "loss_pct must be within 0..100"),
        ({"op": "add", "id": 1, "a": "x0", "b": "x1", "queue_pkts": 0}, "queue_pkts must be an integer >= 1"),
        ({"op": "add", "id": "one", "a": "x0", "b": "x1"}, "id must be an integer"),
        ({"op": "add", "id": 1, "a": "x" * 20, "b": "x1"}, "a must be an interface name"),
        ({"op": "add", "id": 1, "a": "x0", "b": "x1", "colour": "red"}, "unknown field(s) ['colour']"),
        ({"op": "add", "id": 1, "a": "cdnnosuch0", "b": "cdnnosuch1"}, "add:"),  # no such interfaces
        ({"op": "remove", "id": 99}, "no link 99"),
        ({"op": "counters", "ids": 5}, "ids must be a list"),
    ]
    for raw, expected in cases:
        answer = ask(raw)
        assert answer["ok"] is False and expected in answer["error"], (raw, answer)
    assert ask({"op": "counters"}) == {"ok": True, "counters": {}, "missing": []}
    assert ask({"op": "counters", "ids": [3]})["missing"] == [3]
    assert ask({"op": "ping"})["ok"] is True and proc.poll() is None


def test_a_relay_exits_when_its_owner_closes_the_control_socket(relay) -> None:
    proc, sock, ask = relay
    assert ask({"op": "ping"})["ok"] is True
    sock.shutdown(socket.SHUT_RDWR)
    assert proc.wait(10) == 0
    assert b"relay: READY" in proc.stdout.read()


def test_link_config_defaults_and_validation() -> None:
    cfg = LinkConfig.from_request({"op": "add", "id": 4, "a": "cdnr4a", "b": "cdnr4b", "delay_ms": 5})
    assert cfg == LinkConfig(4, "cdnr4a", "cdnr4b", 5.0, None, 0.0, 10000, 1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        LinkConfig.from_request({"id": 4, "a": "a", "b": "b", "seed": 1.5})
    with pytest.raises(ValueError, match="delay_ms_ba must be a number"):
        LinkConfig.from_request({"id": 4, "a": "a", "b": "b", "delay_ms_ba": float("nan")})


def test_a_relay_on_standard_input_and_output_answers_there_and_logs_apart() -> None:
    """``--control-stdio`` (a relay on another server, started over ssh): requests on stdin, answers alone
    on stdout, the relay's own messages on stderr; it exits when its input ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.net.relay", "--control-stdio", "--rt-priority", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        def ask(raw: bytes) -> dict:
            proc.stdin.write(raw + b"\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        assert ask(b'{"op": "ping", "seq": 1}') == {"ok": True, "links": 0, "pid": proc.pid, "realtime": None,
                                                     "seq": 1}
        assert "not JSON" in ask(b"{nope")["error"]
        assert ask(b'{"op": "counters"}')["ok"] is True  # still serving
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert proc.stdout.read() == b""  # nothing but answers on stdout
        assert b"relay: READY" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mnexec -n makes a network namespace)")
def test_a_relay_process_started_as_on_another_server_is_served_through_its_pipes(tmp_path: Path) -> None:
    """RelayProcess's other-server path (ssh; here ``localhost``, which runs the same command directly):
    ``mnexec -n`` and ``--control-stdio``, requests through the pipes, commands in its namespace."""
    from testbed.net.relay_pool import RelayError, RelayProcess

    rp = RelayProcess(tmp_path, server="localhost")
    try:
        assert rp.remote_pid is not None and rp.alive()
        assert rp.request({"op": "ping"})["links"] == 0
        with pytest.raises(RelayError, match="unknown op 'fly'"):
            rp.request({"op": "fly"})
        links = rp.run_in_ns("ip -o link show").stdout
        assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"]  # a namespace of its own
    finally:
        rp.stop()
    assert not rp.alive() and rp.proc is None

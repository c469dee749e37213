"""``cdnlab bench conformance``: the edge against the HTTP caching tests, nginx ``proxy_cache`` as the peer.

The suite is Mark Nottingham's http-tests/cache-tests (published at cache-tests.fyi): a Node.js test server
acts as the origin, and its client sends scripted requests through the cache under test and checks each
answer. Tests come in three kinds: ``required`` (RFC 9111 says MUST), ``optimal`` (what a good cache does)
and ``check`` (informational questions, where "pass" only means "yes"). Where the edge's documented
behaviour differs from a test's expectation on purpose, that test fails here and the report says so (for
example, the edge never stores ``Set-Cookie`` and does not relay the targeted ``CDN-Cache-Control``).

``--suite DIR`` runs a checkout of https://github.com/http-tests/cache-tests (after ``npm i`` in it);
without it the npm package ``http-cache-tests`` is installed under ``~/.cache/cdnlab`` (an older version
with fewer tests). Both caches front the same test server in the same run. Prints a table per kind;
the last line is one JSON object with ``suite``, ``tests``, and per cache ``passed`` and ``by_kind``,
plus ``edge_failing`` (the edge's failing test ids). Fails (exit 1) when the suite does not run, when a
cache's results are missing, or when the peer passes nothing (a broken baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.edge import NGINX, NGINX_CONF, Procs
from testbed.util import free_port, wait_tcp

NPM_PACKAGE = "http-cache-tests"
CACHE_DIR = Path.home() / ".cache" / "cdnlab" / NPM_PACKAGE

KINDS_SCRIPT = """\
import index from '{index}'
const out = {{}}
for (const suite of index) for (const t of suite.tests) out[t.id] = t.kind || 'required'
console.log(JSON.stringify(out))
"""


class SuiteError(RuntimeError):
    """The test suite could not be found, installed or run."""


def locate(root: Path) -> dict[str, Path]:
    """The server, client and test index of a suite checkout (under ``test-engine/``) or npm package."""
    for engine in (root / "test-engine", root):
        found = {
            "server": engine / "server" / "server.mjs",
            "cli": engine / "cli.mjs",
            "index": root / "tests" / "index.mjs",
        }
        if all(p.is_file() for p in found.values()):
            return {**found, "root": root}
    raise SuiteError(
        f"{root}: not a cache-tests checkout or {NPM_PACKAGE} package (no server.mjs, cli.mjs, tests/)"
    )


def install(dest: Path) -> Path:
    """Install the npm package into ``dest`` (once) and return its directory."""
    pkg = dest / "node_modules" / NPM_PACKAGE
    if not pkg.is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise SuiteError("npm not found: install nodejs and npm, or pass --suite DIR")
        dest.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(
            [npm, "install", "--prefix", str(dest), "--no-audit", "--no-fund", NPM_PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if p.returncode != 0:
            raise SuiteError(f"npm install {NPM_PACKAGE} failed: {p.stderr.strip()[-500:]}")
    return pkg


def suite_version(root: Path) -> str:
    """The suite's package version, plus the git commit of a checkout."""
    try:
        version = json.loads((root / "package.json").read_text()).get("version", "?")
    except (OSError, ValueError):
        version = "?"
    git = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return f"{version} ({git.stdout.strip()})" if git.returncode == 0 and git.stdout.strip() else version


def count(results: dict[str, object], kinds: dict[str, str]) -> dict[str, object]:
    """Passes per kind: a test passes when its result is exactly ``true``."""
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for test_id, result in results.items():
        kind = kinds.get(test_id, "required")
        total[kind] += 1
        passed[kind] += result is True
    return {
        "passed": sum(passed.values()),
        "tests": len(results),
        "by_kind": {k: f"{passed[k]}/{total[k]}" for k in sorted(total)},
    }


def run_client(node: str, cli: Path, base_url: str, log: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "npm_config_id"}
    env |= {"npm_config_base": base_url, "npm_package_config_id": ""}  # "": every test (as npm run cli sets)
    p = subprocess.run(
        [node, "--no-warnings", str(cli)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cli.parent,
        timeout=900,
    )
    log.write_text(p.stderr)
    try:
        results = json.loads(p.stdout)
    except ValueError:
        tail = (p.stderr or p.stdout).strip()[-400:]
        raise SuiteError(
            f"the suite's client printed no JSON for {base_url} (rc {p.returncode}): {tail}"
        ) from None
    if not isinstance(results, dict) or not results:
        raise SuiteError(f"the suite's client returned no results for {base_url}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cdnlab bench conformance", description=__doc__.strip().split("\n")[0])
    ap.add_argument(
        "--suite", type=Path, help="a cache-tests checkout (after npm i); default: the npm package"
    )
    ap.add_argument("--no-peer", action="store_true", help="skip nginx")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        print("cdnlab bench conformance: node not found (apt install nodejs npm)", file=sys.stderr)
        return 1
    peer = not args.no_peer
    if peer and not os.access(NGINX, os.X_OK):
        print(
            f"cdnlab bench conformance: {NGINX} missing (install nginx-light, or --no-peer)", file=sys.stderr
        )
        return 1
    procs = Procs()
    try:
        paths = locate(args.suite.resolve() if args.suite else install(CACHE_DIR))
        with tempfile.TemporaryDirectory(prefix="cdnlab-conformance-") as tmp:
            d = Path(tmp)
            kinds_js = d / "kinds.mjs"
            kinds_js.write_text(KINDS_SCRIPT.format(index=paths["index"]))
            k = subprocess.run([node, str(kinds_js)], capture_output=True, text=True, timeout=60)
            kinds: dict[str, str] = json.loads(k.stdout) if k.returncode == 0 else {}
            server_port, edge_port = free_port(), free_port()
            env = {
                **os.environ,
                "npm_config_port": str(server_port),
                "npm_config_protocol": "http",
                "npm_config_pidfile": str(d / "server.pid"),
            }
            procs.start("suite", [node, str(paths["server"])], d / "server.log", env=env)
            (d / "edge.json").write_text(
                json.dumps(
                    {"name": "edge", "port": edge_port, "origin_url": f"http://localhost:{server_port}"}
                )
            )
            procs.start(
                "edge",
                [sys.executable, "-m", "testbed.services.edge", "--config", str(d / "edge.json")],
                d / "edge.log",
            )
            targets = {"edge": edge_port}
            if peer:
                nginx_port = free_port()
                user = "user root;" if os.geteuid() == 0 else ""
                (d / "nginx.conf").write_text(
                    NGINX_CONF.format(d=d, user=user, origin_port=server_port, port=nginx_port)
                )
                procs.start(
                    "nginx",
                    [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                    d / "nginx.out",
                )
                targets["nginx"] = nginx_port
            for port in (server_port, *targets.values()):
                wait_tcp("127.0.0.1", port, 20)
            results = {
                name: run_client(node, paths["cli"], f"http://127.0.0.1:{port}", d / f"client-{name}.log")
                for name, port in targets.items()
            }
    except (SuiteError, OSError, subprocess.SubprocessError, TimeoutError) as e:
        print(f"cdnlab bench conformance: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    report = {name: count(r, kinds) for name, r in results.items()}
    if peer and report["nginx"]["passed"] == 0:
        print(
            "cdnlab bench conformance: the nginx baseline passed nothing: the run is broken", file=sys.stderr
        )
        return 1
    out = {
        "suite": suite_version(paths["root"]),
        "tests": report["edge"]["tests"],
        **report,
        "edge_failing": sorted(t for t, v in results["edge"].items() if v is not True),
    }
    if not args.json:
        kinds_seen = sorted({k for r in report.values() for k in r["by_kind"]})
        print(f"{'cache':<8} {'passed':>7} " + " ".join(f"{k:>10}" for k in kinds_seen))
        for name, r in report.items():
            print(
                f"{name:<8} {r['passed']:>4}/{r['tests']:<3} "
                + " ".join(f"{r['by_kind'].get(k, '-'):>10}" for k in kinds_seen)
            )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

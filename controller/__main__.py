"""``python -m controller --view VIEW.json`` (also ``cdnlab controller ...``): run the controller in-process.

Loads the view, then runs the Ryu app manager in this process (as ryu-manager does, without spawning
it): the cdnlab app (routing, anycast, multicast, liveness), Ryu's OpenFlow handler listening on
OF_HOST:OF_PORT (127.0.0.1; for a run across servers, this machine's management address, where the other
servers' switches reach it), Ryu's LLDP topology discovery (unless --no-lldp) and the REST API on
127.0.0.1:REST_PORT. Exit status 2 on a bad view; SIGTERM/SIGINT stop it cleanly (status 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from contract.config import ConfigError


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="cdnlab controller", description=__doc__.strip().split("\n")[0])
    ap.add_argument("--view", required=True, help="network view JSON written by the topology builder")
    ap.add_argument("--log", help="log file (default: stderr)")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument(
        "--of-host", default="127.0.0.1",
        help="OpenFlow listen address (default 127.0.0.1; a run across servers: the management address)"
    )
    ap.add_argument(
        "--of-port", type=int, default=6653, help="OpenFlow listen port (default 6653)"
    )
    ap.add_argument(
        "--rest-port", type=int, help="REST API port on 127.0.0.1 (default: the view's rest_port)"
    )
    ap.add_argument("--mode", choices=["destination", "affinity"], help="override the view's anycast_mode")
    ap.add_argument("--no-lldp", action="store_true", help="do not run LLDP link discovery / cross-check")
    ap.add_argument(
        "--view-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the view file to appear (the builder starts the controller early and "
        "writes the view once the network is built); default 0: it must exist",
    )
    ap.add_argument(
        "--submission",
        metavar="JSON",
        help="a lab submission (contract.sandbox.Submission as JSON) to run in a sandbox and plug in, e.g. "
        "a student's anycast choose() or multicast build_tree() (the network stage of cdnlab grade)",
    )
    return ap.parse_args(argv)


def wait_for_file(path: str, timeout: float) -> bool:
    """Poll until ``path`` exists (the builder renames it into place whole); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from contract.netview import load_view
    from controller import ryu_adapter as ra

    # the framework's imports first (most of the start-up time): with --view-wait they overlap the
    # builder's work, which writes the view once the network's port numbers are known
    ra.patch()
    ra.wsgi()  # registers wsapi options
    ra._imp("flags")
    ra._imp("controller.controller")  # registers ofp options
    if not args.no_lldp:
        ra._imp("topology.switches")  # registers observe-links
    from controller import app as app_mod

    if args.view_wait > 0 and not wait_for_file(args.view, args.view_wait):
        print(
            f"cdnlab controller: {args.view}: no view appeared within {args.view_wait:g} s", file=sys.stderr
        )
        return 2
    try:
        view = load_view(args.view)
    except ConfigError as e:
        print(f"cdnlab controller: {e}", file=sys.stderr)
        return 2
    if args.mode:
        view = view.model_copy(update={"anycast_mode": args.mode})
    sandbox = None
    if args.submission:
        from contract.sandbox import Submission, activate, describe_load_error

        try:
            with open(args.submission) as f:
                sub = Submission.model_validate_json(f.read())
            sandbox = activate(sub)
        except Exception as e:  # noqa: BLE001 - a bad file or the student's import error, said plainly
            text = describe_load_error(e)
            print(f"cdnlab controller: submission {args.submission} does not load: {text}", file=sys.stderr)
            return 2
    rest_port = args.rest_port or view.rest_port
    handlers: list[logging.Handler] = [logging.FileHandler(args.log) if args.log else logging.StreamHandler()]
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        handlers=handlers,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("cdnlab.controller")

    CONF = ra.CONF
    apps = ["controller.app"]
    if not args.no_lldp:
        apps.append(ra.app_module_name("topology.switches"))
    CONF(args=[], project="ryu", default_config_files=[])
    CONF.set_override("ofp_listen_host", args.of_host)
    CONF.set_override("ofp_tcp_listen_port", args.of_port)
    CONF.set_override("wsapi_host", "127.0.0.1")
    CONF.set_override("wsapi_port", rest_port)
    if not args.no_lldp:
        CONF.set_override("observe_links", True)

    app_mod.SETTINGS.update(view=view, lldp=not args.no_lldp)
    mgr = ra.app_manager.AppManager.get_instance()
    mgr.load_apps(apps)
    contexts = mgr.create_contexts()
    services = list(mgr.instantiate_apps(**contexts))
    webapp = ra.wsgi().start_service(mgr)
    if webapp:
        services.append(ra.hub.spawn(webapp))
    log.info(
        "cdnlab controller: pid %d, OpenFlow %s:%d, REST http://127.0.0.1:%d/, view %s, mode %s",
        os.getpid(),
        args.of_host,
        args.of_port,
        rest_port,
        args.view,
        view.anycast_mode,
    )

    if sandbox is not None:
        log.info("submission %s plugged in: %s", sandbox.path, ", ".join(sub.patch))

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        if sandbox is not None:
            sandbox.kill()  # no wait: the green hub must not run inside the handler
        os._exit(0)  # eventlet green threads do not unwind reliably; nothing to flush but logs

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        ra.hub.joinall(services)
    finally:
        mgr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

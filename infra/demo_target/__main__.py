"""Serve the demo target: ``python -m stampede.infra.demo_target --port 0 --db PATH [--port-file FILE]``.

Loopback only: the demo target exists to be loaded, so it refuses to listen
anywhere another machine could reach it. ``--port 0`` binds a free port before
the server starts and writes it to ``--port-file`` atomically, so a parent
process (``DemoTarget``, the Makefile) never races another test for a port and
never reads half a number.

The demo accounts' password comes from ``STAMPEDE_DEMO_PASSWORD``; the default
(``LoadTest123!``, the seed's demo password) is for the demo only.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

import uvicorn

from stampede.infra.demo_target.app import DEMO_PASSWORD_DEFAULT, DEMO_PASSWORD_ENV, create_app
from stampede.infra.loopback_process import add_exit_with_parent, exit_when_orphaned
from stampede.core.netutil import raise_open_file_limit

BACKLOG = 4096
# Thousands of load-test users each keep a connection open; beyond this uvicorn answers 503.
LIMIT_CONCURRENCY = 16_384
# Longer than any think time, so the server never closes a connection a client is about to reuse.
KEEP_ALIVE_S = 65


class HostRefused(ValueError):
    """The host is not a loopback address."""


def loopback_host(host: str) -> str:
    """``host`` as an IP literal if it is loopback (127.0.0.0/8, ::1, ``localhost``); else :class:`HostRefused`."""
    literal = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        loopback = ipaddress.ip_address(literal).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise HostRefused(f"refusing to listen on {host!r}: the demo target serves loopback only (127.0.0.0/8 or ::1)")
    return literal


def parse_slow(spec: str) -> tuple[str, float]:
    """``'GET /v1/listings=50'`` -> ``('GET /v1/listings', 50.0)``."""
    route, sep, ms = spec.rpartition("=")
    try:
        if not sep or not route.strip():
            raise ValueError(spec)
        return route.strip(), float(ms)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--slow wants 'METHOD /route=MS', got {spec!r}") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so connections queue in the backlog from the moment the port is published."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stampede.infra.demo_target", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file (created if missing)")
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--pool-timeout", type=float, default=5.0, help="seconds to wait for a connection")
    parser.add_argument("--port-file", type=Path, help="write the bound port here (atomically)")
    parser.add_argument("--slow", type=parse_slow, action="append", default=[], metavar="'METHOD /route=MS'",
                        help="add MS milliseconds to a route; repeatable")
    parser.add_argument("--limit-concurrency", type=int, default=LIMIT_CONCURRENCY)
    add_exit_with_parent(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        host = loopback_host(args.host)
        app = create_app(
            database_url=f"sqlite:///{args.db.resolve()}",
            pool_size=args.pool_size,
            pool_timeout_s=args.pool_timeout,
            password=os.environ.get(DEMO_PASSWORD_ENV) or DEMO_PASSWORD_DEFAULT,
            extra_latency_ms=dict(args.slow),
        )
    except ValueError as exc:
        print(f"demo target: {exc}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    sock = bind(host, args.port)
    port = sock.getsockname()[1]
    if args.port_file:
        write_atomically(args.port_file, f"{port}\n")
    shown = f"[{host}]" if ":" in host else host
    print(f"demo target listening on http://{shown}:{port}/v1", flush=True)
    exit_when_orphaned(args.exit_with_parent)
    config = uvicorn.Config(
        app,
        access_log=False,
        log_level="warning",
        backlog=BACKLOG,
        limit_concurrency=args.limit_concurrency,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())

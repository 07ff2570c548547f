"""A target with a known service time, to check that reported latencies match the truth.

Answers every request (keep-alive, HTTP/1.1) after exactly ``delay_ms`` with
one small JSON body written in a single send, so no Nagle/delayed-ACK pause
inflates the latency. ``/v1/health`` answers at once. Loopback only.

With ``--capacity-rps R`` the target also has a known capacity: C = R × delay
"servers", each busy for exactly ``delay_ms`` per request, take requests in
arrival order (a FIFO M/D/C queue). Each server's busy time is scheduled on the
clock (a request finishes at max(arrival, server free) + delay), so the event
loop's own overhead does not eat into it: the target completes at most C / delay
requests per second, and beyond that latency grows with the queue.

    python -m stampede.infra.fixed_latency_target --delay-ms 20 --port-file F [--capacity-rps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import socket
import sys
from pathlib import Path

from stampede.infra.loopback_process import LoopbackProcess, add_exit_with_parent, bind_free_loopback, exit_when_orphaned
from stampede.core.netutil import raise_open_file_limit

BODY = b'{"items": [], "total": 0}'


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float,
    servers: ServerPool | None = None,
) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if b"/health" in request_line:
                pass
            elif servers is None:
                await asyncio.sleep(delay_s)
            else:
                await servers.serve()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
            )
            await writer.drain()
    writer.close()


class ServerPool:
    """C servers in a FIFO queue: each request takes the server that frees first, for exactly delay_s."""

    def __init__(self, servers: int, delay_s: float) -> None:
        self.free_at = [0.0] * servers  # a heap of the times each server becomes free
        self.delay_s = delay_s

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        finish = max(now, heapq.heappop(self.free_at)) + self.delay_s
        heapq.heappush(self.free_at, finish)
        await asyncio.sleep(finish - now)


def servers_for(capacity_rps: float | None, delay_ms: float) -> int | None:
    """Concurrent servers that give ``capacity_rps`` at ``delay_ms`` each (None: unlimited)."""
    if not capacity_rps:
        return None
    servers = round(capacity_rps * delay_ms / 1000)
    if servers < 1:
        raise ValueError(f"capacity {capacity_rps} req/s at {delay_ms} ms needs at least one server; raise either")
    return servers


async def serve(sock: socket.socket, delay_ms: float, servers: int | None = None) -> None:
    gate = ServerPool(servers, delay_ms / 1000) if servers else None
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, delay_ms / 1000, gate), sock=sock, backlog=4096,
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fixed-latency-target")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--capacity-rps", type=float, default=None,
                        help="serve at most this many requests/s (capacity-rps × delay concurrent servers)")
    add_exit_with_parent(parser)
    args = parser.parse_args(argv)
    exit_when_orphaned(args.exit_with_parent)
    servers = servers_for(args.capacity_rps, args.delay_ms)
    raise_open_file_limit()  # a connection per user
    sock = bind_free_loopback(args.port_file)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sock, args.delay_ms, servers))
    return 0


class FixedLatencyTarget:
    """Runs the target in a subprocess on a free port (context manager)."""

    def __init__(self, delay_ms: float, workdir: Path, *, capacity_rps: float | None = None) -> None:
        self.delay_ms = delay_ms
        self.servers = servers_for(capacity_rps, delay_ms)
        # the exact capacity: whole servers, each busy for delay_ms per request
        self.capacity_rps = self.servers * 1000 / delay_ms if self.servers else None
        self._process = LoopbackProcess(
            "stampede.infra.fixed_latency_target",
            ["--delay-ms", str(delay_ms), *(["--capacity-rps", str(self.capacity_rps)] if self.capacity_rps else [])],
            workdir=Path(workdir), startup_timeout_s=20,
        )
        self.base_url = ""

    def __enter__(self) -> FixedLatencyTarget:
        self.base_url = f"{self._process.start()}/v1"
        return self

    def __exit__(self, *_exc) -> None:
        self._process.stop()

    @property
    def pid(self) -> int:
        return self._process.pid


if __name__ == "__main__":
    sys.exit(main())

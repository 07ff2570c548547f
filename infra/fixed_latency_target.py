"""A target with a known service time, to check that reported latencies match the truth.

Answers every request (keep-alive, HTTP/1.1) after exactly ``delay_ms`` with
one small JSON body written in a single send, so no Nagle/delayed-ACK pause
inflates the latency. ``/v1/health`` answers at once. Loopback only.

    python -m infra.fixed_latency_target --delay-ms 20 --port-file F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BODY = b'{"items": [], "total": 0}'


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
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
            if b"/health" not in request_line:
                await asyncio.sleep(delay_s)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
            )
            await writer.drain()
    writer.close()


async def serve(sock: socket.socket, delay_ms: float) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, delay_ms / 1000), sock=sock, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fixed-latency-target")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    tmp = f"{args.port_file}.tmp"
    Path(tmp).write_text(str(sock.getsockname()[1]))
    os.replace(tmp, args.port_file)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sock, args.delay_ms))
    return 0


class FixedLatencyTarget:
    """Runs the target in a subprocess on a free port (context manager)."""

    def __init__(self, delay_ms: float, workdir: Path) -> None:
        self.delay_ms = delay_ms
        self.port_file = Path(workdir) / f"fixed-latency-{time.time_ns()}.port"
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> FixedLatencyTarget:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.fixed_latency_target", "--delay-ms", str(self.delay_ms),
             "--port-file", str(self.port_file)],
        )
        deadline = time.time() + 20
        while not self.port_file.exists():
            if time.time() > deadline or self.process.poll() is not None:
                self.__exit__()
                raise RuntimeError("fixed-latency target did not start")
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{self.port_file.read_text()}/v1"
        return self

    def __exit__(self, *_exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    sys.exit(main())

"""A keep-alive HTTP target that counts the connections it accepts by their source address.

``python peer_counting_target.py <host> <port> <counts.json>``: answers every request
``200 {}`` on the same connection, and writes ``{"<source ip>": connections}`` to the
file after each new connection (atomically), so a test reads what came from where.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
counts: Counter = Counter()


def _write(path: str) -> None:
    with open(path + ".tmp", "w") as out:
        json.dump(dict(counts), out)
    os.replace(path + ".tmp", path)


async def serve(host: str, port: int, path: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts[writer.get_extra_info("peername")[0]] += 1
        _write(path)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if length:
                    await reader.readexactly(length)
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    _write(path)
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), sys.argv[3]))

"""AWS fixtures on the session's moto server (``aws`` and ``moto_server`` are in tests/conftest.py).

Tests share the server (moto builds its EC2 data on first use, ~5 s) and keep
apart by run id: each test uses its own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

PEER_COUNTING_TARGET = Path(__file__).resolve().parent / "load" / "peer_counting_target.py"


@pytest.fixture
def cloud_only(aws, monkeypatch):
    """Cloud workers without local stand-ins: the master address is a VPC address."""
    monkeypatch.delenv("STAMPEDE_CLOUD_WORKERS_STANDIN")
    monkeypatch.setenv("STAMPEDE_MASTER_HOST", "10.0.1.20")
    return aws


@pytest.fixture
def tiny_png() -> bytes:
    """A valid 1x1 PNG (a chart to upload to the Slack stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


@contextlib.contextmanager
def _counting_target(port: int, counts: Path, *, prefix: tuple[str, ...] = (), preexec_fn=None):
    """``peer_counting_target.py`` on 127.0.0.1:``port`` (``prefix``: e.g. ``ip netns exec NS``), until the block ends."""
    process = subprocess.Popen([*prefix, sys.executable, str(PEER_COUNTING_TARGET), "127.0.0.1", str(port), str(counts)],
                               preexec_fn=preexec_fn)
    deadline = time.monotonic() + 20
    while not counts.exists():
        assert time.monotonic() < deadline and process.poll() is None, "the counting target did not start"
        time.sleep(0.05)
    time.sleep(0.3)  # the file is written just before the server listens
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def start_counting_target():
    """A target that counts the connections it accepts by source address (``{ip: n}`` in ``counts``)."""
    return _counting_target

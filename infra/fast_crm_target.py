"""A fast in-memory CRM target with a fixed service time, for benchmarking the load generators.

The demo target (FastAPI + SQLite) serves a few hundred requests a second on
one core: far too slow to find the limits of the generators. This target
speaks enough of the target API contract (docs/target-api.md) for the stock
journeys to succeed, from one asyncio process (uvloop when installed):

- ``POST /v1/auth/login {email, password}`` → ``{token}`` for the demo accounts;
  every other ``/v1`` call needs ``Authorization: Bearer <token>`` (else 401);
- ``GET /v1/{escrows,listings}?search=&limit=&offset=`` → ``{items, total}``
  (search: case-insensitive substring of the address; limit 1..100);
- ``POST`` → 201 ``{id, …}``; ``GET|PATCH|DELETE /v1/{kind}/{id}`` → 200 / 200 / 204, 404 when gone;
- ``GET /v1/health`` and ``GET /health`` → 200 at once (never delayed); ``GET /metrics``:
  the process's CPU and memory as Prometheus text, for the pipeline's server metrics;
- ``--max-rps N``: beyond N ``/v1`` requests in a second, 429 with ``Retry-After: 1``
  (an API that rate-limits, for cleanup's back-off); ``--seed-tagged TAG:N``: N escrows
  and N listings carrying TAG, ids following the ``--seed`` ones (a run's leftovers at volume).

Every other ``/v1`` answer is written exactly ``delay_ms`` after its request
arrived, in one ``write`` (no Nagle or delayed-ACK pause). The server measures
its own service time (arrival → write) per second; ``GET /stats?since=&until=``
returns its percentiles over that window, the truth a generator's report is
compared with. Storage is in memory; pages are positional, so an entity
deleted since the last compaction can leave one item short in a page.

``--processes N`` serves one port from N processes (``SO_REUSEPORT``: the kernel
spreads the connections), for more keep-alive connections than one process may
open (this sandbox's open-file hard limit is 20,000) and more than one core. The
processes share no memory: a bearer token is signed (any process accepts it), the
seeded entities are the same in each, and the entities created later carry ids
that do not collide (process k of N hands out k, k + N, ...). An entity created
through one process is seen by connections to that process only, which the stock
journeys respect (each user keeps its connection), except the admin's delete of an
escrow another user created: a delete of an id another process handed out is
forwarded to that process's own port, and answered with what it said.
Each process also listens on a port of its own for ``/stats``; ``FastCrmTarget.stats``
merges their histograms, so the service time is still the whole target's.

    python -m stampede.infra.fast_crm_target --delay-ms 20 --port-file F [--seed 500] [--max-rps N] [--seed-tagged TAG:N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import hashlib
import hmac
import json
import os
import random
import resource
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from stampede.infra.loopback_process import LoopbackProcess, add_exit_with_parent, bind_free_loopback, exit_when_orphaned
from stampede.core.histogram import LatencyHistogram
from stampede.core.netutil import raise_open_file_limit

PASSWORD_ENV = "STAMPEDE_DEMO_PASSWORD"
DEFAULT_PASSWORD = "LoadTest123!"  # demo only, as the demo target's
ACCOUNTS = {
    "agent@demo.stampede.local": "agent",
    "broker@demo.stampede.local": "broker",
    "admin@demo.stampede.local": "admin",
    "readonly@demo.stampede.local": "readonly",
}
ACCOUNT_LIST = list(ACCOUNTS)
TOKEN_SECRET_ENV = "STAMPEDE_FAST_CRM_SECRET"  # set by the first process for the others (--processes)
MAX_LIMIT = 100
STATS_KEEP_S = 3600
_REASONS = {200: b"OK", 201: b"Created", 204: b"No Content", 400: b"Bad Request", 401: b"Unauthorized",
            404: b"Not Found", 405: b"Method Not Allowed", 422: b"Unprocessable Entity", 429: b"Too Many Requests"}
_STREETS = ("Maple Ave", "Oak St", "Cedar Ln", "Pine Rd", "Elm St", "Willow Way", "Birch Ct", "Park Pl")
_CITIES = ("Springfield", "Riverside", "Fairview", "Madison", "Austin", "Portland", "Boulder", "Salem")


class Collection:
    """One entity kind in memory: JSON bodies by id, and incremental search results per term."""

    def __init__(self, name: str, search_field: str, fields: dict[str, type | tuple[type, ...]]) -> None:
        self.name = name
        self.search_field = search_field
        self.fields = fields
        self.items: dict[int, dict[str, Any]] = {}
        self.bodies: dict[int, bytes] = {}
        self.texts: dict[int, str] = {}
        self.last_id = 0
        # term -> [matching ids in id order (may hold deleted ids), highest id scanned, deleted among them]
        self.searches: dict[str, list] = {}
        self.next_id, self.id_step = 1, 1  # after the seed, process k of N hands out ids k, k + N, ...
        self.first_spread_id = 0

    def spread_ids(self, processes: int, index: int) -> None:
        self.first_spread_id = self.last_id + 1
        self.next_id, self.id_step = self.last_id + 1 + index, processes

    def creator(self, item_id: int) -> int | None:
        """The process that created ``item_id`` (None: a seeded one, which every process holds)."""
        if self.id_step <= 1 or item_id < self.first_spread_id:
            return None
        return (item_id - self.first_spread_id) % self.id_step

    def validate(self, body: Any, *, partial: bool) -> dict[str, Any] | None:
        if not isinstance(body, dict) or any(k not in self.fields for k in body):
            return None
        if not partial and any(k not in body for k in self.fields):
            return None
        for key, value in body.items():
            if value is None or isinstance(value, bool) or not isinstance(value, self.fields[key]):
                return None
        return body

    def create(self, values: dict[str, Any], owner: str) -> bytes:
        self.last_id, self.next_id = self.next_id, self.next_id + self.id_step
        item = {"id": self.last_id, **values, "created_by": owner, "created_at": _now()}
        return self._store(item)

    def _store(self, item: dict[str, Any]) -> bytes:
        body = json.dumps(item, separators=(",", ":")).encode()
        self.items[item["id"]] = item
        self.bodies[item["id"]] = body
        self.texts[item["id"]] = str(item[self.search_field]).lower()
        return body

    def update(self, item_id: int, changes: dict[str, Any]) -> bytes | None:
        item = self.items.get(item_id)
        if item is None:
            return None
        if self.search_field in changes:  # the old text may sit in cached searches: forget them
            self.searches.clear()
        return self._store({**item, **changes})

    def delete(self, item_id: int) -> bool:
        if self.items.pop(item_id, None) is None:
            return False
        self.bodies.pop(item_id)
        text = self.texts.pop(item_id)
        for term, entry in self.searches.items():
            if item_id <= entry[1] and term in text:
                entry[2] += 1
        return True

    def page(self, search: str, limit: int, offset: int) -> bytes:
        term = search.lower()
        entry = self.searches.get(term)
        if entry is None:
            if len(self.searches) >= 1000:
                self.searches.clear()
            entry = self.searches[term] = [[], 0, 0]
        ids, scanned, _dead = entry
        if scanned < self.last_id:
            texts = self.texts
            ids.extend(i for i in range(scanned + 1, self.last_id + 1) if i in texts and term in texts[i])
            entry[1] = self.last_id
        if entry[2] > 64 and entry[2] * 4 > len(ids):
            entry[0] = ids = [i for i in ids if i in self.items]
            entry[2] = 0
        bodies = self.bodies
        items = [bodies[i] for i in ids[offset:offset + limit] if i in bodies]
        total = len(ids) - entry[2]
        return b'{"items":[' + b",".join(items) + b'],"total":' + str(total).encode() + b"}"


class Store:
    def __init__(self, seed: int = 0, rng: random.Random | None = None, *, max_rps: int = 0,
                 tagged: tuple[str, int] = ("", 0)) -> None:
        self.max_rps = max_rps  # 0: no limit
        self.second, self.in_second = 0, 0
        # tokens are signed, not stored: every process of a --processes target accepts every other's
        self.secret = os.environ.get(TOKEN_SECRET_ENV, "").encode() or secrets.token_bytes(16)
        self.kinds = {
            "escrows": Collection("escrows", "property_address", {
                "property_address": str, "closing_date": str, "purchase_price": (int, float)}),
            "listings": Collection("listings", "address", {"address": str, "list_price": (int, float), "status": str}),
        }
        rng = rng or random.Random(7)
        for _ in range(seed):
            address = f"SEED-{rng.randint(1, 9999)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"
            price = rng.randint(600, 2600) * 500
            self.kinds["escrows"].create(
                {"property_address": address, "closing_date": "2026-06-30", "purchase_price": price}, "seed")
            self.kinds["listings"].create(
                {"address": address, "list_price": price, "status": rng.choice(("active", "pending"))}, "seed")
        tag, count = tagged
        for i in range(count):
            address = f"{tag}-{i:07d} {rng.randint(1, 9999)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"
            self.kinds["escrows"].create(
                {"property_address": address, "closing_date": "2026-06-30", "purchase_price": 500000}, "seed")
            self.kinds["listings"].create({"address": address, "list_price": 500000, "status": "active"}, "seed")

    def issue_token(self, email: str) -> str:
        payload = f"{ACCOUNT_LIST.index(email)}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._signature(payload)}"

    def caller(self, token: str) -> str | None:
        """The email a token was issued to; ``None`` for one this target did not sign."""
        payload, _, signature = token.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._signature(payload)):
            return None
        return ACCOUNT_LIST[int(payload.partition(".")[0])]

    def _signature(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()[:24]

    def over_limit(self) -> bool:
        """One more ``/v1`` request this second would pass ``max_rps``."""
        if not self.max_rps:
            return False
        second = int(time.time())
        if second != self.second:
            self.second, self.in_second = second, 0
        self.in_second += 1
        return self.in_second > self.max_rps


class Stats:
    """Service time (arrival → write) per second, as mergeable histograms."""

    def __init__(self) -> None:
        self.seconds: dict[int, LatencyHistogram] = {}

    def record(self, arrived: float, done: float) -> None:
        second = int(done)
        histogram = self.seconds.get(second)
        if histogram is None:
            histogram = self.seconds[second] = LatencyHistogram()
            for old in [s for s in self.seconds if s < second - STATS_KEEP_S]:
                del self.seconds[old]
        histogram.record_us(int((done - arrived) * 1e6))

    def histogram(self, since: float, until: float) -> LatencyHistogram:
        return LatencyHistogram.merged(h for s, h in self.seconds.items() if since <= s < until)

    def summary(self, since: float, until: float) -> dict[str, Any]:
        return summary_of(self.histogram(since, until))


def summary_of(merged: LatencyHistogram) -> dict[str, Any]:
    return {
            "requests": merged.total, "p50_ms": merged.percentile_ms(0.50), "p95_ms": merged.percentile_ms(0.95),
            "p99_ms": merged.percentile_ms(0.99), "max_ms": merged.max_ms(),
    }


def handle(store: Store, stats: Stats, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Answer one request: ``(status, JSON body)`` (204 has an empty body)."""
    path, _, query = target.partition("?")
    if path in ("/v1/health", "/health"):
        return 200, b'{"status":"ok"}'
    if path == "/metrics":
        return 200, _prometheus(stats)
    if path == "/stats":
        params = dict(parse_qsl(query))
        since, until = float(params.get("since", 0)), float(params.get("until", time.time() + 1))
        if params.get("histogram"):  # one process's share of a --processes target, merged by FastCrmTarget.stats
            return 200, json.dumps(stats.histogram(since, until).to_dict()).encode()
        return 200, json.dumps(stats.summary(since, until)).encode()
    if not path.startswith("/v1/"):
        return 404, b'{"error":"not found"}'
    if store.over_limit():
        return 429, b'{"error":"rate limited"}'
    parts = path[4:].split("/")
    if parts == ["auth", "login"] and method == "POST":
        data = _json(body)
        email = str(data.get("email", "")).strip().lower() if isinstance(data, dict) else ""
        password = data.get("password") if isinstance(data, dict) else None
        if email not in ACCOUNTS or password != os.environ.get(PASSWORD_ENV, DEFAULT_PASSWORD):
            return 401, b'{"error":"invalid email or password"}'
        token = store.issue_token(email)
        return 200, b'{"token":"' + token.encode() + b'"}'
    auth = headers.get("authorization", "")
    caller = store.caller(auth[7:]) if auth[:7].lower() == "bearer " else None
    if caller is None:
        return 401, b'{"error":"missing or invalid bearer token"}'
    kind = store.kinds.get(parts[0])
    if kind is None or len(parts) > 2:
        return 404, b'{"error":"not found"}'
    if len(parts) == 1:
        if method == "GET":
            params = dict(parse_qsl(query))
            try:
                limit, offset = int(params.get("limit", 20)), int(params.get("offset", 0))
            except ValueError:
                return 422, b'{"error":"limit and offset are integers"}'
            if not 1 <= limit <= MAX_LIMIT or offset < 0:
                return 422, b'{"error":"limit 1..100, offset >= 0"}'
            return 200, kind.page(unquote(params.get("search", "")), limit, offset)
        if method == "POST":
            values = kind.validate(_json(body), partial=False)
            if values is None:
                return 422, b'{"error":"invalid body"}'
            return 201, kind.create(values, caller)
        return 405, b'{"error":"method not allowed"}'
    try:
        item_id = int(parts[1])
    except ValueError:
        return 404, b'{"error":"not found"}'
    if method == "GET":
        found = kind.bodies.get(item_id)
        return (200, found) if found is not None else (404, b'{"error":"not found"}')
    if method == "PATCH":
        changes = kind.validate(_json(body), partial=True)
        if changes is None:
            return 422, b'{"error":"invalid body"}'
        updated = kind.update(item_id, changes)
        return (200, updated) if updated is not None else (404, b'{"error":"not found"}')
    if method == "DELETE":
        return (204, b"") if kind.delete(item_id) else (404, b'{"error":"not found"}')
    return 405, b'{"error":"method not allowed"}'


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection, each answer in one write."""

    def __init__(self, store: Store, stats: Stats, delay_s: float, *, record: bool = True) -> None:
        self.store, self.stats, self.delay_s, self.record = store, stats, delay_s, record
        self.peers: dict[int, str] = {}  # --processes: index -> the port file of that process's own port
        self.index = 0
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next(time.time())

    def _next(self, arrived: float) -> None:
        while self.transport is not None and not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                self._write(400, b'{"error":"bad request"}', arrived, close=True)
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            owner = self._creator_elsewhere(method, target)
            if owner is not None:  # a delete of an entity another process holds: that process deletes it
                self.busy = True
                self.loop.create_task(self._forward(owner, method, target, headers, arrived,
                                                    headers.get("connection", "").lower() == "close"))
                return
            status, payload = handle(self.store, self.stats, method, target, headers, body)
            close = headers.get("connection", "").lower() == "close"
            if self.delay_s > 0 and target.startswith("/v1/") and not target.startswith("/v1/health"):
                self.busy = True
                self.loop.call_at(self.loop.time() + self.delay_s - (time.time() - arrived),
                                  self._delayed, status, payload, arrived, close)
                return
            self._write(status, payload, arrived, close=close)

    def _creator_elsewhere(self, method: str, target: str) -> int | None:
        if not self.peers or method != "DELETE" or not target.startswith("/v1/"):
            return None
        parts = target.partition("?")[0][4:].split("/")
        kind = self.store.kinds.get(parts[0])
        if kind is None or len(parts) != 2 or not parts[1].isdigit():
            return None
        owner = kind.creator(int(parts[1]))
        return owner if owner is not None and owner != self.index else None

    async def _forward(self, owner: int, method: str, target: str, headers: dict[str, str], arrived: float,
                       close: bool) -> None:
        """Ask process ``owner`` (on its own port) and answer with what it said, at the usual service time."""
        try:
            port = int(Path(self.peers[owner]).read_text())
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                         f"{headers.get('authorization', '')}\r\nConnection: close\r\n\r\n".encode("latin-1"))
            answer = await reader.read()
            writer.close()
            status = int(answer.split(b" ", 2)[1])
            payload = answer.partition(b"\r\n\r\n")[2]
        except (OSError, ValueError, IndexError, KeyError):
            status, payload = 502, b'{"error":"the process holding it did not answer"}'
        delay = self.delay_s - (time.time() - arrived)
        if delay > 0:
            await asyncio.sleep(delay)
        self._delayed(status, payload, arrived, close)

    def _delayed(self, status: int, payload: bytes, arrived: float, close: bool) -> None:
        self.busy = False
        self._write(status, payload, arrived, close=close)
        if self.buffer:
            self._next(time.time())

    def _write(self, status: int, payload: bytes, arrived: float, *, close: bool) -> None:
        if self.transport is None:
            return
        head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))
        if status == 429:
            head += b"Retry-After: 1\r\n"
        if status == 204:
            head += b"\r\n"
        else:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
        self.transport.write(head + payload)
        if self.record:
            self.stats.record(arrived, time.time())
        if close:
            self.transport.close()


async def serve(sock: socket.socket, delay_ms: float, seed: int, *, max_rps: int = 0,
                tagged: tuple[str, int] = ("", 0), processes: int = 1, index: int = 0,
                own: socket.socket | None = None, peers: dict[int, str] | None = None) -> None:
    store, stats = Store(seed=seed, max_rps=max_rps, tagged=tagged), Stats()
    for kind in store.kinds.values():
        kind.spread_ids(processes, index)
    loop = asyncio.get_running_loop()
    def public() -> HttpProtocol:
        protocol = HttpProtocol(store, stats, delay_ms / 1000)
        protocol.peers, protocol.index = peers or {}, index
        return protocol

    server = await loop.create_server(public, sock=sock, backlog=8192)
    if own is not None:  # this process's own port: its /stats, and the deletes the others forward to it
        # what it serves there is not counted: a forwarded delete was counted where it arrived
        await loop.create_server(lambda: HttpProtocol(store, stats, 0.0, record=False), sock=own, backlog=1024)
    async with server:
        await server.serve_forever()


def _shared_port_sockets(processes: int) -> list[socket.socket]:
    """``processes`` listening sockets on one free loopback port (SO_REUSEPORT), all bound before any serves."""
    first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind(("127.0.0.1", 0))
    sockets = [first]
    for _ in range(processes - 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(first.getsockname())
        sockets.append(sock)
    return sockets


def _write_port(path: str, port: int) -> None:
    Path(f"{path}.tmp").write_text(str(port))
    os.replace(f"{path}.tmp", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fast-crm-target")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--seed", type=int, default=500, help="escrows and listings to start with")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--max-rps", type=int, default=0, help="429 beyond this many /v1 requests a second")
    parser.add_argument("--seed-tagged", default="", metavar="TAG:N", help="N escrows and N listings carrying TAG")
    parser.add_argument("--processes", type=int, default=1, help="serve the port from this many processes")
    add_exit_with_parent(parser)
    args = parser.parse_args(argv)
    exit_when_orphaned(args.exit_with_parent)
    raise_open_file_limit()
    index, own = 0, None
    if args.processes <= 1:
        sock = bind_free_loopback(args.port_file)
    else:
        os.environ.setdefault(TOKEN_SECRET_ENV, secrets.token_hex(16))  # before the fork: one key for all
        sockets = _shared_port_sockets(args.processes)
        first_pid = os.getpid()
        for child in range(1, args.processes):
            if os.fork() == 0:
                index = child
                exit_when_orphaned(first_pid)  # the watcher thread does not survive the fork: a new one
                break
        sock = sockets[index]
        for other in sockets:
            if other is not sock:
                other.close()
        own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        own.bind(("127.0.0.1", 0))
        _write_port(f"{args.port_file}.stats-{index}", own.getsockname()[1])
        if index == 0:
            deadline = time.time() + 30  # the target is up once every process has its own port
            while len(glob.glob(f"{glob.escape(args.port_file)}.stats-*[0-9]")) < args.processes and time.time() < deadline:
                time.sleep(0.05)
            _write_port(args.port_file, sock.getsockname()[1])
    run = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        tag, _, count = args.seed_tagged.partition(":")
        run(serve(sock, args.delay_ms, args.seed, max_rps=args.max_rps, tagged=(tag, int(count or 0)),
                  processes=max(1, args.processes), index=index, own=own,
                  peers={k: f"{args.port_file}.stats-{k}" for k in range(args.processes)} if own else None))
    return 0


class FastCrmTarget:
    """Runs the fast CRM target in a subprocess on a free loopback port (context manager).

    :param delay_ms: the fixed service time of every ``/v1`` answer but health.
    :param workdir: where the port file goes.
    :param seed: escrows and listings the store starts with.
    :param max_rps: answer 429 (``Retry-After: 1``) beyond this many ``/v1`` requests a second; 0: never.
    :param seed_tagged: ``(tag, n)``: n escrows and n listings carrying ``tag``, ids ``seed + 1 … seed + n``.
    :param processes: serve the port from this many processes (see the module's docstring).
    """

    def __init__(self, *, delay_ms: float = 0.0, workdir: Path, seed: int = 500, max_rps: int = 0,
                 seed_tagged: tuple[str, int] = ("", 0), processes: int = 1) -> None:
        self.delay_ms = delay_ms
        self.seed = seed
        self.processes = processes
        args = ["--delay-ms", str(delay_ms), "--seed", str(seed), "--max-rps", str(max_rps),
                "--processes", str(processes)]
        if seed_tagged[1]:
            args += ["--seed-tagged", f"{seed_tagged[0]}:{seed_tagged[1]}"]
        self._process = LoopbackProcess("stampede.infra.fast_crm_target", args, workdir=Path(workdir),
                                        startup_timeout_s=60 + seed_tagged[1] / 5000)
        self.base_url = ""
        self.root_url = ""

    def __enter__(self) -> FastCrmTarget:
        self.root_url = self._process.start()
        self.base_url = f"{self.root_url}/v1"
        return self

    @property
    def pid(self) -> int:
        return self._process.pid

    def stats(self, since: float, until: float) -> dict[str, Any]:
        """The target's own service-time percentiles over ``[since, until)`` (epoch seconds)."""
        import httpx

        if self.processes <= 1:
            response = httpx.get(f"{self.root_url}/stats", params={"since": since, "until": until}, timeout=10)
            response.raise_for_status()
            return response.json()
        histograms = []
        for index in range(self.processes):  # each process's own share, merged: percentiles are never averaged
            port = Path(f"{self._process.port_file}.stats-{index}").read_text()
            response = httpx.get(f"http://127.0.0.1:{port}/stats",
                                 params={"since": since, "until": until, "histogram": 1}, timeout=10)
            response.raise_for_status()
            histograms.append(response.json())
        return summary_of(LatencyHistogram.merged(histograms))

    @property
    def pids(self) -> list[int]:
        """Every process serving the port (the first and the ones it forked)."""
        import psutil

        first = psutil.Process(self.pid)
        return [first.pid, *(p.pid for p in first.children())]

    def __exit__(self, *_exc: object) -> None:
        import psutil

        children = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.pid).children() if self.processes > 1 and self.pid else []
        self._process.stop()
        for child in children:  # they would leave within a second of the first anyway (exit_when_orphaned)
            with contextlib.suppress(psutil.Error):
                child.terminate()
        psutil.wait_procs(children, timeout=5)


def _prometheus(stats: Stats) -> bytes:
    """The few process series the pipeline's server-metrics sampler understands (Prometheus text)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    requests = sum(h.total for h in stats.seconds.values())
    return (
        "# TYPE process_cpu_seconds_total counter\n"
        f"process_cpu_seconds_total {usage.ru_utime + usage.ru_stime:.3f}\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        f"process_resident_memory_bytes {usage.ru_maxrss * 1024}\n"
        "# TYPE fast_crm_requests_total counter\n"
        f"fast_crm_requests_total {requests}\n"
    ).encode()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


if __name__ == "__main__":
    sys.exit(main())

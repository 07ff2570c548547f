"""Fixes to the load generator's HTTP stack, applied in Locust processes only.

geventhttpclient (under Locust's ``FastHttpUser`` and Stampede's journeys)
checks that a pooled keep-alive socket is still open with ``select.select``
before reusing it. ``select`` cannot take a file descriptor of 1024 or more
(``FD_SETSIZE``): it raises ``ValueError``, which the check reads as "closed",
so once a generator process holds about a thousand users every request opens
a new TCP connection. Measured here at 2,000 users: 1,800 connections opened
per 10 s instead of none, and about twice the CPU per request. ``poll`` has no
such limit and answers the same question.

A worker spawns in batches (:func:`cooperative_spawning`): Locust creates all the
users of one spawn message in one loop that never yields, and their first steps
(a login each) run back to back right after it, so a worker told to add thousands
of users on a busy core sends no heartbeat for seconds; the master then takes it
for missing and moves its users to the other workers. Spawned in batches of
:data:`SPAWN_BATCH` with a yield between them, the heartbeat, the master's messages
and the running users' answers are served between two batches. Each batch's users
are then frozen out of the cyclic collector (``gc.freeze``): they live as long as
the run, and a full collection that walks 15,000 users' objects stalls the loop
as a tight spawn does; stopping users unfreezes them all, so stopped users are
still collected.

Connections come from the plan's ``local_ips`` in turn (:func:`use_source_addresses`;
why in ``stampede.plan.local_ips``): the pool's socket factory binds each new socket to
the next address with ``IP_BIND_ADDRESS_NO_PORT``, so the kernel still picks the source
port at ``connect`` per destination (a plain ``bind((ip, 0))`` would reserve a port
for every destination and use up the range as fast). A ``connect`` that finds no
source port left fails with a line that names the cause and ``local_ips``, not a
bare ``[Errno 99]``. Requests' ``HttpUser`` gets the same through urllib3's
``create_connection`` (IPv4 addresses only).

Redirects are not followed unless a request asks (:func:`no_redirects_by_default`):
``HttpUser`` (requests) follows them for GET and OPTIONS by default and
``FastHttpUser`` for every method (up to 30), so a target that answers 302 to
another host would have the load follow it there. The egress guard refuses such
a connection anyway; this keeps the 3xx a plain answer, which is what a load
test of the target should measure. Measured: both clients return the 302 with an
empty history and make no second connection.
"""

from __future__ import annotations

import errno
import gc
import itertools
import select as _select_module
import socket as _socket_module
from collections.abc import Sequence

import gevent
import gevent.socket
from gevent import monkey
from geventhttpclient import connectionpool

from stampede.core.netutil import family_of

# the real poll, not gevent's cooperative one: a zero-timeout check never blocks
_poll = monkey.get_original("select", "poll")
_READABLE_OR_CLOSED = _select_module.POLLIN | _select_module.POLLPRI | _select_module.POLLERR | _select_module.POLLHUP
# users created between two yields of the spawning greenlet: their creation and first steps take
# well under 0.1 s of a core, so the heartbeat (every second; missing after 3) is never held back
SPAWN_BATCH = 50


def idle_watch(sock):
    """A poll object on open ``sock``: ``not watch.poll(0)`` while it is reusable (no FIN, no stray bytes, no error).

    One per connection serves every check of it: a journey user checks its own
    connection before each request without building a poller each time.
    """
    watch = _poll()
    watch.register(sock.fileno(), _READABLE_OR_CLOSED)
    return watch


def socket_is_reusable(sock) -> bool:
    """An idle keep-alive socket is reusable when it is open and has nothing to read (no FIN, no stray bytes)."""
    if sock is None:
        return False
    try:
        if sock.fileno() < 0:
            return False
        return not idle_watch(sock).poll(0)
    except (OSError, ValueError):
        return False


def _is_socket_alive(self, sock) -> bool:  # noqa: ARG001 - the pool's method signature
    return socket_is_reusable(sock)


def patch_connection_pool() -> None:
    """Make geventhttpclient's pool check reused sockets with ``poll`` (idempotent)."""
    connectionpool.ConnectionPool._is_socket_alive = _is_socket_alive


# Linux: bind() takes the address now and leaves the port to connect(), which picks it per destination
IP_BIND_ADDRESS_NO_PORT = getattr(_socket_module, "IP_BIND_ADDRESS_NO_PORT", 24)


class SourceAddresses:
    """The addresses new connections come from, taken in turn, per address family."""

    def __init__(self, addresses: Sequence[str] = ()) -> None:
        self.addresses = tuple(addresses)
        by_family: dict[int, list[str]] = {}
        for address in self.addresses:
            by_family.setdefault(family_of(address), []).append(address)
        self._turns = {family: itertools.cycle(listed) for family, listed in by_family.items()}
        self.bound: dict[str, int] = dict.fromkeys(self.addresses, 0)  # connections bound to each, this process

    def take(self, family: int) -> str | None:
        """The next address of ``family`` for a new connection (counted); ``None``: the kernel's choice."""
        turn = self._turns.get(family)
        if turn is None:
            return None
        address = next(turn)
        self.bound[address] += 1
        return address

    def bind(self, sock, family: int) -> None:
        """Bind ``sock`` (not yet connected) to the next address of its family; none listed: the kernel's choice."""
        address = self.take(family)
        if address is not None:
            sock.setsockopt(_socket_module.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((address, 0))


_sources = SourceAddresses()


def source_addresses() -> SourceAddresses:
    """This process's source addresses (empty until :func:`use_source_addresses`)."""
    return _sources


def _out_of_source_ports(address) -> OSError:
    where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)
    sources = ", ".join(_sources.addresses) or "the kernel's one address"
    return OSError(errno.EADDRNOTAVAIL, f"no source port left toward {where} from {sources} (EADDRNOTAVAIL: each "
                                        f"local address has the ephemeral range's ports per target address); "
                                        f"fix: more local_ips, e.g. --local-ips 127.0.0.1-127.0.0.2, or fewer users")


def _create_tcp_socket(self, family: int, socktype: int, protocol: int):  # noqa: ARG001 - the pool's method
    sock = gevent.socket.socket(family, socktype, protocol)
    try:
        _sources.bind(sock, family)
    except OSError:
        sock.close()
        raise
    return sock


def _connect_socket(self, sock, address):  # noqa: ARG001 - the pool's method
    try:
        sock.connect(address)
    except OSError as error:
        if error.errno == errno.EADDRNOTAVAIL:
            raise _out_of_source_ports(address) from error
        raise
    return sock


def _patch_urllib3() -> None:
    from urllib3.util import connection

    if getattr(connection.create_connection, "_stampede_sources", False):
        return
    create = connection.create_connection

    def create_connection(address, timeout=connection._DEFAULT_TIMEOUT, source_address=None, socket_options=None):
        if source_address is None:
            ip = _sources.take(_socket_module.AF_INET)
            if ip is not None:
                source_address = (ip, 0)
                socket_options = [*(socket_options or ()), (_socket_module.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)]
        try:
            return create(address, timeout, source_address, socket_options)
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise _out_of_source_ports(address) from error
            raise

    create_connection._stampede_sources = True
    connection.create_connection = create_connection


def use_source_addresses(addresses: Sequence[str]) -> None:
    """New connections of this process come from ``addresses`` in turn (none: the kernel picks; idempotent).

    The pool's socket factory and connect are patched once, whatever the addresses, so the
    out-of-ports line reads the same with or without them.
    """
    global _sources
    if tuple(addresses) != _sources.addresses:
        _sources = SourceAddresses(addresses)
    connectionpool.ConnectionPool._create_tcp_socket = _create_tcp_socket
    connectionpool.ConnectionPool._connect_socket = _connect_socket
    _patch_urllib3()


def no_redirects_by_default() -> None:
    """``HttpUser`` and ``FastHttpUser`` answer a 3xx as it is, unless a call passes ``allow_redirects=True``."""
    from locust.clients import HttpSession
    from locust.contrib.fasthttp import FastHttpSession

    if getattr(HttpSession, "_stampede_no_redirects", False):
        return
    requests_request = HttpSession.request

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("allow_redirects", False)
        return requests_request(self, method, url, *args, **kwargs)

    def verb(method: str):
        def call(self, url, **kwargs):  # requests' get/options set allow_redirects=True themselves
            kwargs.setdefault("allow_redirects", False)
            return request(self, method, url, **kwargs)
        return call

    HttpSession.request = request
    HttpSession.get = verb("GET")
    HttpSession.options = verb("OPTIONS")
    HttpSession._stampede_no_redirects = True

    fast_request = FastHttpSession.request

    def fast(self, method, url, *args, allow_redirects=False, **kwargs):
        return fast_request(self, method, url, *args, allow_redirects=allow_redirects, **kwargs)

    FastHttpSession.request = fast


def _batches(user_classes_spawn_count: dict[str, int], size: int):
    """``{class: count}`` cut into ``{class: count}`` batches of at most ``size`` users, classes in their order."""
    batch: dict[str, int] = {}
    room = size
    for name, count in user_classes_spawn_count.items():
        while count > 0:
            take = min(count, room)
            batch[name] = batch.get(name, 0) + take
            count -= take
            room -= take
            if room == 0:
                yield batch
                batch, room = {}, size
    if batch:
        yield batch


def cooperative_spawning() -> None:
    """Make Locust's ``Runner.spawn_users`` spawn in batches, yielding and freezing each (idempotent)."""
    from locust.runners import Runner

    if getattr(Runner.spawn_users, "_stampede_batches", False):
        return
    spawn_all = Runner.spawn_users

    def spawn_users(self, user_classes_spawn_count: dict[str, int], wait: bool = False):
        if wait:  # a standalone run that blocks until its users end: nothing to serve meanwhile
            return spawn_all(self, user_classes_spawn_count, wait=True)
        new_users = []
        for batch in _batches(user_classes_spawn_count, SPAWN_BATCH):
            new_users += spawn_all(self, batch)
            gc.freeze()  # the run's users: never garbage while it lasts, never walked by a collection again
            gevent.sleep(0)  # the new users' first steps, the heartbeat and the master's messages run now
        return new_users

    stop = Runner.stop_users

    def stop_users(self, user_classes_stop_count: dict[str, int]) -> None:
        stop(self, user_classes_stop_count)
        gc.unfreeze()  # the stopped users may be cyclic garbage now: the next full collection may take them

    spawn_users._stampede_batches = True
    Runner.spawn_users = spawn_users
    Runner.stop_users = stop_users

"""Small network helpers: free loopback ports, loopback checks, the open-file limit."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import resource
import socket
from pathlib import Path

UNLIMITED_FILES_AS = 65_536  # the soft limit to ask for when the hard one is unlimited
# a load process's own open files before its users' sockets: the interpreter's, the log, the master's
# and the target's listening sockets, gevent's hub: 12 measured for a Locust worker (412 with 400 users), the rest
# for what a team's locustfile opens itself (files, a database)
FILES_BEFORE_USERS = 200


LISTEN_PORTS_FROM = 20_000  # listening ports are picked from here up to the ephemeral range
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
FREE_PORT_TRIES = 200


def family_of(address: str) -> socket.AddressFamily:
    """``AF_INET6`` for an IPv6 literal, else ``AF_INET``."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing source ports (Linux's default when it cannot be read)."""
    try:
        low, high = (int(part) for part in Path(EPHEMERAL_RANGE_FILE).read_text().split())
    except (OSError, ValueError):
        return 32_768, 60_999
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, below the ephemeral range.

    Not ``bind(0)``: the kernel then hands out a port from the ephemeral range, the same
    ports thousands of simulated users take as source ports, so under load bind(0) fails
    with EADDRINUSE (seen: worker provisioning retried during the users bench) and a port
    picked from that range can be taken by an outgoing connection before it is listened on.
    """
    low = LISTEN_PORTS_FROM
    high = ephemeral_port_range()[0] - 1
    family = family_of(host)
    if high >= low:
        for port in random.sample(range(low, high + 1), min(FREE_PORT_TRIES, high - low + 1)):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(family, socket.SOCK_STREAM) as sock:  # no room below the range: the kernel's choice
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to loopback addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; the new soft limit.

    One socket per user (a generator) or per connection (a target): the usual
    soft limit of 1,024 is far too low, and child processes inherit the raise.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_FILES_AS if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def users_per_process() -> int:
    """How many users (one socket each) one load process on this machine can hold.

    Its open files are capped by the hard limit (``raise_open_file_limit`` lifts the
    soft one to it in every load process); a user past it fails every request with
    ``[Errno 24] Too many open files``, so local runs are planned under it.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = UNLIMITED_FILES_AS if hard == resource.RLIM_INFINITY else hard
    return max(1, files - FILES_BEFORE_USERS)

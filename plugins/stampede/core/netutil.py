"""Small network helpers: free loopback ports, loopback checks, the open-file limit."""

from __future__ import annotations

import contextlib
import ipaddress
import resource
import socket

UNLIMITED_FILES_AS = 65_536  # the soft limit to ask for when the hard one is unlimited


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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

"""The load's source addresses (``local_ips``): enough source ports for every user of a local run.

Every simulated user holds one keep-alive connection to the target, and every
connection to one target address needs a source port of its own from the kernel's
ephemeral range (28,232 ports by Linux's default, 32768-60999). Past that, ``connect``
fails with ``EADDRNOTAVAIL`` (errno 99): measured here, 1,778 of 30,000 users could not
connect. A connection's source address is part of what must be unique, so each
further local address adds a whole range: the load processes bind every new
connection to the next of the plan's ``local_ips`` in turn (``stampede.load.fixes``),
with ``IP_BIND_ADDRESS_NO_PORT`` so that the port is still picked per destination.

- **Given** (``--local-ips``, the trigger form's ``local_ips``): a comma-separated list of
  addresses of this machine, or IPv4 ranges (``127.0.0.1-127.0.0.4``). Each is checked by
  binding to it: an address this machine does not have is refused before any load.
- **Not given**: a local run whose target is on loopback and whose peak users need more
  source ports than :data:`PORTS_USABLE` of the range gets as many 127.0.0.x addresses as
  it needs (all of 127.0.0.0/8 is this machine's); any other target that needs more is
  refused, naming ``local_ips`` as the fix.

Cloud workers have their own addresses: ``local_ips`` is for local workers only.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
from collections.abc import Iterable, Sequence

from stampede.core.errors import Refusal
from stampede.core.netutil import ephemeral_port_range, family_of

__all__ = ["MAX_LOCAL_IPS", "PORTS_USABLE", "LocalIpsInvalid", "addresses_needed", "auto_local_ips", "check_bindable",
           "parse_local_ips", "ports_needed_fit", "refuse_unless_fit", "source_ports"]

MAX_LOCAL_IPS = 256  # a typo guard (127.0.0.1-127.0.255.255 would be 65,535)
# the share of the ephemeral range one address is planned to use: the rest serves the users' reconnects
# (a closed connection's port stays in TIME_WAIT for 60 s) and whatever else the machine connects to
PORTS_USABLE = 0.8
FIELD = "local_ips"
EXAMPLE = "--local-ips 127.0.0.1-127.0.0.2 (addresses of this machine: `ip -brief address`)"


class LocalIpsInvalid(Refusal):
    """``local_ips`` names something that is not an address of this machine, or too few for the users."""


def _addresses_of(item: str) -> list[str]:
    if "-" in item:
        first, _, last = item.partition("-")
        try:
            low, high = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
        except ValueError:
            raise LocalIpsInvalid(FIELD, f"{item!r} is not a range of IPv4 addresses",
                                  "write it as 127.0.0.1-127.0.0.4") from None
        if high < low:
            raise LocalIpsInvalid(FIELD, f"{item!r} ends before it starts", f"write it as {last.strip()}-{first.strip()}")
        if int(high) - int(low) >= MAX_LOCAL_IPS:
            raise LocalIpsInvalid(FIELD, f"{item!r} holds more than {MAX_LOCAL_IPS} addresses",
                                  f"list at most {MAX_LOCAL_IPS}")
        return [str(ipaddress.IPv4Address(n)) for n in range(int(low), int(high) + 1)]
    try:
        address = ipaddress.ip_address(item.strip("[]"))
    except ValueError:
        raise LocalIpsInvalid(FIELD, f"{item!r} is not an IP address", EXAMPLE) from None
    if address.is_unspecified or address.is_multicast:
        raise LocalIpsInvalid(FIELD, f"{item} is not an address a connection can come from", EXAMPLE)
    return [str(address)]


def parse_local_ips(value: object) -> tuple[str, ...]:
    """The addresses ``value`` names, in order, each once; ``()`` for nothing (``None``, ``""``, ``[]``).

    ``value`` is text (``"127.0.0.1, 127.0.0.2-127.0.0.4"``) or a list of such items.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [part for v in value for part in v.replace(",", " ").split()]
    else:
        raise LocalIpsInvalid(FIELD, f"must be text or a list of addresses (got {type(value).__name__})", EXAMPLE)
    addresses = list(dict.fromkeys(a for item in items for a in _addresses_of(item)))
    if len(addresses) > MAX_LOCAL_IPS:
        raise LocalIpsInvalid(FIELD, f"{len(addresses)} addresses, more than {MAX_LOCAL_IPS}", f"list at most {MAX_LOCAL_IPS}")
    return tuple(addresses)


def check_bindable(addresses: Iterable[str]) -> None:
    """Each address is one of this machine's: a socket binds to it (nothing is sent)."""
    for address in addresses:
        with socket.socket(family_of(address), socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 0))
            except OSError as exc:
                why = "EADDRNOTAVAIL" if exc.errno == errno.EADDRNOTAVAIL else (exc.strerror or str(exc))
                raise LocalIpsInvalid(FIELD, f"{address} is not an address of this machine ({why})", EXAMPLE) from None


def source_ports() -> int:
    """The source ports one local address offers toward one target address (the kernel's range)."""
    low, high = ephemeral_port_range()
    return high - low + 1


def _per_address() -> int:
    return max(1, math.floor(source_ports() * PORTS_USABLE))


def addresses_needed(users: int) -> int:
    """How many source addresses ``users`` connections to one target address need."""
    return max(1, math.ceil(users / _per_address()))


def ports_needed_fit(users: int, addresses: Sequence[str]) -> bool:
    """``users`` connections to one target address fit the source ports of ``addresses`` (none: one, the kernel's)."""
    return addresses_needed(users) <= max(1, len(addresses))


def auto_local_ips(users: int, target_is_loopback: bool) -> tuple[str, ...]:
    """The 127.0.0.x addresses a loopback target's ``users`` need; ``()`` when the kernel's one address is enough."""
    count = addresses_needed(users)
    if not target_is_loopback or count == 1:
        return ()
    if count > MAX_LOCAL_IPS:
        raise LocalIpsInvalid("users", f"{users} users need {count} source addresses, more than {MAX_LOCAL_IPS}",
                              "use cloud workers or fewer users")
    first = int(ipaddress.IPv4Address("127.0.0.1"))
    return tuple(str(ipaddress.IPv4Address(first + n)) for n in range(count))


def refuse_unless_fit(users: int, addresses: Sequence[str]) -> None:
    if not ports_needed_fit(users, addresses):
        have, need = max(1, len(addresses)), addresses_needed(users)
        raise LocalIpsInvalid(
            FIELD, f"{users} users need {need} source addresses toward one target address ({_per_address():,} "
                   f"ports each: {PORTS_USABLE:.0%} of the kernel's {source_ports():,}); {have} given",
            f"give {need} addresses of this machine, e.g. {EXAMPLE}")

"""The one canonical target: the run's base URL parsed once, strictly, and resolved once.

Every component that talks to the target sees only :attr:`Target.url`, the URL
rebuilt from its parsed parts: the health probe, Locust's ``--host``, cleanup,
the server metrics, the lease key and the history. The raw string a user typed
is never handed on, because URL parsers disagree: for
``http://prod.example.com\\@127.0.0.1:8000/v1`` ``urllib.parse`` reads the host
127.0.0.1 while urllib3 (under requests, under Locust's ``HttpUser``) reads
``prod.example.com``. So a target is refused, in one line naming the field and
the fix, unless it is plainly ``http(s)://host[:port][/path]``:

- http or https only; no user name or password; no query or fragment;
- no backslash, whitespace or control character anywhere, ASCII outside the host;
- the host normalised: IDNA (A-labels), lower case, no trailing dot; an IP
  literal only in its canonical form (``127.1``, ``0x7f.0.0.1``, ``2130706433``,
  ``[::ffff:127.0.0.1]`` and zone ids are refused: resolvers read them differently);
- an explicit port in the rebuilt URL (80 or 443 when none was given);
- a path of plain characters (no ``%``-encoding, no ``.``/``..`` segments, no ``//``);
- and, as a net under all of this, the same reading from every URL parser the
  load path may use (urllib.parse, urllib3, httpx, yarl): any disagreement is refused.

The host is resolved once, by preflight (:func:`resolve`); the addresses travel
in the plan and the load processes' egress guard pins the name to them.

**What is local.** Only a literal loopback address (127.0.0.0/8, ``::1``) or the
name ``localhost`` (which must then resolve to loopback addresses only) is the
built-in ``local`` environment with its own user cap. Any other name is listed
by an environment or refused, even when it resolves to a loopback address today:
what a name resolves to is a fact about DNS at one moment, not about the target.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stampede.core.errors import Refusal

__all__ = ["LOCALHOST", "Resolver", "Target", "TargetInvalid", "parse_target", "resolve", "readings", "disagreement"]

SCHEMES = {"http": 80, "https": 443}
LOCALHOST = "localhost"
MAX_URL = 2048
MAX_HOST = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/-]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
FIX = "write it as http(s)://host[:port]/path, e.g. http://127.0.0.1:8000/v1"

Resolver = Callable[..., list]


class TargetInvalid(Refusal):
    """The target URL is not one plain, unambiguous http(s) URL (one line: what, and the fix)."""


@dataclass(frozen=True)
class Target:
    """A parsed, normalised target; ``addresses`` once :func:`resolve` looked the host up."""

    scheme: str
    host: str  # A-labels, lower case, no trailing dot; an IPv6 literal without brackets
    port: int
    path: str  # "" or "/v1": no trailing slash
    addresses: tuple[str, ...] = ()  # canonical IPs the host resolved to at preflight (sorted)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address when it is a literal, else None (a name)."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def url(self) -> str:
        """The only form of the target any component sees."""
        return f"{self.origin}{self.path}"

    @property
    def is_local(self) -> bool:
        """A literal loopback address, or ``localhost`` resolved to loopback addresses only."""
        if self.ip is not None:
            return self.ip.is_loopback
        if self.host != LOCALHOST or not self.addresses:
            return False
        return all(ipaddress.ip_address(a).is_loopback for a in self.addresses)

    def endpoints(self) -> tuple[str, ...]:
        """``ip:port`` (``[ip]:port``) of every resolved address: what a load process may connect to."""
        return tuple(f"[{a}]:{self.port}" if ":" in a else f"{a}:{self.port}" for a in self.addresses)

    def egress_policy(self) -> dict[str, Any]:
        """The egress guard's policy (``stampede.load.egress``): these endpoints, the name pinned to them."""
        names = {} if self.ip is not None else {self.host: list(self.addresses)}
        return {"addresses": list(self.endpoints()), "names": names}

    def __str__(self) -> str:
        return self.url


def parse_target(raw: Any, *, field: str = "target") -> Target:
    """``raw`` as a :class:`Target` (not yet resolved), or :class:`TargetInvalid` naming ``field``."""

    def refuse(problem: str, fix: str = FIX) -> TargetInvalid:
        return TargetInvalid(field, problem, fix)

    if not isinstance(raw, str) or not raw:
        raise refuse("no URL given" if not raw else f"must be a URL string (got {type(raw).__name__})")
    if len(raw) > MAX_URL:
        raise refuse(f"is {len(raw)} characters long, more than {MAX_URL}")
    for index, char in enumerate(raw):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            raise refuse(f"contains whitespace or a control character (U+{ord(char):04X} at {index})",
                         "remove it; " + FIX)
    if "\\" in raw:
        raise refuse("contains a backslash, which URL parsers read differently", "remove it; " + FIX)
    scheme_match = _SCHEME.match(raw)
    if scheme_match is None:
        raise refuse(f"{_quote(raw)} does not start with http:// or https://")
    scheme = scheme_match.group(1).lower()
    if scheme not in SCHEMES:
        raise refuse(f"{_quote(raw)} is not an http(s) URL (scheme {scheme})")
    rest = raw[scheme_match.end():]
    if "?" in rest or "#" in rest:
        raise refuse("has a query or fragment; a base URL has neither", "drop everything from ? or #")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise refuse("carries a user name or password (user@host)",
                     "remove the credentials; the accounts' password comes from STAMPEDE_TARGET_PASSWORD")
    host_text, port = _split_authority(authority, scheme, refuse)
    host = _normalise_host(host_text, refuse)
    path = _normalise_path(path, refuse)
    target = Target(scheme=scheme, host=host, port=port, path=path)
    problem = disagreement(raw, target)
    if problem:
        raise refuse(f"URL parsers disagree about {_quote(raw)} ({problem})", FIX)
    return target


def _split_authority(authority: str, scheme: str, refuse) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise refuse("has an unclosed [ in its host")
        host, after = authority[: end + 1], authority[end + 1:]
        if after and not after.startswith(":"):
            raise refuse(f"has {after!r} after its IPv6 address")
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise refuse("has more than one ':' in its host and port", "write an IPv6 address in [brackets]")
        host, _, port_text = authority.partition(":")
        port_text = port_text if ":" in authority else None
    if port_text is None:
        return host, SCHEMES[scheme]
    if not port_text.isascii() or not port_text.isdigit() or (len(port_text) > 1 and port_text[0] == "0"):
        raise refuse(f"port {port_text!r} is not a number from 1 to 65535 (no leading zeros)")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise refuse(f"port {port} is not from 1 to 65535")
    return host, port


def _normalise_host(text: str, refuse) -> str:
    if not text:
        raise refuse("has no host")
    if text.startswith("["):
        inner = text[1:-1]
        if "%" in inner:
            raise refuse("has an IPv6 zone id (%...), which parsers and resolvers read differently")
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            raise refuse(f"[{inner}] is not an IPv6 address") from None
        if address.ipv4_mapped is not None:
            raise refuse(f"[{inner}] is an IPv4-mapped address", f"write {address.ipv4_mapped}")
        return address.compressed
    name = text[:-1] if text.endswith(".") else text
    if not name:
        raise refuse("has no host")
    if not name.isascii():
        name = _idna(name, refuse)
    else:
        name = name.lower()
    if len(name) > MAX_HOST:
        raise refuse(f"host is longer than {MAX_HOST} characters")
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):  # an IPv4 address, or something resolvers may read as one
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            raise refuse(f"host {name} looks like an IP address but is not a plain dotted quad",
                         "write the address as four decimal numbers, e.g. 127.0.0.1") from None
        if str(address) != name:
            raise refuse(f"host {name} is not written canonically", f"write {address}")
        if address.is_unspecified:
            raise refuse(f"host {name} is the unspecified address", "write 127.0.0.1 for this machine")
        return name
    for label in labels:
        if not _LABEL.match(label):
            raise refuse(f"host {name} has the label {label!r}, not letters, digits and inner hyphens",
                         "use the host's DNS name")
    return name


def _idna(name: str, refuse) -> str:
    import idna

    try:
        encoded = idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise refuse(f"host {name!r} is not a valid internationalised name ({exc})", "use the host's DNS name") from None
    if "xn--" not in encoded:  # e.g. fullwidth letters that map to plain ASCII: a look-alike, not an IDN
        raise refuse(f"host {name!r} maps to {encoded} under IDNA", f"write {encoded}")
    return encoded


def _normalise_path(path: str, refuse) -> str:
    if not path:
        return ""
    if not path.isascii() or not _PATH.match(path):
        raise refuse("has a character in its path that needs %-encoding", "use a plain path such as /v1")
    segments = path.split("/")[1:]
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is dropped
    if any(s in ("", ".", "..") for s in segments):
        raise refuse(f"path {path!r} has an empty, '.' or '..' segment, which parsers normalise differently",
                     "use a plain path such as /v1")
    return "".join(f"/{s}" for s in segments)


# -- the net: every parser on the load path must read the same URL ---------------------------------
def readings(raw: str) -> dict[str, tuple[str, str, int, str] | str]:
    """(scheme, host, port, path) as each parser reads ``raw``, or why it could not parse it."""
    out: dict[str, tuple[str, str, int, str] | str] = {}
    for name, read in _PARSERS:
        try:
            scheme, host, port, path = read(raw)
            scheme = (scheme or "").lower()
            host = (host or "").strip("[]").lower().rstrip(".")
            if host and not host.isascii():
                import idna

                host = idna.encode(host, uts46=True).decode("ascii")
            try:
                host = ipaddress.ip_address(host).compressed
            except ValueError:
                pass
            port = int(port) if port is not None else SCHEMES.get(scheme, 0)
            path = (path or "").rstrip("/")
            out[name] = (scheme, host, port, path)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a disagreement
            out[name] = f"{type(exc).__name__}"
    return out


def disagreement(raw: str, target: Target | None = None) -> str | None:
    """Why the parsers (and ``target``, our own reading) do not all agree on ``raw``; None when they do."""
    found = readings(raw)
    if target is not None:
        found = {"stampede": (target.scheme, target.host, target.port, target.path), **found}
    distinct = {repr(v) for v in found.values()}
    if len(distinct) <= 1:
        return None
    first_name, first = next(iter(found.items()))
    for name, reading in found.items():
        if reading != first:
            return f"{first_name} reads {_describe(first)}, {name} reads {_describe(reading)}"
    return None


def _describe(reading: tuple[str, str, int, str] | str) -> str:
    if isinstance(reading, str):
        return f"nothing ({reading})"
    scheme, host, port, path = reading
    return f"{scheme}://{host}:{port}{path}"


def _urllib(raw: str):
    from urllib.parse import urlsplit

    parts = urlsplit(raw)
    return parts.scheme, parts.hostname, parts.port, parts.path


def _urllib3(raw: str):
    from urllib3.util import parse_url

    parts = parse_url(raw)
    return parts.scheme, parts.host, parts.port, parts.path


def _httpx(raw: str):
    import httpx

    parts = httpx.URL(raw)
    return parts.scheme, parts.raw_host.decode("ascii"), parts.port, parts.raw_path.decode("ascii").split("?")[0]


def _yarl(raw: str):
    import yarl

    parts = yarl.URL(raw)
    return parts.scheme, parts.raw_host, parts.explicit_port, parts.raw_path


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


_PARSERS: tuple[tuple[str, Callable], ...] = tuple(
    (name, read) for name, read, module in (
        ("urllib.parse", _urllib, "urllib"), ("urllib3", _urllib3, "urllib3"),
        ("httpx", _httpx, "httpx"), ("yarl", _yarl, "yarl"),
    ) if _installed(module)
)


def _quote(raw: str) -> str:
    return repr(raw if len(raw) <= 120 else raw[:117] + "...")


# -- resolution, once ---------------------------------------------------------------------------------
def resolve(target: Target, *, resolver: Resolver = socket.getaddrinfo, field: str = "target") -> Target:
    """``target`` with the addresses its host resolves to now (a lookup only: nothing is sent).

    An IP literal resolves to itself. A name that does not resolve, or resolves
    to the unspecified address, is refused. ``localhost`` must resolve to
    loopback addresses only (RFC 6761), or it is refused.
    """
    if target.ip is not None:
        return Target(target.scheme, target.host, target.port, target.path, (target.ip.compressed,))
    try:
        infos = resolver(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetInvalid(field, f"host {target.host} does not resolve ({exc})",
                            "check the name, or give the host's address") from None
    addresses = set()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_unspecified:
            raise TargetInvalid(field, f"host {target.host} resolves to the unspecified address {address}",
                                "give the host's real address")
        addresses.add(address.compressed)
    if not addresses:
        raise TargetInvalid(field, f"host {target.host} resolves to no address", "check the name")
    resolved = Target(target.scheme, target.host, target.port, target.path, tuple(sorted(addresses)))
    if target.host == LOCALHOST and not resolved.is_local:
        raise TargetInvalid(field, f"localhost resolves to {', '.join(resolved.addresses)}, not only to loopback",
                            "fix /etc/hosts, or target 127.0.0.1")
    return resolved

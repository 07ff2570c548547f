"""The egress guard: no Python connection leaves a load process for an address preflight did not approve.

Active in every Locust process Stampede starts (the master, local and cloud
workers, a standalone process), from the moment ``stampede.load.plugin`` is
imported: before a team's locustfile is imported, and long before any user
exists. It holds for the stock journeys and team locustfiles alike, for
``HttpUser`` (requests/urllib3), ``FastHttpUser`` and ``JourneyHttpClient``
(geventhttpclient), ``http.client``, ``urllib`` and raw sockets.

The policy is the plan's ``egress`` (``RunPlan.egress_policy``, made by
preflight from the target's resolved addresses)::

    {"addresses": ["10.0.0.7:443", "[2001:db8::7]:443"],        # (ip, port) pairs that may be connected to
     "names": {"crm.example.com": ["10.0.0.7", "2001:db8::7"]}}  # names, pinned to what preflight resolved

It comes from ``$STAMPEDE_EGRESS_POLICY`` (JSON) when the process was given one
(``stampede.load.process_env``),
else from the plan: the master and a standalone process read it at ``init``; a
worker learns it with the master's first spawn message, at ``test_start``, before
any user is spawned. Until then the policy is empty, and empty refuses everything
(so does a Locust process started with the plugin but without a plan's ``egress``).
Once a policy is applied it is locked: a later plan cannot widen it.

Two choke points, both process-wide (measured in /work/notes/locust-egress.md §B):

1. ``sys.addaudithook``: CPython raises the audit event ``socket.connect`` inside
   the C ``connect``/``connect_ex`` *before* the system call, for every Python
   socket (gevent's cooperative connect ends in ``_socket.socket.connect_ex``). An
   exception raised in the hook aborts the call: no SYN is sent. ``sendto``/
   ``sendmsg`` (UDP), ``getaddrinfo``/``gethostbyname`` outside gevent, process
   creation (a child is beyond the hook) and ``ctypes`` lookups of libc's socket
   calls are judged the same way. An audit hook cannot be removed.
2. gevent's hub resolver: a pinned name answers from preflight's addresses
   *without any DNS query*, so nothing can rebind it between preflight and the
   load; an IP literal passes numerically; any other name is refused.

A refusal raises :class:`EgressDenied`, a ``PermissionError`` (EPERM, as a
firewall's reject), so clients record it as that request's failure, naming the
address (``EgressDenied: 127.0.0.2:45025 is not an approved address of this
run``). Each is counted per address or name; workers ship their new counts with
every report (``stampede_egress``); the master (or a standalone process) totals
them, stops the load with the invalidating stop kind ``egress_denied`` naming the
first address, and :func:`totals` gives the counts for the output. In the prototype,
25 ways to reach a canary on 127.0.0.2 made 0 connections (14 without the guard);
it costs nothing per keep-alive request and 20-40 µs per new connection.

At import this module also drops what looks like a credential from the process's
own ``os.environ`` (``process_env.drop_credentials``), before a team locustfile runs.

Not covered (a guard against accidents, not a sandbox): C libraries with their
own sockets (pyzmq, which is why Locust's master/worker link needs no allow-listing;
grpcio, librdkafka, libpq), and Python code that deliberately edits the policy.
The hard guarantee is the kernel's: security groups for cloud workers, nftables or
a cgroup egress filter locally.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import socket as _socket_module
import sys
import threading
import traceback
from collections import Counter
from typing import Any

import gevent
from gevent import monkey

from stampede.core.netutil import family_of
from stampede.core.stops import StopKind, stop_kind
from stampede.load.process_env import EGRESS_ENV as POLICY_ENV
from stampede.load.process_env import drop_credentials

__all__ = ["POLICY_ENV", "REPORT_KEY", "EgressDenied", "EgressPolicy", "install", "totals"]

logger = logging.getLogger("stampede.egress")

REPORT_KEY = "stampede_egress"  # a worker's new denial counts, in its reports to the master
CHECK_EVERY_S = 0.5  # how often the master (or a standalone process) turns new denials into a stop
_real_getaddrinfo = monkey.get_original("socket", "getaddrinfo")
SUBPROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                               "os.forkpty", "pty.spawn"})
INET = (_socket_module.AF_INET, _socket_module.AF_INET6)
RAW_SOCKET_SYMBOLS = frozenset({"connect", "sendto", "sendmsg", "sendmmsg", "socket", "socketpair", "getaddrinfo",
                                "gethostbyname", "syscall"})


class EgressDenied(PermissionError):
    """A connection (or a lookup, or a child process) the run's egress policy does not allow."""

    def __init__(self, what: str, verb: str = "connect") -> None:
        if verb in SUBPROCESS_EVENTS or verb.startswith("ctypes"):
            text = f"EgressDenied: {what} is not allowed in a load process (a child or C call is beyond the guard)"
        else:
            text = f"EgressDenied: {what} is not an approved address of this run"
        super().__init__(errno.EPERM, text)


def normalize_ip(text: Any) -> str | None:
    """The canonical text of an IP literal (IPv4-mapped IPv6 as IPv4, no scope, no brackets); None for a name."""
    try:
        address = ipaddress.ip_address(str(text).strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    ip = normalize_ip(host)
    if ip is None:
        raise ValueError(f"egress policy: {text!r} is not ip:port")
    return ip, int(port)


class EgressPolicy:
    """The addresses and pinned names a load process may use, and what it was refused."""

    def __init__(self, addresses: set[tuple[str, int]] | None = None, names: dict[str, list[str]] | None = None,
                 resolvable: set[str] | None = None) -> None:
        self.addresses: set[tuple[str, int]] = set(addresses or ())
        self.names: dict[str, list[str]] = {k.lower().rstrip("."): [normalize_ip(a) or a for a in v]
                                            for k, v in (names or {}).items()}
        self.resolvable = {n.lower().rstrip(".") for n in resolvable or ()}  # looked up for real; connects still judged
        self.locked = bool(self.addresses)
        self.denied: Counter = Counter()  # "ip:port", a name, "subprocess …" -> attempts
        self.sites: dict[str, list[str]] = {}  # what -> its first distinct call sites (the locustfile's lines)
        self.reported: Counter = Counter()  # what a worker already sent to its master
        self.lock = threading.Lock()

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, *, resolvable: set[str] | None = None) -> EgressPolicy:
        data = data or {}
        return cls({parse_address(a) for a in data.get("addresses", [])}, data.get("names") or {}, resolvable)

    def apply(self, data: dict[str, Any] | None) -> bool:
        """Take the plan's policy, once (True when applied); a locked policy is never widened."""
        if self.locked or not data:
            return False
        fresh = EgressPolicy.from_json(data)
        self.addresses, self.names, self.locked = fresh.addresses, fresh.names, bool(fresh.addresses)
        return True

    # -- the judgements ----------------------------------------------------------------
    def check_connect(self, family: int, address: Any, verb: str = "connect") -> None:
        if family not in INET or not isinstance(address, tuple) or len(address) < 2:
            return  # AF_UNIX, AF_NETLINK, ...: not egress
        host, port = address[0], address[1]
        ip = normalize_ip(host)
        if ip is None:  # a name given to an unpatched C socket: it resolves inside connect, unseen
            name = str(host).lower().rstrip(".")
            if name in self.names and any((a, int(port)) in self.addresses for a in self.names[name]):
                return
            self.deny(f"{host}:{port}", f"{verb} to an unpinned name")
        if (ip, int(port)) not in self.addresses:
            self.deny(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", verb)

    def check_name(self, host: Any) -> list[str] | None:
        """The pinned addresses of ``host``; None for an IP literal, no host or a resolvable name; else raises."""
        if host is None or host == b"" or host == "":
            return None
        if isinstance(host, bytes):
            host = host.decode("idna", errors="replace")
        if normalize_ip(host) is not None:
            return None
        name = str(host).lower().rstrip(".")
        if name in self.names:
            return self.names[name]
        if name in self.resolvable:
            return None
        self.deny(name, "resolve")
        return None  # unreachable: deny raises

    def deny(self, what: str, verb: str) -> None:
        with self.lock:
            self.denied[what] += 1
            sites = self.sites.setdefault(what, [])
            if len(sites) < 5:
                site = _call_site()
                if site not in sites:
                    sites.append(site)
        raise EgressDenied(what, verb)

    def drain_for_master(self) -> dict[str, int]:
        """The counts not yet sent to the master."""
        with self.lock:
            delta = {k: v - self.reported.get(k, 0) for k, v in self.denied.items() if v != self.reported.get(k, 0)}
            self.reported = Counter(self.denied)
        return delta


def _call_site() -> str:
    """The innermost frame outside the stdlib, the installed packages and this file: the locustfile's line."""
    frames = traceback.extract_stack()[:-3]
    for frame in reversed(frames):
        if "/lib/python3" not in frame.filename and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno} {frame.name}"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} {frame.name}"


POLICY: EgressPolicy | None = None


def _audit(event: str, args: tuple) -> None:
    policy = POLICY
    if policy is None:
        return
    if event.startswith("socket."):
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            sock, address = args[0], args[1]
            if address is not None:
                policy.check_connect(getattr(sock, "family", -1), address, event[7:])
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            policy.check_name(args[0])
    elif event == "ctypes.dlsym" and isinstance(args[1], str) and args[1] in RAW_SOCKET_SYMBOLS:
        policy.deny(f"ctypes {args[1]}()", event)  # libc's connect() through ctypes would bypass the hook
    elif event in SUBPROCESS_EVENTS:
        policy.deny(f"subprocess {_program(event, args)}", event)


def _program(event: str, args: tuple) -> str:
    """The program a process-creation audit event names (for the denial's key)."""
    try:
        ordered = (args[1], args[0]) if event == "subprocess.Popen" else args  # (executable, args, cwd, env)
        for value in ordered:
            if isinstance(value, (list, tuple)) and value:
                value = value[0]
            if isinstance(value, (str, bytes, os.PathLike)):
                text = os.fsdecode(value).strip()
                return os.path.basename(text.split()[0]) if text else "?"
    except Exception:  # noqa: BLE001 - naming the program must never let the call through
        pass
    return "(fork)" if event in ("os.fork", "os.forkpty") else "?"  # gevent's subprocess forks, then execs


class PinnedResolver:
    """gevent's hub resolver, restricted: pinned names answer from the policy, IP literals pass, others raise."""

    def __init__(self, policy: EgressPolicy, inner) -> None:
        self.policy = policy
        self.inner = inner

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - the socket API's names
        pinned = self.policy.check_name(host)
        if pinned is None:
            if host and normalize_ip(host.decode() if isinstance(host, bytes) else host) is None:
                return self.inner.getaddrinfo(host, port, family, type, proto, flags)  # a resolvable name
            return _real_getaddrinfo(host, port, family, type, proto, flags | _socket_module.AI_NUMERICHOST)
        if isinstance(port, (bytes, str)) and not str(port if isinstance(port, str) else port.decode()).isdigit():
            port = _socket_module.getservbyname(port if isinstance(port, str) else port.decode())
        port = int(port or 0)
        results = []
        for ip in pinned:
            fam = family_of(ip)
            if family not in (0, fam):
                continue
            kinds = [type] if type else [_socket_module.SOCK_STREAM, _socket_module.SOCK_DGRAM]
            for kind in kinds:
                sockaddr = (ip, port, 0, 0) if fam == _socket_module.AF_INET6 else (ip, port)
                results.append((fam, kind, proto or (6 if kind == _socket_module.SOCK_STREAM else 17), "", sockaddr))
        if not results:
            raise _socket_module.gaierror(_socket_module.EAI_NONAME, "no pinned address of that family")
        return results

    def gethostbyname(self, hostname, family=_socket_module.AF_INET):
        pinned = self.policy.check_name(hostname)
        return pinned[0] if pinned else self.inner.gethostbyname(hostname, family)

    def gethostbyname_ex(self, hostname, family=_socket_module.AF_INET):
        pinned = self.policy.check_name(hostname)
        return (hostname, [], list(pinned)) if pinned else self.inner.gethostbyname_ex(hostname, family)

    def gethostbyaddr(self, ip_address):
        self.policy.check_name(ip_address)
        raise _socket_module.herror(1, "reverse lookups are off under the egress guard")

    def getnameinfo(self, sockaddr, flags):
        return self.inner.getnameinfo(sockaddr, flags | _socket_module.NI_NUMERICHOST | _socket_module.NI_NUMERICSERV)

    def close(self):
        self.inner.close()


def activate(policy: EgressPolicy) -> EgressPolicy:
    """Make ``policy`` this process's (idempotent; the audit hook is added once and stays)."""
    global POLICY

    first = POLICY is None
    POLICY = policy
    hub = gevent.get_hub()
    if not isinstance(hub.resolver, PinnedResolver):
        hub.resolver = PinnedResolver(policy, hub.resolver)
    else:
        hub.resolver.policy = policy
    if first:
        sys.addaudithook(_audit)
    return policy


def _policy_from_env() -> dict[str, Any] | None:
    raw = os.environ.get(POLICY_ENV)
    return json.loads(raw) if raw else None


def _master_host() -> set[str]:
    """A worker's ``--master-host`` when it is a name: Locust resolves it (then zmq connects, in C)."""
    argv = sys.argv
    for index, arg in enumerate(argv):
        value = argv[index + 1] if arg == "--master-host" and index + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--master-host=") else None)
        if value and normalize_ip(value) is None:
            return {value}
    return set()


# -- wiring into Locust ------------------------------------------------------------------------
def install(environment) -> EgressPolicy:
    """Apply the plan's policy and count denials toward a stop (called first in the plugin's ``init``)."""
    from locust.runners import MasterRunner, WorkerRunner

    policy = POLICY or activate(EgressPolicy())
    runner = environment.runner
    state = environment._stampede_egress = {"workers": Counter(), "all": Counter(), "stopped": False}
    if not policy.locked:
        policy.apply(_plan_egress(environment))

    def on_test_start(environment, **_kw) -> None:  # a worker's plan arrives with the first spawn message
        if policy.apply(_plan_egress(environment)):
            logger.info("egress guard: %d approved address(es)", len(policy.addresses))

    environment.events.test_start.add_listener(on_test_start)
    if isinstance(runner, WorkerRunner):
        def report(client_id, data) -> None:
            delta = policy.drain_for_master()
            if delta:
                data[REPORT_KEY] = delta

        environment.events.report_to_master.add_listener(report)
        return policy
    if isinstance(runner, MasterRunner):
        def on_worker_report(client_id, data) -> None:
            for what, count in (data.get(REPORT_KEY) or {}).items():
                state["workers"][what] += int(count)

        environment.events.worker_report.add_listener(on_worker_report)
    # before the aggregator's own quitting listener writes the output: the totals are final then
    environment.events.quitting.add_listener(lambda environment, **_kw: totals(environment))
    gevent.spawn(_stop_on_denial, environment)
    return policy


def _plan_egress(environment) -> dict[str, Any] | None:
    from_env = _policy_from_env()
    if from_env is not None:
        return from_env
    options = environment.parsed_options
    raw = getattr(options, "stampede_plan", None) if options else None
    if not raw:
        return None
    try:
        return json.loads(raw).get("egress")
    except (ValueError, AttributeError):
        return None


def totals(environment) -> dict[str, int]:
    """Every denial of the run so far, this process's and (on the master) its workers' (kept in ``all``)."""
    state = getattr(environment, "_stampede_egress", None)
    if state is None:
        return dict(POLICY.denied) if POLICY is not None else {}
    merged = state["all"]
    merged.clear()
    merged.update(state["workers"])
    if POLICY is not None:
        merged.update(POLICY.denied)
    return dict(merged)


def _stop_on_denial(environment) -> None:
    """The first denial stops the load and makes the run invalid, naming what was refused.

    The stop carries the live totals (``stopped.egress`` in the master's output), final when it is written.
    """
    state = environment._stampede_egress
    while True:
        gevent.sleep(CHECK_EVERY_S)
        found = totals(environment)
        aggregator = getattr(environment, "_stampede_aggregator", None)
        if state["stopped"] or not found or aggregator is None:
            continue
        what = max(found.items(), key=lambda item: item[1])[0]
        count = sum(found.values())
        logger.error("egress guard: %d denied attempt(s), most to %s (run invalid)", count, what)
        reason = (f"egress guard: a load process tried to reach {what}, which preflight did not approve "
                  f"({count} attempt{'s' if count != 1 else ''} denied so far); the run is invalid")
        earlier = aggregator.stop_reason
        if earlier is not None and not stop_kind(earlier.get("kind")).invalidates:
            aggregator.stop_reason = None  # a denial outranks a finding: the figures cannot be trusted
        aggregator.request_stop(reason, kind=StopKind.EGRESS_DENIED, egress=state["all"],
                                **({"after": earlier} if earlier else {}))
        state["stopped"] = True


# active from import: before the team's locustfile is imported; empty until the plan arrives, and empty refuses all
activate(EgressPolicy.from_json(_policy_from_env(), resolvable=_master_host()))
drop_credentials()

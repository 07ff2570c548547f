"""What a run creates and how to remove it, for any API: the ``creates`` and ``cleanup`` keys of a scenario.

Data, never code (except a named hook). Two declarations:

- ``creates``: which requests create what, so a team's locustfile records what
  it creates without a line of Stampede code. A rule matches a request by
  method and name (or URL path) and status, and takes the new entity's id from
  the JSON body::

      creates:
        - {request: POST /showings, status: 201, kind: showing, id: id}

- ``cleanup``: per kind, how to delete one, how to check one is gone, and,
  where the API can search, how to list what carries the run tag (the final
  proof); how to authenticate; or a Python hook instead::

      cleanup:
        auth: none              # or {login: {...}} or {bearer: {env: VAR}} / {bearer: {connection: ID}}
        kinds:
          showing:
            delete: DELETE /showings/{id}
            check: GET /showings/{id}          # default: GET of the delete's path
            search: {request: "GET /showings?q={run_tag}", paging: {page: _page, limit: _limit, size: 100}}

The stock CRM journeys' declaration is shipped as ``cleanup/crm.yaml`` and
applies to every scenario that runs them (no ``locustfile``). Every problem is
one line naming the field and the fix; the records travel to the Locust
processes and back as the YAML form (``to_dict``), so one parser reads both.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from stampede.core.errors import Refusal
from stampede.core.paths import data_dir

__all__ = [
    "STOCK_DECLARATION", "Auth", "CleanupDeclaration", "CreateRule", "KindCleanup", "Login", "Paging",
    "RequestTemplate", "Search", "Secret", "declaration_for", "hook_parts", "parse_cleanup", "parse_creates",
    "stock_declaration", "value_at",
]

STOCK_DECLARATION = "crm"  # cleanup/crm.yaml: the stock journeys' entities
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_REQUEST = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (/\S*)$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_FIELD_PATH = re.compile(r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOOK = re.compile(r"^(?P<file>[^:]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")
MAX_CONCURRENCY = 256
DEFAULT_CONCURRENCY = 16
GONE_STATUSES = (404, 410)

Fail = Callable[[str, str, str], Refusal]


@dataclass(frozen=True)
class RequestTemplate:
    """``METHOD /path?query`` relative to the target's base URL, with ``{placeholders}``."""

    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def placeholders(self) -> set[str]:
        return _placeholders(self.path)


@dataclass(frozen=True)
class CreateRule:
    """A request that creates an entity: ``method`` and ``path`` (the request's name or URL path), ``status``."""

    method: str
    path: str
    kind: str
    status: tuple[int, ...] = (201,)
    id: str = "id"  # where the new entity's id is in the JSON body (dotted path)
    url: str = ""  # the entity's path, with {id}; default ``<path>/{id}``

    @property
    def entity_path(self) -> str:
        return self.url or f"{self.path.rstrip('/')}/{{id}}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request": f"{self.method} {self.path}", "kind": self.kind,
                                "status": list(self.status), "id": self.id}
        if self.url:
            data["url"] = self.url
        return data


@dataclass(frozen=True)
class Secret:
    """Where a credential comes from: an environment variable, or an Airflow Connection's password."""

    env: str = ""
    connection: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"env": self.env} if self.env else {"connection": self.connection}

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"Airflow connection {self.connection!r}"


@dataclass(frozen=True)
class Login:
    """A login call whose JSON answer holds a token, sent as ``<header>: <scheme> <token>``."""

    request: RequestTemplate
    json: dict[str, Any] = field(default_factory=dict)
    token: str = "token"
    secret: Secret | None = None  # fills ``{secret}`` in ``json``

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request": str(self.request), "json": self.json, "token": self.token}
        if self.secret is not None:
            data["secret"] = self.secret.to_dict()
        return data


@dataclass(frozen=True)
class Auth:
    """``none``, a ``login`` call, or a ``bearer`` token from a :class:`Secret`."""

    login: Login | None = None
    bearer: Secret | None = None
    header: str = "Authorization"
    scheme: str = "Bearer"

    @property
    def kind(self) -> str:
        return "login" if self.login else "bearer" if self.bearer else "none"

    @property
    def secrets(self) -> list[tuple[str, Secret]]:
        """(field, secret) of every credential this auth needs, for preflight to check."""
        found = []
        if self.bearer is not None:
            found.append(("cleanup.auth.bearer", self.bearer))
        if self.login is not None and self.login.secret is not None:
            found.append(("cleanup.auth.login.secret", self.login.secret))
        return found

    def to_dict(self) -> Any:
        if self.kind == "none":
            return "none"
        data: dict[str, Any] = (
            {"login": self.login.to_dict()} if self.login else {"bearer": self.bearer.to_dict()}  # type: ignore[union-attr]
        )
        if self.header != "Authorization":
            data["header"] = self.header
        if self.scheme != "Bearer":
            data["scheme"] = self.scheme
        return data


@dataclass(frozen=True)
class Paging:
    """How a search pages: by ``page`` number or by ``offset``, ``size`` items each; none: one request."""

    page: str = ""  # the page-number parameter (first page ``first``)
    offset: str = ""  # or the offset parameter
    limit: str = ""  # the page-size parameter
    size: int = 100
    first: int = 1

    @property
    def style(self) -> str:
        return "page" if self.page else "offset" if self.offset else "none"

    def params(self, index: int, seen: int) -> dict[str, str]:
        """The query parameters of page ``index`` (0-based), after ``seen`` items."""
        if self.style == "none":
            return {}
        params = {self.limit: str(self.size)} if self.limit else {}
        if self.style == "page":
            params[self.page] = str(self.first + index)
        else:
            params[self.offset] = str(seen)
        return params

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"size": self.size}
        for key in ("page", "offset", "limit"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.page and self.first != 1:
            data["first"] = self.first
        return data


@dataclass(frozen=True)
class Search:
    """A request that lists the entities carrying ``{run_tag}``: where the list and each id are."""

    request: RequestTemplate
    items: str = ""  # dotted path of the list in the body; "" = the body is the list
    id: str = "id"
    paging: Paging = field(default_factory=Paging)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request": str(self.request), "items": self.items, "id": self.id}
        if self.paging.style != "none":
            data["paging"] = self.paging.to_dict()
        return data


@dataclass(frozen=True)
class KindCleanup:
    """One kind of entity: delete one by id, check one is gone, and (optionally) search by run tag."""

    delete: RequestTemplate
    check: RequestTemplate
    search: Search | None = None
    gone: tuple[int, ...] = GONE_STATUSES  # what the check answers for an entity that is gone
    verify_before_delete: bool = False  # GET first and delete only what carries the run tag (ids the API reuses)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"delete": str(self.delete), "check": str(self.check), "gone": list(self.gone)}
        if self.search is not None:
            data["search"] = self.search.to_dict()
        if self.verify_before_delete:
            data["verify_before_delete"] = True
        return data


@dataclass(frozen=True)
class CleanupDeclaration:
    """How to remove a run's test data from one API, and how to prove it is gone."""

    auth: Auth = field(default_factory=Auth)
    kinds: dict[str, KindCleanup] = field(default_factory=dict)
    hook: str = ""  # ``path/to/file.py:function`` instead of kinds (path absolute once loaded)
    creates_nothing: bool = False  # ``cleanup: none``: the locustfile is declared to create nothing
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight at most
    max_rate: float | None = None  # requests per second at most (None: as fast as the API allows)
    source: str = ""  # where it was declared (a scenario file, the stock declaration)

    def to_dict(self) -> Any:
        if self.creates_nothing:
            return "none"
        data: dict[str, Any] = {"auth": self.auth.to_dict(), "source": self.source}
        if self.kinds:
            data["kinds"] = {kind: spec.to_dict() for kind, spec in self.kinds.items()}
        if self.hook:
            data["hook"] = self.hook
        if self.concurrency != DEFAULT_CONCURRENCY:
            data["concurrency"] = self.concurrency
        if self.max_rate is not None:
            data["max_rate"] = self.max_rate
        return data

    @classmethod
    def from_dict(cls, data: Any) -> CleanupDeclaration:
        """Rebuild a declaration from :meth:`to_dict` (the plan, a ledger's header)."""
        source = data.get("source", "") if isinstance(data, Mapping) else ""
        return parse_cleanup(data, _failer(f"cleanup declaration {source}".strip()), source=source)


# -- the stock declaration -----------------------------------------------------------------------
@cache
def stock_declaration(name: str = STOCK_DECLARATION) -> CleanupDeclaration:
    """A declaration shipped in the ``cleanup/`` folder (``crm``: the stock CRM journeys')."""
    path = data_dir("cleanup") / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "none"
        raise Refusal("cleanup", f"no shipped declaration named {name!r}", f"use one of {known} or a mapping")
    return parse_cleanup(yaml.safe_load(path.read_text()), _failer(f"cleanup declaration {path.name}"),
                         source=f"stock:{name}")


def declaration_for(declarations: Sequence[CleanupDeclaration | None]) -> CleanupDeclaration | None:
    """The one declaration of a run whose scenarios share a locustfile: they must agree (or say nothing)."""
    given = [d for d in declarations if d is not None]
    if not given:
        return None
    first = given[0]
    for other in given[1:]:
        if _comparable(other) != _comparable(first):
            raise Refusal("cleanup", f"scenarios {first.source} and {other.source} declare different cleanups",
                          "run them separately, or give them the same cleanup block")
    return first


def _comparable(declaration: CleanupDeclaration) -> Any:
    data = declaration.to_dict()
    return {k: v for k, v in data.items() if k != "source"} if isinstance(data, dict) else data


# -- parsing -----------------------------------------------------------------------------------
def parse_creates(raw: Any, fail: Fail) -> tuple[CreateRule, ...]:
    """``creates:``: a list of ``{request: METHOD /path, kind, status, id, url}``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise fail("creates", "must be a list of rules", "e.g. '- {request: POST /showings, kind: showing, id: id}'")
    rules = []
    for index, item in enumerate(raw):
        where = f"creates[{index}]"
        _mapping(item, where, {"request", "kind", "status", "id", "url"}, {"request", "kind"}, fail)
        method, path = _request(item["request"], f"{where}.request", fail, allowed=set())
        kind = _kind(item["kind"], f"{where}.kind", fail)
        status = item.get("status", 201)
        statuses = status if isinstance(status, list) else [status]
        if not statuses or not all(_is_int(s) and 200 <= s <= 299 for s in statuses):
            raise fail(f"{where}.status", f"must be a 2xx status or a list of them (got {status!r})", "use e.g. 201")
        id_path = _field_path(item.get("id", "id"), f"{where}.id", fail, empty=False)
        url = item.get("url", "")
        if url:
            if not isinstance(url, str) or not url.startswith("/") or _placeholders(url) != {"id"}:
                raise fail(f"{where}.url", f"must be a path with {{id}} (got {url!r})", "use e.g. /showings/{id}")
        rules.append(CreateRule(method=method, path=path, kind=kind, status=tuple(statuses), id=id_path, url=url))
    return tuple(rules)


def parse_cleanup(raw: Any, fail: Fail, *, source: str = "") -> CleanupDeclaration | None:
    """``cleanup:``: a shipped declaration's name, ``none``, or a mapping (``auth``, ``kinds`` or ``hook``)."""
    if raw is None:
        return None
    if raw == "none":
        return CleanupDeclaration(creates_nothing=True, source=source)
    if isinstance(raw, str):
        try:
            return stock_declaration(raw)
        except Refusal as exc:
            raise fail("cleanup", str(exc).split(": ", 1)[-1].split("; fix: ")[0],
                       "name a shipped declaration (crm), write 'none', or give a mapping") from None
    _mapping(raw, "cleanup", {"auth", "kinds", "hook", "concurrency", "max_rate", "source"}, set(), fail)
    kinds_raw, hook = raw.get("kinds"), raw.get("hook", "")
    if (kinds_raw is None) == (not hook):
        raise fail("cleanup", "give exactly one of kinds and hook", "declare 'kinds:' per entity kind, or 'hook: file.py:function'")
    if hook and (not isinstance(hook, str) or not _HOOK.match(hook)):
        raise fail("cleanup.hook", f"must be 'file.py:function' (got {hook!r})", "e.g. 'hook: team_cleanup.py:clean_up'")
    kinds: dict[str, KindCleanup] = {}
    if kinds_raw is not None:
        if not isinstance(kinds_raw, dict) or not kinds_raw:
            raise fail("cleanup.kinds", "must be a mapping of kind -> how to delete it", "e.g. 'kinds: {showing: {delete: DELETE /showings/{id}}}'")
        for kind, spec in kinds_raw.items():
            kinds[_kind(kind, f"cleanup.kinds.{kind}", fail)] = _kind_cleanup(spec, f"cleanup.kinds.{kind}", fail)
    concurrency = raw.get("concurrency", DEFAULT_CONCURRENCY)
    if not _is_int(concurrency) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise fail("cleanup.concurrency", f"must be a whole number from 1 to {MAX_CONCURRENCY} (got {concurrency!r})", "use e.g. 16")
    max_rate = raw.get("max_rate")
    if max_rate is not None and (not _is_number(max_rate) or max_rate <= 0):
        raise fail("cleanup.max_rate", f"must be requests per second > 0 (got {max_rate!r})", "leave it out or use e.g. 200")
    return CleanupDeclaration(
        auth=_auth(raw.get("auth", "none"), fail), kinds=kinds, hook=hook, concurrency=concurrency,
        max_rate=float(max_rate) if max_rate is not None else None, source=raw.get("source") or source,
    )


def _kind_cleanup(raw: Any, where: str, fail: Fail) -> KindCleanup:
    _mapping(raw, where, {"delete", "check", "search", "gone", "verify_before_delete"}, {"delete"}, fail)
    method, path = _request(raw["delete"], f"{where}.delete", fail, allowed={"id"}, required={"id"})
    delete = RequestTemplate(method, path)
    if "check" in raw:
        check_method, check_path = _request(raw["check"], f"{where}.check", fail, allowed={"id"}, required={"id"})
        if check_method != "GET":
            raise fail(f"{where}.check", f"must be a GET (got {check_method})", "use e.g. 'check: GET /showings/{id}'")
        check = RequestTemplate(check_method, check_path)
    else:
        check = RequestTemplate("GET", path)
    gone = raw.get("gone", list(GONE_STATUSES))
    if not isinstance(gone, list) or not gone or not all(_is_int(s) and 400 <= s <= 499 for s in gone):
        raise fail(f"{where}.gone", f"must be a list of 4xx statuses (got {gone!r})", "use e.g. [404, 410]")
    verify = raw.get("verify_before_delete", False)
    if not isinstance(verify, bool):
        raise fail(f"{where}.verify_before_delete", f"must be true or false (got {verify!r})", "use true or false")
    search = _search(raw["search"], f"{where}.search", fail) if raw.get("search") is not None else None
    return KindCleanup(delete=delete, check=check, search=search, gone=tuple(gone), verify_before_delete=verify)


def _search(raw: Any, where: str, fail: Fail) -> Search:
    _mapping(raw, where, {"request", "items", "id", "paging"}, {"request"}, fail)
    method, path = _request(raw["request"], f"{where}.request", fail, allowed={"run_tag"}, required={"run_tag"})
    if method != "GET":
        raise fail(f"{where}.request", f"must be a GET (got {method})", "use e.g. 'GET /showings?q={run_tag}'")
    items = _field_path(raw.get("items", ""), f"{where}.items", fail, empty=True)
    id_path = _field_path(raw.get("id", "id"), f"{where}.id", fail, empty=False)
    paging = Paging()
    if raw.get("paging") is not None:
        spec = raw["paging"]
        _mapping(spec, f"{where}.paging", {"page", "offset", "limit", "size", "first"}, set(), fail)
        if bool(spec.get("page")) == bool(spec.get("offset")):
            raise fail(f"{where}.paging", "give exactly one of page and offset", "e.g. '{page: _page, limit: _limit, size: 100}'")
        for key in ("page", "offset", "limit"):
            if key in spec and (not isinstance(spec[key], str) or not re.fullmatch(r"[A-Za-z0-9_.\[\]-]+", spec[key])):
                raise fail(f"{where}.paging.{key}", f"must be a query parameter name (got {spec[key]!r})", "e.g. _page")
        size = spec.get("size", 100)
        if not _is_int(size) or not 1 <= size <= 10_000:
            raise fail(f"{where}.paging.size", f"must be a whole number from 1 to 10000 (got {size!r})", "use the API's page size, e.g. 100")
        first = spec.get("first", 1)
        if not _is_int(first) or first < 0:
            raise fail(f"{where}.paging.first", f"must be 0 or 1 (got {first!r})", "the number of the API's first page")
        paging = Paging(page=spec.get("page", ""), offset=spec.get("offset", ""), limit=spec.get("limit", ""),
                        size=size, first=first)
    return Search(request=RequestTemplate(method, path), items=items, id=id_path, paging=paging)


def _auth(raw: Any, fail: Fail) -> Auth:
    if raw == "none" or raw is None:
        return Auth()
    if not isinstance(raw, dict) or len({"login", "bearer"} & set(raw)) != 1:
        raise fail("cleanup.auth", f"must be none, {{login: ...}} or {{bearer: ...}} (got {raw!r})",
                   "e.g. 'auth: {bearer: {env: SHOWINGS_TOKEN}}'")
    _mapping(raw, "cleanup.auth", {"login", "bearer", "header", "scheme"}, set(), fail)
    header, scheme = raw.get("header", "Authorization"), raw.get("scheme", "Bearer")
    if not isinstance(header, str) or not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise fail("cleanup.auth.header", f"must be a header name (got {header!r})", "e.g. Authorization")
    if not isinstance(scheme, str) or not re.fullmatch(r"[A-Za-z0-9-]*", scheme):
        raise fail("cleanup.auth.scheme", f"must be a word or empty (got {scheme!r})", "e.g. Bearer, or '' for the bare token")
    if "bearer" in raw:
        return Auth(bearer=_secret(raw["bearer"], "cleanup.auth.bearer", fail), header=header, scheme=scheme)
    login = raw["login"]
    where = "cleanup.auth.login"
    _mapping(login, where, {"request", "json", "token", "secret"}, {"request"}, fail)
    secret = _secret(login["secret"], f"{where}.secret", fail) if login.get("secret") is not None else None
    allowed = {"password", "secret"} if secret else {"password"}
    method, path = _request(login["request"], f"{where}.request", fail, allowed=set())
    body = login.get("json", {})
    if not isinstance(body, dict):
        raise fail(f"{where}.json", "must be a mapping", "e.g. '{email: \"{account.admin}\", password: \"{password}\"}'")
    for key, value in _strings(body):
        unknown = {p for p in _placeholders(value) if p not in allowed and not p.startswith("account.")}
        if unknown:
            raise fail(f"{where}.json.{key}", f"unknown placeholder {{{sorted(unknown)[0]}}}",
                       f"use {', '.join('{' + a + '}' for a in sorted(allowed))} or {{account.<journey>}}")
    token = _field_path(login.get("token", "token"), f"{where}.token", fail, empty=False)
    return Auth(login=Login(request=RequestTemplate(method, path), json=body, token=token, secret=secret),
                header=header, scheme=scheme)


def _secret(raw: Any, where: str, fail: Fail) -> Secret:
    if not isinstance(raw, dict) or len(raw) != 1 or not ({"env", "connection"} & set(raw)):
        raise fail(where, f"must be {{env: NAME}} or {{connection: CONN_ID}} (got {raw!r})", "e.g. '{env: SHOWINGS_TOKEN}'")
    if "env" in raw:
        if not isinstance(raw["env"], str) or not _ENV_NAME.match(raw["env"]):
            raise fail(f"{where}.env", f"must be an environment variable name (got {raw['env']!r})", "e.g. SHOWINGS_TOKEN")
        return Secret(env=raw["env"])
    if not isinstance(raw["connection"], str) or not _CONN_ID.match(raw["connection"]):
        raise fail(f"{where}.connection", f"must be an Airflow connection id (got {raw['connection']!r})", "e.g. showings_api")
    return Secret(connection=raw["connection"])


# -- small validators ------------------------------------------------------------------------------
def _failer(label: str) -> Fail:
    def fail(field_name: str, problem: str, fix: str) -> Refusal:
        return Refusal(f"{label}: {field_name}", problem, fix)

    return fail


def _mapping(raw: Any, where: str, allowed: set[str], required: set[str], fail: Fail) -> None:
    if not isinstance(raw, dict):
        raise fail(where, "must be a mapping", f"use keys {', '.join(sorted(allowed))}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key", f"use {', '.join(sorted(allowed))}")
    missing = sorted(required - set(raw))
    if missing:
        raise fail(f"{where}.{missing[0]}", "missing", f"add '{missing[0]}:'")


def _request(raw: Any, where: str, fail: Fail, *, allowed: set[str], required: set[str] = frozenset()) -> tuple[str, str]:
    """``METHOD /path`` with only ``allowed`` placeholders, ``required`` ones present; never an absolute URL."""
    match = _REQUEST.match(raw) if isinstance(raw, str) else None
    if match is None:
        example = "DELETE /showings/{id}" if "id" in allowed else "GET /showings?q={run_tag}" if allowed else "POST /showings"
        raise fail(where, f"must be 'METHOD /path' relative to the target (got {raw!r})", f"e.g. '{example}'")
    method, path = match.group(1), match.group(2)
    try:
        found = _placeholders(path)
    except ValueError:
        raise fail(where, f"has unbalanced braces (got {raw!r})", "write placeholders as {id} or {run_tag}") from None
    if found - allowed:
        names = ", ".join("{" + a + "}" for a in sorted(allowed)) or "none"
        raise fail(where, f"unknown placeholder {{{sorted(found - allowed)[0]}}}", f"placeholders allowed here: {names}")
    if required - found:
        raise fail(where, f"must contain {{{sorted(required - found)[0]}}}", f"e.g. '{method} {path.rstrip('/')}/{{id}}'")
    return method, path


def _kind(raw: Any, where: str, fail: Fail) -> str:
    if not isinstance(raw, str) or not _KIND.match(raw):
        raise fail(where, f"a kind is a short name (got {raw!r})", "use letters, digits, _ . -, e.g. showing")
    return raw


def _field_path(raw: Any, where: str, fail: Fail, *, empty: bool) -> str:
    if not isinstance(raw, str) or not _FIELD_PATH.match(raw) or (not raw and not empty):
        raise fail(where, f"must be a field name or a dotted path (got {raw!r})", "e.g. id or data.id")
    return raw


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _strings(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) of every string in a nested mapping."""
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _strings(item, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)] if isinstance(value, str) else []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def value_at(body: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON body ("" is the body itself); ``None`` when absent."""
    value = body
    for part in path.split(".") if path else ():
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def hook_parts(hook: str) -> tuple[Path, str]:
    """The file and function a ``file.py:function`` hook names."""
    match = _HOOK.match(hook)
    if match is None:
        raise ValueError(f"hook {hook!r} is not file.py:function")
    return Path(match.group("file")), match.group("function")

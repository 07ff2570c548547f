"""The demo target: a small CRM API that stands in for a staging system.

It implements the target API of docs/target-api.md and behaves like a real
service under load, so the breaking points Stampede finds on it are real ones:

- endpoints are sync functions, so they run in the server's thread pool and
  compete for a *bounded* database pool (``QueuePool``, no overflow); when no
  connection frees up within ``pool_timeout_s`` the request gets
  ``503 {"error": "database pool exhausted"}``, as a real API behind an
  exhausted pool would;
- every authenticated call looks its token up in the database, every list runs
  a ``count`` and a page query, and passwords are checked with PBKDF2;
- ``/metrics`` (Prometheus text, outside ``/v1``) exposes what a bottleneck
  analysis needs: requests and latency by route template, requests in flight,
  the pool's size / in use / waiting, and the process's CPU and memory.

``extra_latency_ms`` slows chosen routes on purpose (while holding a database
connection, like a slow query), so experiments can prove that Stampede catches
a regression.
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import (
    Column, Connection, Date, Float, ForeignKey, Integer, MetaData, String, Table, bindparam, create_engine, event,
    func, select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import QueuePool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Demo-only credentials: the seed's password, used when STAMPEDE_DEMO_PASSWORD is unset.
DEMO_PASSWORD_ENV = "STAMPEDE_DEMO_PASSWORD"
DEMO_PASSWORD_DEFAULT = "LoadTest123!"
DEMO_ACCOUNTS = {role: f"{role}@demo.stampede.local" for role in ("agent", "broker", "admin", "readonly")}

WRITE_ROLES = frozenset({"agent", "broker", "admin"})  # may create
MODERATOR_ROLES = frozenset({"broker", "admin"})  # may change or delete anyone's entity
PBKDF2_ITERATIONS = 1000  # modest on purpose: login should cost CPU, not dominate it
TOKEN_TTL_S = 24 * 3600
BUSY_TIMEOUT_MS = 5000
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_EXHAUSTED = "database pool exhausted"

# -- schema ------------------------------------------------------------------
metadata = MetaData()
users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
)
tokens = Table(
    "tokens", metadata,
    # Only a digest of the token is stored, as a real service would.
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("expires_at", Float, nullable=False),
)
escrows = Table(
    "escrows", metadata,
    Column("id", Integer, primary_key=True),
    Column("property_address", String(500), nullable=False, index=True),
    Column("closing_date", Date, nullable=False),
    Column("purchase_price", Float, nullable=False),
    Column("created_by", ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
)
listings = Table(
    "listings", metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(500), nullable=False, index=True),
    Column("list_price", Float, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("created_by", ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
)

# Hot statements are built once: SQLAlchemy then reuses their cache keys, which
# saves about a third of a list request's CPU (measured) without changing any SQL.
CALLER_BY_TOKEN = (
    select(users.c.id, users.c.email, users.c.role)
    .join(tokens, tokens.c.user_id == users.c.id)
    .where(tokens.c.token_sha256 == bindparam("digest"), tokens.c.expires_at > bindparam("now"))
)
USER_BY_EMAIL = select(users.c.id, users.c.password_hash).where(users.c.email == bindparam("email"))
PING = select(1)
LIKE_ESCAPE = "/"

# -- request and response bodies ----------------------------------------------
Address = Annotated[str, Field(min_length=1, max_length=500)]
Price = Annotated[float, Field(gt=0, lt=1e12, allow_inf_nan=False)]
Status = Literal["active", "pending", "sold", "withdrawn"]
LISTING_STATUSES: tuple[str, ...] = get_args(Status)
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1)]
AuthHeader = Annotated[str | None, Header()]
T = TypeVar("T")


class _Patch(BaseModel):
    """A partial update: absent fields stay, but an explicit ``null`` is an error, not a delete."""

    @model_validator(mode="after")
    def _no_nulls(self) -> "_Patch":
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"fields may not be null: {', '.join(nulls)}")
        return self


def _iso_date(value: Any) -> Any:
    """Only ``YYYY-MM-DD``: pydantic would also take a Unix timestamp, which no client means."""
    if value is not None and (not isinstance(value, str) or len(value) != 10):
        raise ValueError("closing_date must be a date as YYYY-MM-DD")
    return value


class Login(BaseModel):
    email: Annotated[str, Field(min_length=1, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=200)]


class TokenOut(BaseModel):
    token: str


class EscrowIn(BaseModel):
    property_address: Address
    closing_date: date
    purchase_price: Price
    _date = field_validator("closing_date", mode="before")(_iso_date)


class EscrowPatch(_Patch):
    property_address: Address | None = None
    closing_date: date | None = None
    purchase_price: Price | None = None
    _date = field_validator("closing_date", mode="before")(_iso_date)


class Escrow(BaseModel):
    id: int
    property_address: str
    closing_date: date
    purchase_price: float
    created_by: int
    created_at: str


class ListingIn(BaseModel):
    address: Address
    list_price: Price
    status: Status = "active"


class ListingPatch(_Patch):
    address: Address | None = None
    list_price: Price | None = None
    status: Status | None = None


class Listing(BaseModel):
    id: int
    address: str
    list_price: float
    status: str
    created_by: int
    created_at: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True)
class _Entity:
    """One CRUD resource: its table, the column ``search`` matches, and its bodies."""

    name: str
    table: Table
    search_column: str
    create_body: type[BaseModel]
    patch_body: type[BaseModel]
    out: type[BaseModel]


ENTITIES = (
    _Entity("escrows", escrows, "property_address", EscrowIn, EscrowPatch, Escrow),
    _Entity("listings", listings, "address", ListingIn, ListingPatch, Listing),
)


@dataclass(frozen=True)
class Caller:
    id: int
    email: str
    role: str


# -- passwords and tokens -------------------------------------------------------
def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, iterations, salt, digest = stored.split("$")
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


# Checked against when the email is unknown, so a miss costs the same as a wrong password.
_DUMMY_HASH = hash_password("not a password")


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- metrics ----------------------------------------------------------------------
class _Metrics:
    """The app's own Prometheus registry, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter(
            "demo_http_requests", "HTTP requests answered.", labels, registry=self.registry)
        self.latency = Histogram(
            "demo_http_request_duration_seconds", "Time from request to the last byte of the response.",
            labels, buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.in_flight = Gauge(
            "demo_http_requests_in_flight", "HTTP requests being handled now.", registry=self.registry)
        self.pool_size = Gauge(
            "demo_db_pool_size", "Connections the database pool may hold.", registry=self.registry)
        self.pool_in_use = Gauge(
            "demo_db_pool_in_use", "Database connections checked out now.", registry=self.registry)
        self.pool_waiting = Gauge(
            "demo_db_pool_waiting", "Threads waiting for a database connection now.", registry=self.registry)
        self.pool_timeouts = Counter(
            "demo_db_pool_timeouts", "Requests that gave up waiting for a database connection.",
            registry=self.registry)
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _MetricsMiddleware:
    """Counts and times every HTTP request by route *template*, so ids never explode the labels.

    Pure ASGI (not ``BaseHTTPMiddleware``): it adds no task per request, and it
    sees the route FastAPI's router writes into the shared ``scope``.
    """

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", "<unmatched>")
            labels = (scope["method"], route, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


# -- database -----------------------------------------------------------------------
class _Database:
    """The engine, its bounded pool, and the checkout every request goes through."""

    def __init__(self, database_url: str, *, pool_size: int, pool_timeout_s: float, metrics: _Metrics) -> None:
        sqlite = database_url.startswith("sqlite")
        self.engine = create_engine(
            database_url,
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout_s,
            # Connections move between the server's worker threads.
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000} if sqlite else {},
        )
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        pool = self.engine.pool
        assert isinstance(pool, QueuePool)
        self.metrics = metrics
        self.extra_latency_s: dict[str, float] = {}
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        metrics.pool_size.set_function(lambda: float(pool.size()))
        metrics.pool_in_use.set_function(lambda: float(pool.checkedout()))
        metrics.pool_waiting.set_function(lambda: float(self._waiting))

    @contextmanager
    def connection(self, request: Request) -> Iterator[Connection]:
        """Check a connection out of the pool, counting the threads that wait for one.

        A route's extra latency is spent here, holding the connection, so a
        slowed route loads the pool as a slow query would.
        """
        with self._waiting_lock:
            self._waiting += 1
        try:
            conn = self.engine.connect()
        except sa_exc.TimeoutError:
            self.metrics.pool_timeouts.inc()
            raise
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        with conn:
            delay = self.extra_latency_s.get(route_key(request))
            if delay:
                time.sleep(delay)
            yield conn

    @contextmanager
    def as_caller(self, request: Request, authorization: str | None) -> Iterator[tuple[Connection, Caller]]:
        """A connection and the authenticated caller; 401 without a valid bearer token."""
        scheme, _, token = (authorization or "").partition(" ")
        with self.connection(request) as conn:
            row = None
            if scheme.lower() == "bearer" and token.strip():
                row = conn.execute(
                    CALLER_BY_TOKEN, {"digest": _token_digest(token.strip()), "now": time.time()}).first()
            if row is None:
                raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
            yield conn, Caller(row.id, row.email, row.role)

    def create_schema_and_seed(self, password: str) -> None:
        """Create the tables and (re)set the four demo accounts to ``password``; idempotent."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for role, email in DEMO_ACCOUNTS.items():
                found = conn.execute(select(users.c.id).where(users.c.email == email)).first()
                values = {"role": role, "password_hash": hash_password(password)}
                if found is None:
                    conn.execute(users.insert().values(email=email, **values))
                else:
                    conn.execute(users.update().where(users.c.id == found.id).values(**values))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; busy_timeout makes writers queue, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def route_key(request: Request) -> str:
    """``"GET /v1/listings"``: the method and route template, as ``extra_latency_ms`` keys name routes."""
    return f"{request.method} {getattr(request.scope.get('route'), 'path', request.url.path)}"


def _escape_like(text: str) -> str:
    """``%`` and ``_`` in a search term are literal characters, not patterns."""
    for char in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(char, LIKE_ESCAPE + char)
    return text


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- routes ---------------------------------------------------------------------------
def _auth_routes(router: APIRouter, db: _Database) -> None:
    @router.post("/auth/login", response_model=TokenOut)
    def login(body: Login, request: Request) -> dict[str, str]:
        with db.connection(request) as conn:
            row = conn.execute(USER_BY_EMAIL, {"email": body.email.strip().lower()}).first()
            ok = verify_password(body.password, row.password_hash if row else _DUMMY_HASH)
            if row is None or not ok:
                raise HTTPException(401, "invalid email or password")
            token = secrets.token_urlsafe(32)
            conn.execute(tokens.insert().values(
                token_sha256=_token_digest(token), user_id=row.id, expires_at=time.time() + TOKEN_TTL_S))
            conn.commit()
        return {"token": token}

    @router.get("/health")
    def health(request: Request) -> dict[str, str]:
        with db.connection(request) as conn:
            conn.execute(PING)
        return {"status": "ok"}


def _entity_routes(router: APIRouter, db: _Database, entity: _Entity) -> None:
    """List, create, read, update and delete for one entity, with the role rules."""
    table, prefix = entity.table, f"/{entity.name}"
    matching = table.c[entity.search_column].ilike(bindparam("pattern"), escape=LIKE_ESCAPE)
    by_id = select(table).where(table.c.id == bindparam("id"))
    count_all = select(func.count()).select_from(table)
    page_all = select(table).order_by(table.c.id).limit(bindparam("limit")).offset(bindparam("offset"))
    count_matching, page_matching = count_all.where(matching), page_all.where(matching)
    CreateBody, PatchBody = entity.create_body, entity.patch_body  # noqa: N806 (types used in annotations)

    def fetch(conn: Connection, item_id: int) -> dict[str, Any]:
        row = conn.execute(by_id, {"id": item_id}).mappings().first()
        if row is None:
            raise HTTPException(404, f"{entity.name[:-1]} {item_id} not found")
        return dict(row)

    def may_change(caller: Caller, item: dict[str, Any]) -> None:
        if caller.role not in MODERATOR_ROLES and item["created_by"] != caller.id:
            raise HTTPException(403, f"role {caller.role} may change only its own {entity.name}")

    def may_write(caller: Caller) -> None:
        if caller.role not in WRITE_ROLES:
            raise HTTPException(403, f"role {caller.role} may only read")

    @router.get(prefix, response_model=Page[entity.out], name=f"list_{entity.name}")  # type: ignore[name-defined]
    def list_items(
        request: Request,
        authorization: AuthHeader = None,
        search: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if search:
            params["pattern"] = f"%{_escape_like(search)}%"
        with db.as_caller(request, authorization) as (conn, _caller):
            total = conn.scalar(count_matching if search else count_all, params)
            rows = conn.execute(page_matching if search else page_all, params).mappings().all()
        return {"items": [dict(r) for r in rows], "total": total}

    @router.post(prefix, status_code=201, response_model=entity.out, name=f"create_{entity.name[:-1]}")
    def create_item(
        body: CreateBody, request: Request, authorization: AuthHeader = None,  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        with db.as_caller(request, authorization) as (conn, caller):
            may_write(caller)
            values = {**body.model_dump(), "created_by": caller.id, "created_at": _now()}  # type: ignore[attr-defined]
            result = conn.execute(table.insert().values(**values))
            conn.commit()
        return {"id": result.inserted_primary_key[0], **values}

    @router.get(prefix + "/{item_id}", response_model=entity.out, name=f"get_{entity.name[:-1]}")
    def get_item(item_id: ItemId, request: Request, authorization: AuthHeader = None) -> dict[str, Any]:
        with db.as_caller(request, authorization) as (conn, _caller):
            return fetch(conn, item_id)

    @router.patch(prefix + "/{item_id}", response_model=entity.out, name=f"update_{entity.name[:-1]}")
    def update_item(
        item_id: ItemId, body: PatchBody, request: Request, authorization: AuthHeader = None,  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
        with db.as_caller(request, authorization) as (conn, caller):
            may_write(caller)
            may_change(caller, fetch(conn, item_id))
            if changes:
                conn.execute(table.update().where(table.c.id == item_id).values(**changes))
            item = fetch(conn, item_id)  # 404 if it was deleted meanwhile
            conn.commit()
        return item

    @router.delete(prefix + "/{item_id}", status_code=204, name=f"delete_{entity.name[:-1]}")
    def delete_item(item_id: ItemId, request: Request, authorization: AuthHeader = None) -> Response:
        with db.as_caller(request, authorization) as (conn, caller):
            may_write(caller)
            may_change(caller, fetch(conn, item_id))
            deleted = conn.execute(table.delete().where(table.c.id == item_id)).rowcount
            conn.commit()
        if not deleted:
            raise HTTPException(404, f"{entity.name[:-1]} {item_id} not found")
        return Response(status_code=204)


def _error_handlers(app: FastAPI) -> None:
    """Errors as ``{"error": ...}``; request validation keeps FastAPI's 422 ``{"detail": [...]}``."""

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def pool_exhausted(_request: Request, _exc: Exception) -> Response:
        return JSONResponse({"error": POOL_EXHAUSTED}, status_code=503, headers={"Retry-After": "1"})

    async def database_busy(request: Request, exc: Exception) -> Response:
        # SQLite's one writer: writers waited busy_timeout and still found the database locked.
        if "locked" in str(exc) or "busy" in str(exc):
            return JSONResponse({"error": "database busy"}, status_code=503, headers={"Retry-After": "1"})
        raise exc

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(sa_exc.TimeoutError, pool_exhausted)
    app.add_exception_handler(sa_exc.OperationalError, database_busy)


def create_app(
    *,
    database_url: str,
    pool_size: int = 8,
    pool_timeout_s: float = 5.0,
    password: str,
    extra_latency_ms: Mapping[str, float] | None = None,
) -> FastAPI:
    """Build the demo target: schema created, demo accounts seeded with ``password``, ready to serve.

    :param database_url: SQLAlchemy URL, e.g. ``sqlite:////tmp/demo.db`` (a file, so WAL works).
    :param pool_size: database connections; the pool never grows beyond it.
    :param pool_timeout_s: how long a request waits for a connection before answering 503.
    :param password: the password of the four demo accounts.
    :param extra_latency_ms: ``{"GET /v1/listings": 50}``: milliseconds added to those routes.
    :raises ValueError: on a bad pool setting or an ``extra_latency_ms`` key that names no route.
    """
    if pool_size < 1 or pool_timeout_s <= 0:
        raise ValueError("pool_size must be >= 1 and pool_timeout_s > 0")
    metrics = _Metrics()
    db = _Database(database_url, pool_size=pool_size, pool_timeout_s=pool_timeout_s, metrics=metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        db.engine.dispose()

    app = FastAPI(title="Stampede demo target", version="1", lifespan=lifespan)
    router = APIRouter(prefix="/v1")
    _auth_routes(router, db)
    for entity in ENTITIES:
        _entity_routes(router, db, entity)
    app.include_router(router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    _error_handlers(app)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    db.extra_latency_s = _latency_by_route(app, extra_latency_ms or {})
    db.create_schema_and_seed(password)
    return app


def _latency_by_route(app: FastAPI, extra_latency_ms: Mapping[str, float]) -> dict[str, float]:
    """Validate ``{"GET /v1/listings": 50}`` against the app's routes: a typo must not pass silently."""
    known = {f"{method} {route.path}" for route in app.routes for method in getattr(route, "methods", None) or ()}
    result: dict[str, float] = {}
    for key, ms in extra_latency_ms.items():
        method, _, path = key.strip().partition(" ")
        normalized = f"{method.upper()} {path.strip()}"
        if normalized not in known:
            raise ValueError(f"extra latency for unknown route {key!r}; routes look like 'GET /v1/listings'")
        if not 0 <= ms <= 60_000:
            raise ValueError(f"extra latency for {key!r} must be 0..60000 ms, got {ms}")
        result[normalized] = ms / 1000
    return result


__all__ = [
    "DEMO_ACCOUNTS", "DEMO_PASSWORD_DEFAULT", "DEMO_PASSWORD_ENV", "LISTING_STATUSES", "POOL_EXHAUSTED",
    "create_app", "hash_password", "route_key", "verify_password",
]

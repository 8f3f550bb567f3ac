"""Who may enter: one function, `admit`, decides it for every route, HTTP and socket alike.

Each route declares its door (`@door(...)` on an HTTP view, `Door` beside a socket
handler): whom it is for (`Need`), whether it spends RATE_LIMIT, whether it holds one of
the client's MAX_CONNECTIONS_PER_CLIENT for its life, and where its token may be
(players and sockets cannot set headers). The app refuses to start with a route that has
no door. `admit` takes what a request says (`Knock`) and answers in this order, the
first refusal winning:

1. a `Host` outside ALLOWED_HOSTS: 400 BAD_REQUEST (DNS rebinding);
2. over RATE_LIMIT: 429 RATE_LIMITED with Retry-After, before the token is looked at, so
   a wrong token costs a token on a socket as on REST (health and static files are exempt);
3. a foreign `Origin` (neither this server's own nor in CORS_ORIGINS) on a socket or on a
   write (POST, PATCH, DELETE): 403 FORBIDDEN; reads are left to CORS;
4. who asks: API_TOKEN (the root credential), a play token, a node token (another node
   of the cluster: it spends neither RATE_LIMIT nor a connection share), a user by
   `Authorization: Basic` or by the session cookie (`app/accounts/`; too many wrong
   passwords: 429 RATE_LIMITED; the database down: 503 STORAGE_UNAVAILABLE); with no
   API_TOKEN and no user at all, anyone is the admin;
5. a write by the session cookie without an allowed `Origin`: 403 FORBIDDEN (CSRF);
6. whether that opens the door: 401 UNAUTHORIZED (`WWW-Authenticate: Bearer`) for no
   one, or for a play token outside its stream; 403 FORBIDDEN for a viewer at an ADMIN
   door (or playing `?url=`); 404 NOT_FOUND for a viewer naming a stream not granted to it
   (whether or not it exists: the same answer as for none). USER doors open to any user;
   WATCH also to a play token for that stream and to a node; METRICS to METRICS_TOKEN,
   API_TOKEN or an admin;
7. a socket playing `?url=` while ALLOW_URL_STREAMS is off: 403 FORBIDDEN;
8. over MAX_CONNECTIONS_PER_CLIENT, or the server's socket cap: 429 LIMIT.

Each edge runs it with what it knows: HTTP before each request (`app/http/doors.py`), the
sockets at the handshake, before anything starts (`app/sockets/session.py`). It reads
only the policy objects it is given (`Gate`), never the edge's request objects.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol, TypeVar

import attrs

from supervisors import ErrorCode, RestCode
from supervisors.camera.addresses import Network

from .limits import Connections, Held, Limited, RateLimiter, client_address, limit_key
from .origins import Policy
from .tokens import Access, Grant, same_secret

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RECHECK = 10.0  # seconds between looks at a user's credentials while its stream plays (`still_watches`)


class Switches(Protocol):
    """The settings `admit` reads (`app.settings.Settings` has them)."""

    @property
    def url_streams(self) -> bool: ...
    @property
    def api_token(self) -> str | None: ...
    @property
    def metrics_token(self) -> str | None: ...


class Unknown(Exception):
    """Who asks cannot be told now (the database is down)."""


class Identities(Protocol):
    """The users (`app.accounts.Accounts` is one)."""

    async def open(self) -> bool:
        """No user exists. Raises Unknown."""

    async def basic(self, name: str, password: str, client: str) -> Grant | None:
        """A user by name and password. Raises Limited, Unknown."""

    async def session(self, token: str, *, recent: bool = False) -> Grant | None:
        """A user by session token (`recent`: an answer of the last few seconds will do).
        Raises Unknown."""


class Gate(Protocol):
    """What `admit` decides with (`app.services.Services` is one)."""

    @property
    def settings(self) -> Switches: ...
    @property
    def trusted(self) -> tuple[Network, ...]: ...
    @property
    def origins(self) -> Policy: ...
    @property
    def rates(self) -> RateLimiter: ...
    @property
    def access(self) -> Access: ...
    @property
    def connections(self) -> Connections: ...
    @property
    def accounts(self) -> Identities: ...


class Need(enum.Enum):
    PUBLIC = "public"  # anyone (a token, if given, still tells the route who asks)
    USER = "user"  # any user (or API_TOKEN); a stream it names must be one the user sees
    WATCH = "watch"  # a viewer of the stream the request names: a user who sees it, its play token
    ADMIN = "admin"  # API_TOKEN or an admin user
    METRICS = "metrics"  # METRICS_TOKEN, API_TOKEN or an admin (open when none is set and no user exists)


@attrs.frozen
class Door:
    need: Need
    rate: bool = True  # spends a RATE_LIMIT token
    holds: bool = False  # holds a MAX_CONNECTIONS_PER_CLIENT share while it runs
    query_token: bool = False  # `?token=` is read too (players, <img>, sockets)


PREFLIGHT = Door(Need.PUBLIC)  # a CORS preflight never carries credentials
NO_ROUTE = Door(Need.PUBLIC)  # 404 and 405 answer anyone (after the Host and the rate)

F = TypeVar("F", bound=Callable[..., Any])


def door(need: Need, *, rate: bool = True, holds: bool = False, query_token: bool = False) -> Callable[[F], F]:
    """Declare an HTTP view's door (decorate the view, under its route decorator)."""

    def declare(view: F) -> F:
        view.door = Door(need, rate=rate, holds=holds, query_token=query_token)  # type: ignore[attr-defined]
        return view

    return declare


def door_of(view: object) -> Door | None:
    found = getattr(view, "door", None)
    return found if isinstance(found, Door) else None


@attrs.frozen
class Knock:
    """What a request says about itself, as `admit` needs it."""

    socket: bool  # a WebSocket handshake (else HTTP)
    method: str
    host: str | None
    origin: str | None
    peer: str | None
    forwarded_for: tuple[str, ...] = ()
    token: str | None = None  # the one presented, from wherever the door reads it
    basic: tuple[str, str] | None = None  # `Authorization: Basic` (name, password)
    session: str | None = None  # the session cookie's token
    stream_id: int | None = None  # the stream the request names (route or `?id=`)
    by_url: bool = False  # a socket that plays `?url=`


@attrs.define
class Admitted:
    """Let in: who asks (address for logs, key for limits), what its token grants, and
    its connection share when the door holds one (`release` gives it back)."""

    client: str
    key: str
    grant: Grant | None
    held: Held | None = None

    @property
    def peer(self) -> bool:
        """Another node of the cluster (its node token)."""
        return self.grant is not None and self.grant.peer

    def release(self) -> None:
        """Give the connection share back (once; later calls do nothing)."""
        held, self.held = self.held, None
        if held is not None:
            held.__exit__(None, None, None)

    def handover(self) -> Held | None:
        """The connection share, now the caller's to give back (a response that outlives
        its request: the HTTP streams)."""
        held, self.held = self.held, None
        return held


@attrs.frozen
class Refused:
    client: str
    key: str
    status: int
    code: ErrorCode | RestCode
    message: str
    headers: dict[str, str] = attrs.Factory(dict)
    handshake: bool = False  # a socket gets it as an HTTP answer instead of an upgrade


async def admit(door: Door, knock: Knock, s: Gate) -> Admitted | Refused:
    """Let the request in through its door, or say why not (see module docstring).
    Cancellation: a password check under way in its thread finishes first."""
    client = client_address(knock.peer, knock.forwarded_for, s.trusted)
    key = limit_key(client)

    def refuse(status: int, code: ErrorCode | RestCode, message: str, **headers: str) -> Refused:
        return Refused(client, key, status, code, message, {k.replace("_", "-"): v for k, v in headers.items()})

    if not s.origins.host_allowed(knock.host):  # not even a socket: a page rebound to us reads nothing
        return attrs.evolve(refuse(400, ErrorCode.BAD_REQUEST, f"host {knock.host!r} is not allowed (ALLOWED_HOSTS)",
                                   Connection="close"), handshake=True)
    peer = s.access.peer(knock.token) if door.need is Need.WATCH else None  # a node: no per-client limits
    if door.rate and peer is None:
        try:
            s.rates.take(key)
        except Limited as limited:
            return refuse(429, ErrorCode.RATE_LIMITED, str(limited), Retry_After=limited.retry_after_header)
    unsafe = not knock.socket and knock.method in UNSAFE
    if (knock.socket or unsafe) and knock.origin is not None and not s.origins.origin_allowed(knock.origin, knock.host):
        return refuse(403, ErrorCode.FORBIDDEN, f"origin {knock.origin} is not allowed (CORS_ORIGINS)")
    grant = None  # a public door asks nobody who it is (static files, the page): `who` does, when a route asks
    if door.need is not Need.PUBLIC:
        try:
            grant = peer or await _identify(knock, key, s)
        except Limited as limited:
            return refuse(429, ErrorCode.RATE_LIMITED, str(limited), Retry_After=limited.retry_after_header)
        except Unknown as unknown:
            return refuse(503, RestCode.STORAGE_UNAVAILABLE, str(unknown))
        if grant is not None and grant.session and unsafe and knock.origin is None:
            return refuse(403, ErrorCode.FORBIDDEN, "a write with the session cookie must come from the page (Origin)")
        if (why := _refusal(door, knock, grant, s)) is not None:
            status, code, message = why
            return refuse(status, code, message, **({"WWW_Authenticate": "Bearer"} if status == 401 else {}))
    if knock.by_url and not s.settings.url_streams:
        return refuse(403, ErrorCode.FORBIDDEN, "playing by URL is off (ALLOW_URL_STREAMS): play a registered id")
    admitted = Admitted(client, key, grant)
    if door.holds and peer is None:
        held = s.connections.hold(key)
        try:
            held.__enter__()
        except Limited as limited:
            return refuse(429, ErrorCode.LIMIT, str(limited))
        admitted.held = held
    return admitted


OPEN = Grant(admin=True)  # no API_TOKEN and no user: anyone is the admin


async def _identify(knock: Knock, key: str, s: Gate, *, recent: bool = False) -> Grant | None:
    """Who the credentials say asks, or None. Raises Limited, Unknown."""
    if not s.access.required and await s.accounts.open():
        return OPEN
    if (grant := s.access.check(knock.token)) is not None:
        return grant
    if knock.basic is not None:
        return await s.accounts.basic(*knock.basic, key)
    if knock.session is not None and knock.token is None:
        return await s.accounts.session(knock.session, recent=recent)
    return None


async def who(knock: Knock, s: Gate) -> Grant | None:
    """Who asks at a public door, for a route that wants to know (health's details, the
    page's embedded list): a token, or a session cookie; not Basic (an Argon2 check on
    routes RATE_LIMIT exempts). With the users unknown (the database down), what an open
    server shows when there is no API_TOKEN. Cancellation: safe."""
    try:
        return await _identify(attrs.evolve(knock, basic=None), "", s)
    except Unknown:
        return None if s.access.required else OPEN


def rechecked(knock: Knock, admitted: Admitted, s: Gate) -> Callable[[], Awaitable[ErrorCode | None]] | None:
    """What a stream that outlives its request asks every RECHECK seconds (`still_watches`
    for these credentials), when a user was let in; None for anyone else (a token's grant
    does not change)."""
    if admitted.grant is None or admitted.grant.user is None:
        return None
    return partial(still_watches, knock, admitted, s)


async def still_watches(knock: Knock, admitted: Admitted, s: Gate) -> ErrorCode | None:
    """For a stream that outlives its request (a socket), let in as a user: None while
    its credentials still let it watch what the knock named; else why not: UNAUTHORIZED
    (its session ended: logout, a new password, the user removed, expiry) or NOT_FOUND
    (the stream is no longer granted to it). The database down, or the account's
    failed-login limit, leave it playing. Cancellation: safe (nothing is held)."""
    try:
        grant = await _identify(knock, admitted.key, s, recent=True)
    except (Limited, Unknown):
        return None
    if grant is None:
        return ErrorCode.UNAUTHORIZED
    return None if grant.may_watch(knock.stream_id) else ErrorCode.NOT_FOUND


def _refusal(door: Door, knock: Knock, grant: Grant | None, s: Gate) -> tuple[int, ErrorCode, str] | None:
    """Why these credentials do not open this door (status, code, message), or None."""
    if door.need is Need.METRICS:
        tokens = {"METRICS_TOKEN": s.settings.metrics_token, "API_TOKEN": s.settings.api_token}
        if any(same_secret(knock.token, t) for t in tokens.values() if t):
            return None
        if grant is not None and grant.admin and not (grant is OPEN and any(tokens.values())):
            return None
        if grant is not None and grant.user is not None:
            return 403, ErrorCode.FORBIDDEN, "metrics are for admins"
        names = [n for n, t in tokens.items() if t] or ["an admin's credentials"]
        return 401, ErrorCode.UNAUTHORIZED, f"a valid token is required (Authorization: Bearer <{' or '.join(names)}>)"
    if grant is None:
        where = "?token=, or a bearer.<token> subprotocol" if knock.socket else "Authorization: Bearer <API_TOKEN>"
        return 401, ErrorCode.UNAUTHORIZED, f"sign in, or a valid token is required ({where})"
    if grant.admin:
        return None
    if grant.user is None:  # a play token or a node
        if door.need is Need.WATCH and not knock.by_url and grant.may_watch(knock.stream_id):
            return None
        return 401, ErrorCode.UNAUTHORIZED, f"this play token only watches stream {grant.stream_id}"
    if door.need is Need.ADMIN or knock.by_url:
        return 403, ErrorCode.FORBIDDEN, f"user {grant.user} is a viewer: only an admin may do this"
    if knock.stream_id is not None and not grant.sees(knock.stream_id):
        return 404, ErrorCode.NOT_FOUND, f"no stream {knock.stream_id}"
    return None

"""Who a request's user is: by the session cookie, by `Authorization: Basic`, or by the
login form (`Accounts`), and how fast anyone may guess passwords (`LoginGuard`).

Failed logins are limited per account (a burst of wrong passwords from many addresses
slows that account, not the server) and per client, Basic and the login form alike:
429 RATE_LIMITED with Retry-After. A name with no user counts, and answers, as a wrong
password does. A script's Basic credentials are checked with Argon2 once; then a keyed
digest of (name, password, stored hash) remembers the match until the hash changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable

import attrs
import trio

from ..db import StorageError
from ..policy.admission import Unknown
from ..policy.limits import Limited, RateLimiter
from ..policy.tokens import Grant
from .passwords import Passwords
from .sessions import Sessions
from .users import InvalidUser, User, Users, user_name

ACCOUNT_BURST, ACCOUNT_RATE = 5.0, 1 / 30  # wrong passwords per account: 5, then one every 30 s
CLIENT_BURST, CLIENT_RATE = 20.0, 1 / 6  # per client address: 20, then one every 6 s
REMEMBERED = 1000  # Basic credentials remembered as checked; sessions remembered as read
RECENT = 5.0  # seconds a session's answer serves the sockets that check it again


class WrongCredentials(Exception):
    """No user has that name and password (the same for a wrong name as a wrong password)."""


@attrs.define
class LoginGuard:
    clock: Callable[[], float] = trio.current_time
    accounts: RateLimiter = attrs.field(init=False)
    clients: RateLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.accounts = RateLimiter(ACCOUNT_RATE, ACCOUNT_BURST, self.clock, what="the failed logins of this account")
        self.clients = RateLimiter(CLIENT_RATE, CLIENT_BURST, self.clock, what="this client's failed logins")

    def check(self, name: str, client: str) -> None:
        """Raise Limited if this account or this client may not try now."""
        self.accounts.check(name)
        self.clients.check(client)

    def failed(self, name: str, client: str) -> None:
        for limiter, key in ((self.accounts, name), (self.clients, client)):
            try:
                limiter.take(key)
            except Limited:
                pass


@attrs.define
class Accounts:
    """The users' side of admission (`app.policy.admission.Identities`)."""

    users: Users
    sessions: Sessions
    passwords: Passwords = attrs.Factory(Passwords)
    guard: LoginGuard = attrs.Factory(LoginGuard)
    _no_users: bool | None = None  # the last answer of the database: no user exists
    _key: bytes = attrs.Factory(lambda: secrets.token_bytes(32))
    _remembered: OrderedDict[bytes, None] = attrs.Factory(OrderedDict)  # digests of (name, password, hash)
    _recent: OrderedDict[str, tuple[float, Grant | None]] = attrs.Factory(OrderedDict)

    async def open(self) -> bool:
        """Whether no user exists (then, without API_TOKEN, anyone is the admin). With
        the database down, its last answer; raises Unknown if it never gave one."""
        try:
            self._no_users = not await self.users.any()
        except StorageError:
            if self._no_users is None:
                raise Unknown("storage is unavailable") from None
        return self._no_users

    def created(self) -> None:
        """A user was added here: access control is on from this request."""
        self._no_users = False

    async def login(self, name: str, password: str, client: str) -> User:
        """The user with this name and password. Raises WrongCredentials, Limited (too
        many failures for the account or the client), StorageError. Cancellation: the
        check in its thread finishes first."""
        try:
            key = user_name(name)
        except InvalidUser:
            key = ""  # no user has it: checked anyway, for the same time
        self.guard.check(key, client)
        user = await self.users.get(key) if key else None
        stored = user.password_hash if user is not None else None
        if not await self._matches(key, password, stored):
            self.guard.failed(key, client)
            raise WrongCredentials("wrong username or password")
        assert user is not None
        if self.passwords.needs_rehash(user.password_hash):  # made with another PASSWORD_HASH cost
            await self.users.rehash(user.name, user.password_hash, await self.passwords.hash(password))
        return user

    async def basic(self, name: str, password: str, client: str) -> Grant | None:
        """The grant of `Authorization: Basic` credentials, or None (a malformed header,
        or one with no name, at once: no user has none). Raises Limited, Unknown."""
        if not name:
            return None
        try:
            return (await self.login(name, password, client)).grant()
        except WrongCredentials:
            return None
        except StorageError:
            raise Unknown("storage is unavailable") from None

    async def session(self, token: str, *, recent: bool = False) -> Grant | None:
        """The grant of a session cookie, or None; `recent`: one read from the database
        in the last RECENT seconds will do (the sockets of one page share it). Raises
        Unknown."""
        now = trio.current_time()
        if recent and (known := self._recent.get(token)) is not None and now - known[0] < RECENT:
            return known[1]
        try:
            user = await self.sessions.user(token)
        except StorageError:
            raise Unknown("storage is unavailable") from None
        grant = None if user is None else user.grant(session=True)
        self._recent[token] = (now, grant)
        while len(self._recent) > REMEMBERED:
            self._recent.popitem(last=False)
        return grant

    async def _matches(self, name: str, password: str, stored: str | None) -> bool:
        digest = hmac.new(self._key, f"{name}\0{password}\0{stored}".encode(), hashlib.sha256).digest()
        if stored is not None and digest in self._remembered:  # the digest holds the hash: a new one misses
            self._remembered.move_to_end(digest)
            return True
        if not await self.passwords.verify(stored, password):
            return False
        self._remembered[digest] = None
        while len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
        return True

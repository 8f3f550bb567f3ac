"""Sign-in sessions: a random token in an HttpOnly cookie, stored only as its SHA-256
(a stolen database opens no session), ending after SESSION_IDLE_TIMEOUT without use or
SESSION_MAX_AGE after the login, at logout, and when the user's password changes or the
user is removed (`app.accounts.users`).

Each request reads its session from the database, so a session ended on one node is
ended on every node at once. `seen_at` is written at most once a TOUCH_EVERY seconds,
not at each request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import attrs

from ..db import Database, Tx
from .users import User, read_user

COOKIE = "rtsp_viewer_session"
TOUCH_EVERY = 60.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def from_cookies(header: str | None) -> str | None:
    """The session token of a `Cookie` header (a socket's handshake)."""
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value.strip('"')
    return None


@attrs.define
class Sessions:
    db: Database
    idle: float  # seconds without a request
    max_age: float  # seconds after the login
    clock: Callable[[], float]  # Unix time (tests move it)

    async def open(self, name: str) -> str:
        """A new session of the user: its token (the cookie's value). Expired sessions
        of every user are dropped on the way. Raises StorageError."""
        token, now = secrets.token_urlsafe(32), self.clock()

        def write(tx: Tx) -> None:
            tx.execute("DELETE FROM sessions WHERE seen_at < ? OR created_at < ?", (now - self.idle, now - self.max_age))
            tx.execute("INSERT INTO sessions (token_hash, user_name, created_at, seen_at) VALUES (?, ?, ?, ?)",
                       (token_hash(token), name, now, now))

        await self.db.run(write, write=True)
        return token

    async def user(self, token: str) -> User | None:
        """The user whose live session this token is, or None (unknown, ended, expired).
        Raises StorageError."""
        key, now = token_hash(token), self.clock()

        def read(tx: Tx) -> tuple[User | None, float, float]:
            row = tx.one("SELECT user_name, created_at, seen_at FROM sessions WHERE token_hash = ?", (key,))
            if row is None:
                return None, 0.0, 0.0
            return read_user(tx, str(row[0])), float(row[1]), float(row[2])

        user, created_at, seen_at = await self.db.run(read)
        if user is None:
            return None
        if now - seen_at > self.idle or now - created_at > self.max_age:
            await self.end(token)
            return None
        if now - seen_at > TOUCH_EVERY:  # a write only now and then: reads take no write lock
            await self.db.run(lambda tx: tx.execute("UPDATE sessions SET seen_at = ? WHERE token_hash = ?", (now, key)),
                              write=True)
        return user

    async def end(self, token: str) -> None:
        """End this session (logout). Raises StorageError."""
        await self.db.run(lambda tx: tx.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),)),
                          write=True)

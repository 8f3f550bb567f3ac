"""Users and the streams each may watch, stored in the database (`app/db/`), so every
node of a cluster knows the same people.

An admin may do everything; a viewer lists and watches only the streams granted to it
(or all of them: `streams` None) and changes nothing. Names are ASCII letters, digits and
`. _ - @`, kept in lower case: `Alice` and `alice` are one user. Changing a user's
password or removing it ends its sessions in the same transaction (on every node: each
request reads its session from the database).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import attrs

from ..db import Database, Tx
from ..policy.tokens import Grant

NAME = re.compile(r"[a-z0-9._@-]{1,64}")
MAX_STREAM_ID = 2**63 - 1
COLUMNS = "name, role, all_streams, password_hash, created_at, updated_at"


class Role(enum.StrEnum):
    ADMIN = "admin"  # manages cameras and users
    VIEWER = "viewer"  # watches the streams granted to it


class InvalidUser(ValueError):
    """A name, role or stream list that cannot be stored; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UserExists(Exception):
    """A user of that name is already stored."""


class LastAdmin(Exception):
    """The change would leave users but no admin to manage them: nothing was written."""


def _lock_admins(tx: Tx) -> bool:
    """Hold the admins' rows until the transaction ends (two demotions at once cannot
    both see another admin left); whether there is any."""
    return bool(tx.all("SELECT name FROM users WHERE role = ?" + tx.dialect.for_update,  # noqa: S608
                       (str(Role.ADMIN),)))


def _check_admin_left(tx: Tx, had: bool, *, last_user: bool = False) -> None:
    """Raise LastAdmin if the transaction took the last admin of the users left (or, with
    `last_user`, the last admin at all: no user left opens a server without API_TOKEN)."""
    if had and (last_user or tx.one("SELECT 1 FROM users LIMIT 1")) \
            and not tx.one("SELECT 1 FROM users WHERE role = ?", (str(Role.ADMIN),)):
        raise LastAdmin("no admin would be left: make another admin first"
                        + (" (or remove the last one with rtsp-viewer users remove)" if last_user else ""))


@attrs.frozen
class User:
    name: str
    role: Role
    streams: frozenset[int] | None  # what a viewer watches; None: every stream (an admin always)
    password_hash: str = attrs.field(repr=False)
    created_at: str = ""
    updated_at: str = ""

    def grant(self, *, session: bool = False) -> Grant:
        """What this user may do, as admission reads it."""
        return Grant(admin=self.role is Role.ADMIN, user=self.name, streams=self.streams, session=session)

    def public(self) -> dict[str, object]:
        """`{"username", "role", "streams"}`: streams a sorted list of ids, or "all"."""
        return {"username": self.name, "role": str(self.role), "streams": self.grant().streams_json()}


def user_name(text: object) -> str:
    """The stored spelling of a user's name; raises InvalidUser."""
    if not isinstance(text, str) or not NAME.fullmatch(text.lower()):
        raise InvalidUser("username", "1-64 of letters, digits and . _ - @")
    return text.lower()


def role_of(text: object) -> Role:
    """The role a JSON value or argument names; raises InvalidUser."""
    if not isinstance(text, str) or text not in {r.value for r in Role}:
        raise InvalidUser("role", "admin or viewer")
    return Role(text)


def stream_ids(value: object) -> frozenset[int] | None:
    """A list of stream ids (JSON) or `1,2,3` (command line); "all" is None."""
    if value == "all":
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts):
            raise InvalidUser("streams", 'stream ids (1,2,3) or "all"')
        value = [int(p) for p in parts]
    if not isinstance(value, list) or not all(type(v) is int and 0 < v <= MAX_STREAM_ID for v in value):
        raise InvalidUser("streams", 'a list of stream ids, or "all"')
    return frozenset(value)


def _user(tx: Tx, row: tuple[object, ...] | None) -> User | None:
    if row is None:
        return None
    name, role, all_streams, password_hash, created_at, updated_at = map(str, row)
    streams = None
    if Role(role) is Role.VIEWER and all_streams == "0":
        streams = frozenset(int(r[0]) for r in tx.all("SELECT stream_id FROM grants WHERE user_name = ?", (name,)))
    return User(name, Role(role), streams, password_hash, created_at, updated_at)


def read_user(tx: Tx, name: str, *, lock: bool = False) -> User | None:
    sql = f"SELECT {COLUMNS} FROM users WHERE name = ?" + (tx.dialect.for_update if lock else "")  # noqa: S608
    return _user(tx, tx.one(sql, (name,)))


def _set_streams(tx: Tx, name: str, streams: Iterable[int]) -> None:
    for stream_id in sorted(set(streams)):
        tx.execute("INSERT INTO grants (user_name, stream_id) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, stream_id))


@attrs.define
class Change:
    """What `Users.change` does to one user (None and empty: leave as is)."""

    role: Role | None = None
    set_streams: bool = False  # give it `streams` (else keep its own)
    streams: frozenset[int] | None = None  # None: all
    grant: frozenset[int] = frozenset()
    revoke: frozenset[int] = frozenset()
    password_hash: str | None = None


class Users:
    """The users table, its grants and (through `app.accounts.sessions`) sessions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def any(self) -> bool:
        """Whether any user exists. Raises StorageError."""
        return await self.db.run(lambda tx: tx.one("SELECT 1 FROM users LIMIT 1") is not None)

    async def get(self, name: str) -> User | None:
        return await self.db.run(lambda tx: read_user(tx, name))

    async def all(self) -> list[User]:
        def read(tx: Tx) -> list[User]:
            rows = tx.all(f"SELECT {COLUMNS} FROM users ORDER BY name")  # noqa: S608
            return [u for u in (_user(tx, row) for row in rows) if u is not None]

        return await self.db.run(read)

    async def add(self, name: str, role: Role, streams: frozenset[int] | None, password_hash: str, stamp: str) -> User:
        """Store a new user. Raises UserExists (nothing written), StorageError."""
        def write(tx: Tx) -> User:
            # one statement: two nodes adding the same name at once cannot both pass a check first
            added = tx.one("INSERT INTO users (name, role, all_streams, password_hash, created_at, updated_at) "
                           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING name",
                           (name, str(role), int(streams is None), password_hash, stamp, stamp))
            if added is None:
                raise UserExists(f"user {name} exists")
            _set_streams(tx, name, streams or ())
            user = read_user(tx, name)
            assert user is not None
            return user

        return await self.db.run(write, write=True)

    async def change(self, name: str, change: Change, stamp: str) -> User | None:
        """Change one user in one transaction; None if there is none. A new password ends
        every session of the user. Raises InvalidUser, LastAdmin (nothing written),
        StorageError."""
        def write(tx: Tx) -> User | None:
            had = _lock_admins(tx)
            user = read_user(tx, name, lock=True)
            if user is None:
                return None
            role = change.role or user.role
            streams = change.streams if change.set_streams else user.streams
            if role is Role.VIEWER and user.role is Role.ADMIN and not change.set_streams:
                streams = frozenset()  # a former admin watches what it is granted from now on
            if streams is not None:
                streams = (streams | change.grant) - change.revoke
            elif change.revoke and role is Role.VIEWER:  # revoking from "all": all but those
                raise InvalidUser("streams", 'this viewer watches "all": give it a list instead')
            tx.execute("UPDATE users SET role = ?, all_streams = ?, password_hash = ?, updated_at = ? WHERE name = ?",
                       (str(role), int(streams is None), change.password_hash or user.password_hash, stamp, name))
            tx.execute("DELETE FROM grants WHERE user_name = ?", (name,))
            _set_streams(tx, name, streams or ())
            if change.password_hash is not None:
                tx.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
            _check_admin_left(tx, had)
            return read_user(tx, name)

        return await self.db.run(write, write=True, scrub=change.password_hash is not None)

    async def rehash(self, name: str, old: str, new: str) -> None:
        """Store the same password's hash made with the current cost, if the user's hash
        is still `old` (a password changed meanwhile is kept); its sessions stay."""
        await self.db.run(lambda tx: tx.execute("UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                                                (new, name, old)), write=True, scrub=True)

    async def remove(self, name: str, *, keep_an_admin: bool = True) -> bool:
        """Remove the user, its grants and its sessions; False if there was none. Raises
        LastAdmin (nothing removed) for the last admin: of other users; with
        `keep_an_admin`, even of none (then a server without API_TOKEN is open to anyone
        again: only the command line on the server's machine may do that). Raises
        StorageError."""
        def write(tx: Tx) -> bool:
            had = _lock_admins(tx)
            gone = bool(tx.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0)
            tx.execute("DELETE FROM grants WHERE user_name = ?", (name,))
            tx.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
            _check_admin_left(tx, had, last_user=keep_an_admin)
            return gone

        return await self.db.run(write, write=True, scrub=True)

"""The interface both databases offer, and the SQL dialect each speaks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs

T = TypeVar("T")
Params = Sequence[object]


class StorageError(Exception):
    """Storage cannot be used (file unreadable, disk full, corrupt database, server down);
    its text names no file-system path or password (the open health endpoint shows it)."""


@attrs.frozen
class Dialect:
    """What differs in the SQL: placeholders, the time, row locks, notifications."""

    name: str
    placeholder: str  # the driver's parameter marker for the `?` the SQL here is written with
    now: str  # Unix time (seconds, fractional) by the database's clock
    for_update: str  # appended to a SELECT that a write in the same transaction follows
    notify: str | None  # a statement telling every listening node that streams changed

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "?", "((julianday('now') - 2440587.5) * 86400.0)", "", None)
POSTGRES = Dialect("postgresql", "%s", "extract(epoch from clock_timestamp())::double precision", " FOR UPDATE",
                   "SELECT pg_notify('rtsp_viewer_streams', ?)")


class Tx:
    """One transaction's connection, with SQL written once for both dialects (`?`
    placeholders, `{now}` for the database's clock)."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._connection = connection
        self.dialect = dialect

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement; the driver's cursor (fetchone, fetchall, rowcount)."""
        return self._connection.execute(self.dialect.sql(sql.replace("{now}", self.dialect.now)), tuple(params))

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        row = self.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.execute(sql, params).fetchall()]

    def changed(self, stream_id: int) -> None:
        """Tell the other nodes, when this transaction commits, that a stream changed."""
        if self.dialect.notify is not None:
            self.execute(self.dialect.notify, (str(stream_id),))


class Database(Protocol):
    """SQLite or PostgreSQL (`open_database`)."""

    dialect: Dialect

    async def open(self) -> None:
        """Connect and migrate now; raises StorageError (later calls try again)."""

    async def run(self, work: Callable[[Tx], T], *, write: bool = False, scrub: bool = False) -> T:
        """`work(tx)` as one transaction in a worker thread: committed when it returns,
        rolled back when it raises (its exception is raised here).

        `write`: it will write (SQLite takes the write lock first, so a read and the write
        after it see no other writer in between). `scrub`: it may have replaced a secret
        (a camera's password): no copy of the old one is left behind (SQLite's log).
        Raises StorageError when the database cannot be used. Cancellation: the work in
        its thread runs to its end (bounded by the drivers' timeouts), then Cancelled."""

    async def close(self) -> None:
        """Close once no call is using it."""

    async def listen(self, changed: Callable[[], None]) -> None:
        """Call `changed` whenever another node says streams changed (PostgreSQL
        LISTEN/NOTIFY), and once each time the connection that listens is (re)made;
        runs until cancelled. SQLite has no notifications: it returns at once."""

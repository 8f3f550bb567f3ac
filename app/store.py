"""The stream registry's storage: SQLite through `trio.to_thread`, migrated on open.

One connection, used by one worker thread at a time under a trio.Lock. Every write is a
transaction of its own, so a failed request never leaves half a change behind; a change
of one stream (`patch`) reads what is stored and writes its result in one transaction
(BEGIN IMMEDIATE: no other writer, in this process or another, in between), so two
concurrent edits of different fields both survive. Each stream has a version, one more
at each change: its ETag, checked by If-Match. Storage that cannot be opened is not
fatal: each call tries again and raises StorageError (503). The file holds camera
passwords: it and its directory are private to the server's user, and a replaced or
deleted URL is overwritten, not left in free pages or the log.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import attrs
import trio

from supervisors import Profile, Source, Transport, VideoMode
from supervisors.events import describe_os_error
from supervisors.profile import DEFAULT

T = TypeVar("T")
log = logging.getLogger(__name__)

MIGRATIONS = [
    """CREATE TABLE streams (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        transport TEXT NOT NULL DEFAULT 'tcp',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    # the media profile (issue 12); SQLite adds one column per statement
    "ALTER TABLE streams ADD COLUMN video TEXT NOT NULL DEFAULT 'copy'",
    "ALTER TABLE streams ADD COLUMN audio INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE streams ADD COLUMN max_height INTEGER",
    "ALTER TABLE streams ADD COLUMN version INTEGER NOT NULL DEFAULT 1",  # issue 21: ETag, If-Match
]
COLUMNS = "id, name, url, transport, created_at, updated_at, video, audio, max_height, version"


@attrs.frozen
class StreamRecord:
    id: int
    name: str
    url: str
    transport: Transport
    created_at: str
    updated_at: str
    profile: Profile = DEFAULT
    version: int = 1  # one more at each change

    @property
    def source(self) -> Source:
        """What the engine plays for this stream."""
        return Source(self.url, self.transport, self.profile)

    @property
    def etag(self) -> str:
        """Its entity tag (quoted): the stored record's version, not its live status."""
        return f'"{self.id}-{self.version}"'


class Fields(Protocol):
    """What a change of a stream gives: its new stored fields."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def profile(self) -> Profile: ...


class PreconditionFailed(Exception):
    """The stored stream is not the version the request named (If-Match): nothing changed."""


class StorageError(Exception):
    """Storage cannot be used (file unreadable, disk full, corrupt database); its text
    names no file-system path (the open health endpoint shows it)."""


def _describe(error: sqlite3.Error | OSError) -> str:
    if isinstance(error, OSError):
        return describe_os_error(error)
    return str(error)  # SQLite's own messages name no path


MAX_ID = 2**63 - 1  # SQLite's largest integer
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # ISO 8601 in UTC, as every timestamp in the API


def iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime(TIMESTAMP)


def now_iso() -> str:
    return datetime.now(UTC).strftime(TIMESTAMP)


def _record(row: tuple[object, ...]) -> StreamRecord:
    stream_id, name, url, transport, created_at, updated_at, video, audio, max_height, version = row
    profile = Profile(VideoMode(str(video)), bool(audio), None if max_height is None else int(max_height))  # type: ignore[call-overload]
    return StreamRecord(int(stream_id), str(name), str(url), Transport(str(transport)),  # type: ignore[call-overload]
                        str(created_at), str(updated_at), profile, int(version))  # type: ignore[call-overload]


def _private(path: Path) -> None:
    """Make the database's directory (0700) and file (0600) if missing, and take group and
    other access from a file (and its -wal, -shm) an earlier version left readable."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            log.warning("%s was readable by others: made private (0600)", file)
            file.chmod(0o600)


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    async def open(self) -> None:
        """Open (create, migrate) now; if that fails, every later call tries again."""
        await self._call(lambda: None)

    async def close(self) -> None:
        """Close the database once no call is using it (under the store's lock)."""
        async with self._lock:
            if self._db is not None:
                await trio.to_thread.run_sync(self._db.close)
                self._db = None

    def _open(self) -> None:
        if self.path != ":memory:":
            try:
                _private(Path(self.path))
            except OSError as error:  # the path is for the log, not for StorageError's text
                log.error("cannot open the database at %s: %s", self.path, error)
                raise
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA secure_delete=ON")  # a deleted or replaced password is overwritten
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
            with db:
                db.execute("BEGIN")
                db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
        self._db = db

    async def _call(self, func: Callable[..., T], *args: object) -> T:
        async with self._lock:
            return await self._run(func, *args)

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        """`func(*args)` in the worker thread (the caller holds the lock), the database
        opened first if it is not; raises StorageError."""
        def call() -> T:
            if self._db is None:
                self._open()
            return func(*args)

        try:
            return await trio.to_thread.run_sync(call)
        except (sqlite3.Error, OSError) as error:
            raise StorageError(_describe(error)) from error

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "opened by _call"
        return self._db

    # --- queries --------------------------------------------------------------------------

    async def all(self, *, limit: int | None = None, offset: int = 0) -> list[StreamRecord]:
        """The streams ordered by id: all of them, or `limit` of them after the first `offset`."""
        return await self._call(self._all, -1 if limit is None else limit, offset)

    def _all(self, limit: int, offset: int) -> list[StreamRecord]:
        rows = self._conn().execute(f"SELECT {COLUMNS} FROM streams ORDER BY id LIMIT ? OFFSET ?",  # noqa: S608
                                    (limit, offset)).fetchall()
        return [_record(row) for row in rows]

    async def get(self, stream_id: int) -> StreamRecord | None:
        """The stream, or None: also for an id outside 1 … MAX_ID, which none can have."""
        if not 0 < stream_id <= MAX_ID:
            return None
        return await self._call(self._get, stream_id)

    def _get(self, stream_id: int) -> StreamRecord | None:
        row = self._conn().execute(f"SELECT {COLUMNS} FROM streams WHERE id = ?", (stream_id,)).fetchone()  # noqa: S608
        return _record(row) if row else None

    async def create(self, name: str, url: str, transport: Transport, profile: Profile = DEFAULT) -> StreamRecord:
        return await self._call(self._create, name, url, transport, profile)

    def _create(self, name: str, url: str, transport: Transport, profile: Profile) -> StreamRecord:
        stamp = now_iso()
        with self._conn() as db:
            cursor = db.execute(
                "INSERT INTO streams (name, url, transport, created_at, updated_at, video, audio, max_height) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, url, transport, stamp, stamp, profile.video, int(profile.audio), profile.max_height))
        return StreamRecord(int(cursor.lastrowid or 0), name, url, transport, stamp, stamp, profile)

    async def patch(self, stream_id: int, change: Callable[[StreamRecord], Fields], *,
                    expect: Callable[[StreamRecord], bool] = lambda stored: True,
                    ) -> tuple[StreamRecord, StreamRecord] | None:
        """Change one stream in one transaction: `change` gets the stream as it is stored
        now and gives its new fields; (before, after), or None if there is no such stream.

        Raises PreconditionFailed when `expect` (If-Match) refuses the stored stream, and
        whatever `change` raises (ValidationFailed): nothing is written then. Cancellation:
        the transaction is rolled back."""
        if not 0 < stream_id <= MAX_ID:
            return None
        async with self._lock:
            stored = await self._run(self._begin, stream_id)
            done = None
            try:
                if stored is None:
                    return None
                if not expect(stored):
                    raise PreconditionFailed(f"stream {stream_id} is at {stored.etag}")
                fields = change(stored)
                done = await self._run(self._update, stream_id, fields)
            finally:
                if done is None:
                    with trio.CancelScope(shield=True):
                        await self._run(self._rollback)
            await self._run(self._forget)
        return stored, done

    def _begin(self, stream_id: int) -> StreamRecord | None:
        """Begin a write transaction (no other writer until it ends) and read the stream."""
        self._conn().execute("BEGIN IMMEDIATE")
        try:
            return self._get(stream_id)
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn().in_transaction:
            self._conn().execute("ROLLBACK")

    def _update(self, stream_id: int, fields: Fields) -> StreamRecord:
        db = self._conn()
        profile = fields.profile
        db.execute("UPDATE streams SET name = ?, url = ?, transport = ?, updated_at = ?, video = ?, audio = ?, "
                   "max_height = ?, version = version + 1 WHERE id = ?",
                   (fields.name, fields.url, fields.transport, now_iso(), profile.video, int(profile.audio),
                    profile.max_height, stream_id))
        record = self._get(stream_id)
        db.execute("COMMIT")
        assert record is not None, "read in the same transaction"
        return record

    async def delete(self, stream_id: int, *, expect: Callable[[StreamRecord], bool] = lambda stored: True) -> bool:
        """Delete the stream; False if there was none. Raises PreconditionFailed when
        `expect` (If-Match) refuses it (nothing deleted)."""
        if not 0 < stream_id <= MAX_ID:
            return False
        async with self._lock:
            deleted = await self._run(self._delete, stream_id, expect)
            await self._run(self._forget)
        return deleted

    def _delete(self, stream_id: int, expect: Callable[[StreamRecord], bool]) -> bool:
        with self._conn() as db:
            stored = self._begin(stream_id)
            if stored is not None and not expect(stored):
                raise PreconditionFailed(f"stream {stream_id} is at {stored.etag}")
            return db.execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount > 0

    def _forget(self) -> None:
        """Move the write-ahead log into the database and empty it: the log keeps whole old
        pages (with the old URL) until then, where secure_delete does not reach. After a
        change has committed: a failure here is logged, never the change's failure (the
        next change checkpoints again)."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as error:
            log.warning("could not checkpoint the database after a change: %s", error)

    async def ping(self) -> None:
        await self._call(lambda: self._conn().execute("SELECT 1").fetchone())

"""The stream registry's records, stored in the database DATABASE_URL names (`app/db/`).

Every write is a transaction of its own, so a failed request never leaves half a change
behind; a change of one stream (`patch`) reads what is stored and writes its result in one
transaction (SQLite's write lock, PostgreSQL's row lock: no other writer, on any node, in
between), so two concurrent edits of different fields both survive. Each stream has a
version, one more at each change: its ETag, checked by If-Match. Storage that cannot be
used is not fatal: each call tries again and raises StorageError (503). Every change
tells the other nodes (`Tx.changed`: PostgreSQL NOTIFY; SQLite's nodes poll).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import attrs

from supervisors import Profile, Source, Transport, VideoMode
from supervisors.profile import DEFAULT

from .db import Database, StorageError, Tx, open_database

log = logging.getLogger(__name__)
__all__ = ["Fields", "PreconditionFailed", "StorageError", "Store", "StreamRecord"]
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
        return Source(self.url, self.transport, self.profile, stream=self.id)

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


MAX_ID = 2**63 - 1  # the largest id either database stores
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


def _get(tx: Tx, stream_id: int, *, lock: bool = False) -> StreamRecord | None:
    row = tx.one(f"SELECT {COLUMNS} FROM streams WHERE id = ?" + (tx.dialect.for_update if lock else ""),  # noqa: S608
                 (stream_id,))
    return _record(row) if row else None


class Store:
    def __init__(self, url: str, database: Database | None = None) -> None:
        """`url`: a DATABASE_URL (`sqlite:///…`, `postgresql://…`)."""
        self.db = database or open_database(url)

    async def open(self) -> None:
        """Open (create, migrate) now; if that fails, every later call tries again."""
        await self.db.open()

    async def close(self) -> None:
        """Close the database once no call is using it."""
        await self.db.close()

    # --- queries --------------------------------------------------------------------------

    async def all(self, *, limit: int | None = None, offset: int = 0,
                  only: frozenset[int] | None = None) -> list[StreamRecord]:
        """The streams ordered by id (`only` those, when given): all of them, or `limit`
        of them after the first `offset`."""
        ids = sorted(only or ())
        where = "" if only is None else f"WHERE id IN ({', '.join('?' for _ in ids) or 'NULL'}) "

        def read(tx: Tx) -> list[StreamRecord]:
            rows = tx.all(f"SELECT {COLUMNS} FROM streams {where}ORDER BY id LIMIT ? OFFSET ?",  # noqa: S608
                          (*ids, MAX_ID if limit is None else limit, offset))
            return [_record(row) for row in rows]

        return await self.db.run(read)

    async def get(self, stream_id: int) -> StreamRecord | None:
        """The stream, or None: also for an id outside 1 … MAX_ID, which none can have."""
        if not 0 < stream_id <= MAX_ID:
            return None
        return await self.db.run(lambda tx: _get(tx, stream_id))

    async def records(self, stream_ids: list[int]) -> dict[int, StreamRecord]:
        """The stored records of these streams (a missing one was deleted)."""
        if not stream_ids:
            return {}

        def read(tx: Tx) -> dict[int, StreamRecord]:
            marks = ", ".join("?" for _ in stream_ids)
            rows = tx.all(f"SELECT {COLUMNS} FROM streams WHERE id IN ({marks})", stream_ids)  # noqa: S608
            return {record.id: record for record in map(_record, rows)}

        return await self.db.run(read)

    async def create(self, name: str, url: str, transport: Transport, profile: Profile = DEFAULT) -> StreamRecord:
        stamp = now_iso()

        def insert(tx: Tx) -> StreamRecord:
            row = tx.one("INSERT INTO streams (name, url, transport, created_at, updated_at, video, audio, max_height) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                         (name, url, str(transport), stamp, stamp, str(profile.video), int(profile.audio),
                          profile.max_height))
            assert row is not None
            tx.changed(int(row[0]))
            return StreamRecord(int(row[0]), name, url, transport, stamp, stamp, profile)

        return await self.db.run(insert, write=True)

    async def patch(self, stream_id: int, change: Callable[[StreamRecord], Fields], *,
                    expect: Callable[[StreamRecord], bool] = lambda stored: True,
                    ) -> tuple[StreamRecord, StreamRecord] | None:
        """Change one stream in one transaction: `change` gets the stream as it is stored
        now and gives its new fields; (before, after), or None if there is no such stream.

        Raises PreconditionFailed when `expect` (If-Match) refuses the stored stream, and
        whatever `change` raises (ValidationFailed): nothing is written then. Cancellation:
        the transaction in its thread commits or rolls back before Cancelled is raised."""
        if not 0 < stream_id <= MAX_ID:
            return None

        def write(tx: Tx) -> tuple[StreamRecord, StreamRecord] | None:
            stored = _get(tx, stream_id, lock=True)
            if stored is None:
                return None
            if not expect(stored):
                raise PreconditionFailed(f"stream {stream_id} is at {stored.etag}")
            fields = change(stored)
            profile = fields.profile
            tx.execute("UPDATE streams SET name = ?, url = ?, transport = ?, updated_at = ?, video = ?, audio = ?, "
                       "max_height = ?, version = version + 1 WHERE id = ?",
                       (fields.name, fields.url, str(fields.transport), now_iso(), str(profile.video),
                        int(profile.audio), profile.max_height, stream_id))
            done = _get(tx, stream_id)
            assert done is not None, "read in the same transaction"
            tx.changed(stream_id)
            return stored, done

        return await self.db.run(write, write=True, scrub=True)

    async def delete(self, stream_id: int, *, expect: Callable[[StreamRecord], bool] = lambda stored: True) -> bool:
        """Delete the stream; False if there was none. Raises PreconditionFailed when
        `expect` (If-Match) refuses it (nothing deleted)."""
        if not 0 < stream_id <= MAX_ID:
            return False

        def write(tx: Tx) -> bool:
            stored = _get(tx, stream_id, lock=True)
            if stored is None:
                return False
            if not expect(stored):
                raise PreconditionFailed(f"stream {stream_id} is at {stored.etag}")
            tx.execute("DELETE FROM streams WHERE id = ?", (stream_id,))
            tx.execute("DELETE FROM grants WHERE stream_id = ?", (stream_id,))  # its viewers' grants go with it
            tx.changed(stream_id)
            return True

        return await self.db.run(write, write=True, scrub=True)

    async def ping(self) -> None:
        await self.db.run(lambda tx: tx.one("SELECT 1"))

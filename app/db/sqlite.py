"""SQLite: one connection in a worker thread, one call at a time (a trio.Lock).

Every transaction that writes begins IMMEDIATE: no other writer, in this process or
another (`serve --workers N` shares the file), between its read and its write. The file
holds camera passwords: it and its directory are private to the server's user, and a
replaced or deleted URL is overwritten (secure_delete), not left in free pages; after such
a change the write-ahead log is emptied too (`scrub`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from supervisors.events import describe_os_error

from . import schema
from .base import SQLITE, StorageError, Tx

T = TypeVar("T")
log = logging.getLogger(__name__)
BUSY_TIMEOUT = 5.0  # seconds a writer waits for another process's write lock


def _private(path: Path) -> None:
    """Make the database's directory (0700) and file (0600) if missing, and take group and
    other access from a file (and its -wal, -shm) an earlier version left readable."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            log.warning("%s was readable by others: made private (0600)", file)
            file.chmod(0o600)


class SqliteDatabase:
    dialect = SQLITE

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    async def open(self) -> None:
        await self.run(lambda tx: None)

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                await trio.to_thread.run_sync(self._db.close)
                self._db = None

    async def listen(self, changed: Callable[[], None]) -> None:
        return  # no notifications: the nodes of one file poll (app/cluster/sync.py)

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            try:
                _private(Path(self.path))
            except OSError as error:  # the path is for the log, not for StorageError's text
                log.error("cannot open the database at %s: %s", self.path, error)
                raise
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA secure_delete=ON")  # a deleted or replaced password is overwritten
        db.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, statement in enumerate(schema.SQLITE[version:], start=version + 1):
                db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        return db

    async def run(self, work: Callable[[Tx], T], *, write: bool = False, scrub: bool = False) -> T:
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(self._transaction, work, write, scrub)
            except (sqlite3.Error, OSError) as error:
                raise StorageError(describe_os_error(error) if isinstance(error, OSError) else str(error)) from error

    def _transaction(self, work: Callable[[Tx], T], write: bool, scrub: bool) -> T:
        if self._db is None:
            self._db = self._open()
        db = self._db
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(Tx(db, SQLITE))
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if scrub:
            self._forget()
        return result

    def _forget(self) -> None:
        """Move the write-ahead log into the database and empty it: the log keeps whole old
        pages (with the old URL) until then, where secure_delete does not reach. After a
        change has committed: a failure here is logged, never the change's failure (the
        next change checkpoints again)."""
        assert self._db is not None
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as error:
            log.warning("could not checkpoint the database after a change: %s", error)

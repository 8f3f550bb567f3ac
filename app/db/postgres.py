"""PostgreSQL through psycopg 3's blocking API in `trio.to_thread`, with a psycopg-pool pool.

Why psycopg 3: it is the maintained driver, and its pool checks a connection before
handing it out, so a server that restarted costs one failed check, not a failed request.
Its async API runs on asyncio only; the blocking one in Trio's worker threads is what its
documentation suggests for other event loops. Every call waits POOL_TIMEOUT at most for
a connection: with the server down, writes fail at once with STORAGE_UNAVAILABLE (503).

`listen` holds one more connection of its own for LISTEN (notifications arrive only on
the connection that listens).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import psycopg
import trio
from psycopg_pool import ConnectionPool

from supervisors import mask_text

from . import schema
from .base import POSTGRES, StorageError, Tx

T = TypeVar("T")
log = logging.getLogger(__name__)
CHANNEL = "rtsp_viewer_streams"
POOL_TIMEOUT = 3.0  # seconds a call waits for a connection
CONNECT_TIMEOUT = 3  # seconds (libpq counts whole seconds)
LISTEN_WAIT = 0.5  # seconds one wait for notifications blocks a thread (and a shutdown)
RECONNECT_AFTER = 1.0
MIGRATION_LOCK = 7_230_023  # pg_advisory_xact_lock: one node migrates at a time


def _first_line(error: Exception) -> str:
    """What the driver says, in one line, with any password in it masked."""
    lines = str(error).strip().splitlines()
    return mask_text(lines[0]) if lines else type(error).__name__


class PostgresDatabase:
    dialect = POSTGRES

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=POOL_TIMEOUT,
                                    check=ConnectionPool.check_connection, name="rtsp-viewer",
                                    kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "rtsp-viewer"})
        self._opened = False
        self._migrated = False
        self._lock = trio.Lock()  # opening and migrating, once

    async def open(self) -> None:
        await self.run(lambda tx: None)

    async def close(self) -> None:
        async with self._lock:
            if self._opened:
                await trio.to_thread.run_sync(self._pool.close)
                self._opened = False

    async def run(self, work: Callable[[Tx], T], *, write: bool = False, scrub: bool = False) -> T:
        if not self._migrated:
            async with self._lock:
                if not self._opened:
                    await trio.to_thread.run_sync(lambda: self._pool.open(wait=False))
                    self._opened = True
                if not self._migrated:
                    await self._call(self._migrate)
                    self._migrated = True
        return await self._call(work)

    async def _call(self, work: Callable[[Tx], T]) -> T:
        try:
            return await trio.to_thread.run_sync(self._transaction, work)
        except psycopg.Error as error:  # PoolTimeout is one too
            raise StorageError(_first_line(error)) from error

    def _transaction(self, work: Callable[[Tx], T]) -> T:
        with self._pool.connection() as connection:  # commits on return, rolls back on raise
            return work(Tx(connection, POSTGRES))

    @staticmethod
    def _migrate(tx: Tx) -> None:
        tx.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = tx.one("SELECT version FROM schema_version")
        version = 0 if row is None else int(row[0])
        if row is None:
            tx.execute("INSERT INTO schema_version (version) VALUES (0)")
        for number, statement in enumerate(schema.POSTGRES[version:], start=version + 1):
            tx.execute(statement)
            tx.execute("UPDATE schema_version SET version = ?", (number,))

    async def listen(self, changed: Callable[[], None]) -> None:
        while True:
            try:
                connection = await trio.to_thread.run_sync(self._listener)
            except psycopg.Error as error:
                log.debug("cannot listen for changes yet: %s", _first_line(error))
                await trio.sleep(RECONNECT_AFTER)
                continue
            try:
                changed()  # whatever happened while no connection listened
                while True:
                    if await trio.to_thread.run_sync(self._wait, connection):
                        changed()
            except psycopg.Error as error:
                log.warning("lost the database's notifications (%s): listening again", _first_line(error))
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(connection.close)
            await trio.sleep(RECONNECT_AFTER)

    def _listener(self) -> psycopg.Connection[tuple[object, ...]]:
        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                     application_name="rtsp-viewer listen")
        connection.execute(f"LISTEN {CHANNEL}")
        return connection

    @staticmethod
    def _wait(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Whether a notification came within LISTEN_WAIT seconds."""
        return bool(list(connection.notifies(timeout=LISTEN_WAIT, stop_after=1)))

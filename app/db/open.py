"""The database a DATABASE_URL names."""

from __future__ import annotations

from .base import Database


def open_database(url: str) -> Database:
    """SQLite for `sqlite:///path` (or `sqlite:///:memory:`), PostgreSQL for
    `postgresql://` and `postgres://` URLs; connects lazily (its `open`)."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresDatabase  # psycopg loads libpq: only when asked for

        return PostgresDatabase(url)
    from .sqlite import SqliteDatabase

    return SqliteDatabase(url.removeprefix("sqlite:///"))

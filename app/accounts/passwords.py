"""Passwords, stored only as Argon2id hashes (argon2-cffi's defaults: RFC 9106's
low-memory profile, 64 MiB and three passes, about 0.1 s of a core each).

Hashing runs in a worker thread, two at a time at most (each takes 64 MiB), so a burst of
logins cannot take the server's memory or its event loop. A name that has no user is
checked against a hash of a random password, so a wrong name costs the same time as a
wrong password.
"""

from __future__ import annotations

import secrets

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher()  # Argon2id
MIN_LENGTH = 8
MAX_LENGTH = 1024  # characters: hashing is cheap per byte, but a body is bounded anyway
_slots = trio.CapacityLimiter(2)
_dummy: list[str] = []  # the hash a missing user is checked against (made at first use)


class WeakPassword(ValueError):
    """A password this server does not store; str() says why."""


def check_strength(password: str) -> None:
    """Raise WeakPassword unless `password` is MIN_LENGTH … MAX_LENGTH characters."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(f"a password must be {MIN_LENGTH}-{MAX_LENGTH} characters")


async def hash_password(password: str) -> str:
    """Its Argon2id hash (PHC string). Raises WeakPassword. Cancellation: the hash in its
    thread finishes (0.1 s) before Cancelled is raised."""
    check_strength(password)
    return await trio.to_thread.run_sync(HASHER.hash, password, limiter=_slots)


async def verify(stored: str | None, password: str) -> bool:
    """Whether `password` matches the stored hash; with None (no such user), False after
    the time a real check takes."""
    if not _dummy:
        _dummy.append(await trio.to_thread.run_sync(HASHER.hash, secrets.token_hex(16), limiter=_slots))
    if len(password) > MAX_LENGTH:
        password = ""  # never stored: checked anyway, for the same time

    def check() -> bool:
        try:
            return HASHER.verify(stored or _dummy[0], password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await trio.to_thread.run_sync(check, limiter=_slots)

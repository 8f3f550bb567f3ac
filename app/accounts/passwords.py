"""Passwords, stored only as Argon2id hashes (argon2-cffi), with the cost PASSWORD_HASH
names: `rfc9106-low-memory` (the default: RFC 9106's second recommendation, 64 MiB and
three passes, about 0.1 s of a core) or `owasp-minimum` (OWASP's minimum, 19 MiB and
two passes, about 0.03 s: for small devices).

Hashing runs in a worker thread, two at a time at most in the process (each takes its
memory for its duration), so a burst of logins cannot take the server's memory or its
event loop. A name that has no user is checked against a hash of a random password made
with the same cost, so a wrong name costs the time a wrong password does; a hash made
with another cost is made again at its user's next login (`needs_rehash`), so stored
hashes come to the cost the server runs with.
"""

from __future__ import annotations

import secrets

import attrs
import trio
from argon2 import Parameters, PasswordHasher, Type, profiles
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # characters: hashing is cheap per byte, but a body is bounded anyway
PROFILES = {
    "rfc9106-low-memory": profiles.RFC_9106_LOW_MEMORY,  # Argon2id, t=3, m=64 MiB, p=4
    "owasp-minimum": Parameters(type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=2,
                                memory_cost=19 * 1024, parallelism=1),
}
DEFAULT_PROFILE = "rfc9106-low-memory"
_slots = trio.CapacityLimiter(2)


class WeakPassword(ValueError):
    """A password this server does not store; str() says why."""


def check_strength(password: str) -> None:
    """Raise WeakPassword unless `password` is MIN_LENGTH … MAX_LENGTH characters."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(f"a password must be {MIN_LENGTH}-{MAX_LENGTH} characters")


@attrs.define
class Passwords:
    """Hashes and checks passwords with one profile of PROFILES."""

    profile: str = DEFAULT_PROFILE
    hasher: PasswordHasher = attrs.field(init=False)
    _dummy: str | None = None  # the hash a missing user is checked against (made at first use)

    def __attrs_post_init__(self) -> None:
        self.hasher = PasswordHasher.from_parameters(PROFILES[self.profile])

    async def hash(self, password: str) -> str:
        """Its Argon2id hash (PHC string). Raises WeakPassword. Cancellation: the hash in
        its thread finishes (0.03-0.1 s) before Cancelled is raised."""
        check_strength(password)
        return await trio.to_thread.run_sync(self.hasher.hash, password, limiter=_slots)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches the stored hash; with None (no such user), False
        after the time a real check takes."""
        if self._dummy is None:
            self._dummy = await trio.to_thread.run_sync(self.hasher.hash, secrets.token_hex(16), limiter=_slots)
        if len(password) > MAX_LENGTH:
            password = ""  # never stored: checked anyway, for the same time
        dummy = self._dummy

        def check() -> bool:
            try:
                return self.hasher.verify(stored or dummy, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False

        return await trio.to_thread.run_sync(check, limiter=_slots)

    def needs_rehash(self, stored: str) -> bool:
        """Whether a stored hash was made with another cost than this profile's."""
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

"""Who may do what: the root token (API_TOKEN), signed play links and node tokens, the
`Grant` each credential (a user's too: app/accounts/) comes to, and how credentials are
read from headers (Bearer, Basic, a `bearer.` subprotocol).

With API_TOKEN set, every route but `GET /api/health/`, the viewer page and its static
files needs it (or a user: app/policy/admission.py): `Authorization: Bearer <token>` on
HTTP; on a WebSocket or the HTTP stream (browsers cannot set headers there) also
`?token=<token>` or a `Sec-WebSocket-Protocol` entry `bearer.<token>`. A play token (`POST /api/streams/{id}/play-token`) is an HMAC,
with the server's key, of one stream id and an expiry: it lets its holder watch that
stream until then, and nothing else. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import attrs

log = logging.getLogger(__name__)
PLAY_PREFIX = "p1"  # the play-token format's version
NODE_PREFIX = "n1"  # a node of the cluster reading another's stream (app/cluster/peer.py)
NODE_TTL = 60  # seconds a node token opens a request (a stream it opened goes on)
KEY_FILE = "play-token.key"
PROTOCOL_PREFIX = "bearer."  # Sec-WebSocket-Protocol: bearer.<token>
MAX_TTL = 7 * 24 * 3600


@attrs.frozen
class Grant:
    """What presented credentials allow: everything (API_TOKEN, an admin user, or no
    access control at all), the streams of a viewer user, watching one stream (a play
    token), or watching any stream by id (another node of the cluster)."""

    admin: bool
    stream_id: int | None = None  # a play token's stream
    peer: bool = False  # another node of the cluster: watches any stream by id
    user: str | None = None  # a user's name (app/accounts/)
    streams: frozenset[int] | None = None  # a viewer user's streams; None: all of them
    session: bool = False  # by the session cookie: its writes must come from an allowed Origin

    def streams_json(self) -> list[int] | str:
        """The streams it sees, as the API says them: ids, or "all"."""
        return "all" if self.admin or self.streams is None else sorted(self.streams)

    def sees(self, stream_id: int | None) -> bool:
        """Whether this user (or admin) may know stream `stream_id` exists."""
        return self.admin or (self.user is not None and (self.streams is None or stream_id in self.streams))

    def may_watch(self, stream_id: int | None) -> bool:
        """An admin watches anything; a viewer user its streams, a play token its own
        stream, a node any stream, by id; only an admin a `?url=` source (None)."""
        if self.admin:
            return True
        return stream_id is not None and (self.peer or stream_id == self.stream_id or self.sees(stream_id))


ADMIN = Grant(admin=True)


@attrs.define
class Access:
    api_token: str  # "" : no access control
    key: bytes  # signs play tokens
    clock: Callable[[], float] = time.time  # Unix time, for play tokens' expiry (tests move it)

    @property
    def required(self) -> bool:
        return bool(self.api_token)

    def check(self, presented: str | None) -> Grant | None:
        """The grant of a presented token (API_TOKEN, or a play token), or None."""
        if not presented:
            return None
        if self.required and same_secret(presented, self.api_token):
            return ADMIN
        return self._play(presented, self.clock())

    def node_token(self, node_id: str) -> str:
        """What node `node_id` presents to another node of its cluster (same SECRET_KEY)."""
        body = f"{NODE_PREFIX}.{node_id}.{int(self.clock() + NODE_TTL)}"
        return f"{body}.{self._sign(body)}"

    def peer(self, presented: str | None) -> Grant | None:
        """The grant of a valid node token, or None."""
        prefix, _, rest = (presented or "").partition(".")
        body, _, signature = rest.rpartition(".")
        node, _, expires = body.rpartition(".")
        if prefix != NODE_PREFIX or not node or not (expires.isascii() and expires.isdigit()):
            return None
        expected = self._sign(f"{NODE_PREFIX}.{body}")
        if not hmac.compare_digest(signature.encode(), expected.encode()) or int(expires) < self.clock():
            return None
        return Grant(admin=False, peer=True)

    def play_token(self, stream_id: int, ttl: float) -> tuple[str, int]:
        """A token that watches `stream_id` for `ttl` seconds, and when it expires (Unix time)."""
        expires = int(self.clock() + ttl)
        body = f"{PLAY_PREFIX}.{stream_id}.{expires}"
        return f"{body}.{self._sign(body)}", expires

    def _sign(self, body: str) -> str:
        digest = hmac.new(self.key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _play(self, presented: str, now: float) -> Grant | None:
        prefix, _, rest = presented.partition(".")
        stream, _, rest = rest.partition(".")
        expires, _, signature = rest.partition(".")
        if prefix != PLAY_PREFIX or not (stream.isascii() and stream.isdigit()) or not (expires.isascii() and expires.isdigit()):
            return None
        expected = self._sign(f"{PLAY_PREFIX}.{stream}.{expires}")
        if not hmac.compare_digest(signature.encode(), expected.encode()) or int(expires) < now:
            return None
        return Grant(admin=False, stream_id=int(stream))


def server_key(secret_key: str, database_path: str) -> bytes:
    """SECRET_KEY if set; else a key made once and kept (0600) beside the SQLite database,
    so play tokens outlive a restart; with an in-memory database (or none: "", where
    settings require SECRET_KEY), one for this process."""
    if secret_key:
        return secret_key.encode()
    if database_path in ("", ":memory:"):
        return secrets.token_bytes(32)
    path = Path(database_path).parent / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(key.hex())
    except OSError as error:  # the storage is unusable too: serve anyway, as the store does
        log.error("cannot keep the play-token key in %s (%s): tokens end with this process", path, error)
    else:
        log.debug("made a new play-token key in %s", path)
    return key


def same_secret(presented: str | None, secret: str) -> bool:
    """Whether `presented` is `secret`, compared in constant time."""
    return presented is not None and hmac.compare_digest(presented.encode(), secret.encode())


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def basic(header: str | None) -> tuple[str, str] | None:
    """(name, password) of an `Authorization: Basic <base64 of name:password>` header
    (RFC 7617, UTF-8); ("", "") for a malformed one (a wrong credential, not none)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return (name, password) if colon else ("", "")


def from_protocols(header: str | None) -> tuple[str | None, str | None]:
    """(the token of a `bearer.<token>` entry of Sec-WebSocket-Protocol, the entry to
    answer with: another entry if the client offered one, else that one)."""
    offered = [p.strip() for p in (header or "").split(",") if p.strip()]
    tokens = [p for p in offered if p.startswith(PROTOCOL_PREFIX)]
    if not tokens:
        return None, None
    others = [p for p in offered if not p.startswith(PROTOCOL_PREFIX)]
    return tokens[0].removeprefix(PROTOCOL_PREFIX), (others or tokens)[0]

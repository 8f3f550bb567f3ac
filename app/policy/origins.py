"""Which origins and Host headers the server answers (CORS_ORIGINS, ALLOWED_HOSTS).

The rules; `app/policy/admission.py` applies them to every route, and `app/http/doors.py`
puts the CORS headers on the answers:
- Host: bound to loopback, only loopback names are allowed by default (`localhost`,
  `127.0.0.1`, `[::1]`, any port), which stops DNS rebinding: a page on evil.example
  whose name is made to resolve to 127.0.0.1 sends `Host: evil.example`.
- CORS: no cross-origin access by default; `*` lets any origin read REST (never with
  credentials); a list lets those origins (with credentials). Preflights are answered.
- Origin: browsers send it on sockets (where CORS does not apply) and on writes; one that
  is neither this server's own (its host and port equal the Host header) nor allowed by
  CORS_ORIGINS is refused. Non-browser clients send no Origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import attrs

ANY = "*"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1", "[::1]")
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE = "600"


def host_name(host: str) -> str:
    """`Host`-header or origin authority without its port, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def origin_of(value: str) -> str | None:
    """`scheme://host[:port]` of an origin, normalised; None if it is not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username is not None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


@attrs.frozen
class Policy:
    cors: tuple[str, ...]  # normalised origins, or (ANY,); () : same origin only
    hosts: tuple[str, ...]  # host names, or (ANY,)

    @classmethod
    def of(cls, cors: Sequence[str], hosts: Sequence[str], bind: str) -> Policy:
        if not hosts:
            hosts = LOOPBACK_NAMES if bind.lower() in LOOPBACK_BINDS else (ANY,)
        return cls(tuple(cors), tuple(h if h == ANY else host_name(h) for h in hosts))

    def host_allowed(self, host: str | None) -> bool:
        return ANY in self.hosts or (host is not None and host_name(host) in self.hosts)

    def cors_allows(self, origin: str) -> bool:
        return ANY in self.cors or origin_of(origin) in self.cors

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """A socket or a write with this Origin (None: not a browser) and Host may enter."""
        if origin is None or self.cors_allows(origin):
            return True
        own = origin_of(origin)
        if own is None or host is None:
            return False
        parts = urlsplit(own)
        default = 443 if parts.scheme == "https" else 80
        return f"{host_name(parts.netloc)}:{parts.port or default}" == _authority(host, default)


def _authority(host: str, default: int) -> str:
    name = host_name(host)
    rest = host.strip().lower()[len(name):]
    return f"{name}:{rest.removeprefix(':') or default}"

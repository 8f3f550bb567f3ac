"""Source URLs: validation, the sharing key, and password masking.

Masking is the one place that decides how a credential looks outside the process:
`rtsp://admin:***@host/path`. Pure functions; nothing here awaits.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

MAX_URL_LENGTH = 2048
SCHEMES = ("rtsp", "rtsps")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}
MASK = "***"
MIN_LITERAL = 4

_CONTROL_CLASS = r"\x00-\x1f\x7f-\x9f"  # C0, DEL and C1: never in a name or a URL
CONTROL = re.compile(f"[{_CONTROL_CLASS}]")
_NOT_IN_URL = re.compile(rf"[{_CONTROL_CLASS}\s]")
# scheme://user:password@ in free text; the password runs to the last '@' before the path
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)([^\s/?#]*)@")


class InvalidUrl(ValueError):
    """The URL is not an acceptable RTSP source; the message never holds its password."""


def validate_url(url: object) -> str:
    """Return the URL unchanged if it is an acceptable source, else raise InvalidUrl."""
    if not isinstance(url, str):
        raise InvalidUrl("must be a string")
    if not url:
        raise InvalidUrl("must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"must be at most {MAX_URL_LENGTH} characters")
    if url.startswith("-"):
        raise InvalidUrl("must not start with '-'")
    if _NOT_IN_URL.search(url):
        raise InvalidUrl("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise InvalidUrl("is not a valid URL (check the host and port)") from None
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidUrl("scheme must be rtsp or rtsps")
    if not host:
        raise InvalidUrl("must name a host")
    if port is not None and not 1 <= port <= 65535:
        raise InvalidUrl("port must be 1-65535")
    if parts.netloc.rsplit("@", 1)[-1].endswith(":"):
        raise InvalidUrl("port must be 1-65535")
    return url


def password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    return mask_text(url)


def mask_text(text: str, *secrets: str | None) -> str:
    """Mask every userinfo password in text, and every given secret in any spelling.

    Secrets shorter than MIN_LITERAL are masked only inside URLs, where the pattern finds
    them; masking "1" everywhere would mangle hosts and numbers without hiding anything.
    """
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
            if len(form) >= MIN_LITERAL:
                out = out.replace(form, MASK)
    return out


def sharing_key(url: str) -> str:
    """Viewers of URLs with the same key share one upstream (scheme/host case, default port)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or DEFAULT_PORTS[scheme]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"

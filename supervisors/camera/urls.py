"""Source URLs: validation, the sharing key, and password masking.

Masking is the one place that decides how a credential looks outside the process:
`rtsp://admin:***@host/path`. Pure functions; nothing here awaits.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, unquote_plus, urlsplit

import attrs

MAX_URL_LENGTH = 2048
SCHEMES = ("rtsp", "rtsps")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322}
MASK = "***"
MIN_LITERAL = 4

# C0, DEL and C1; zero-width and bidi controls, the line and paragraph separators, the
# byte order mark and lone surrogates (which JSON can carry and UTF-8 cannot): text that
# hides or reorders what a person reads, or breaks the database. Never in a name or a URL.
_CONTROL_CLASS = r"\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff"
CONTROL = re.compile(f"[{_CONTROL_CLASS}]")
_NOT_IN_URL = re.compile(rf"[{_CONTROL_CLASS}\s\ufffd]")  # U+FFFD: bytes that were not UTF-8


class InvalidUrl(ValueError):
    """The URL is not an acceptable RTSP source; the message never holds its password."""


def validate_url(url: object) -> str:
    """The URL, its scheme in lower case, if it is an acceptable source; else raise InvalidUrl."""
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
    scheme, rest = url.split(":", 1)
    return f"{scheme.lower()}:{rest}"  # FFmpeg knows no "RTSP" protocol


CREDENTIAL_KEYS = frozenset({"password", "pass", "pwd", "passwd", "token", "auth", "key"})
# a URL in free text, up to white space or the start of the next URL
_URL_IN_TEXT = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://(?:(?![a-z][a-z0-9+.-]*://)\S)+")
# key=value of a credential outside any URL (a request path in an access log line, say)
_PAIR_IN_TEXT = re.compile(rf"(?i)(^|[?&;\s])({'|'.join(sorted(CREDENTIAL_KEYS))})=[^&;\s#]+")


@attrs.frozen
class _Parts:
    """A URL cut as FFmpeg cuts it (`av_url_split`): the authority ends at the first of
    `/?#`, and the user information at its last `@`. Never fails: any text has parts."""

    scheme: str
    user: str | None  # None: no user information
    password: str | None  # None: no ':' in the user information
    hostport: str
    path: str
    pairs: list[str] | None  # the query's parts, separators included; None: no '?'
    fragment: str  # '#…' or ''

    @classmethod
    def of(cls, url: str) -> _Parts | None:
        scheme, sep, rest = url.partition("://")
        if not sep:
            return None
        cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:cut], rest[cut:]
        userinfo, at, hostport = authority.rpartition("@")
        user = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            password = secret if colon else None
        tail, hash_, fragment = tail.partition("#")
        path, question, query = tail.partition("?")
        pairs = re.split(r"([&;])", query) if question else None
        return cls(scheme, user, password, hostport, path, pairs, hash_ + fragment)

    def __str__(self) -> str:
        userinfo = "" if self.user is None else self.user + ("" if self.password is None else f":{self.password}") + "@"
        query = "" if self.pairs is None else "?" + "".join(self.pairs)
        return f"{self.scheme}://{userinfo}{self.hostport}{self.path}{query}{self.fragment}"

    def credentials(self) -> list[tuple[int, str, str]]:
        """(index in pairs, key in lower case, value) of each credential-like query pair."""
        found = []
        for index, pair in enumerate(self.pairs or ()):
            key, eq, value = pair.partition("=")
            if eq and value and unquote_plus(key).strip().lower() in CREDENTIAL_KEYS:
                found.append((index, unquote_plus(key).strip().lower(), value))
        return found

    def masked(self) -> _Parts:
        pairs = None if self.pairs is None else list(self.pairs)
        for index, _, _ in self.credentials():
            assert pairs is not None
            pairs[index] = pairs[index].partition("=")[0] + "=" + MASK
        password = None if self.password is None else MASK
        return attrs.evolve(self, password=password, pairs=pairs)


def secrets_of(url: str) -> tuple[str, ...]:
    """The URL's password and credential-like query values, as written in it."""
    parts = _Parts.of(url)
    if parts is None:
        return ()
    found = [value for _, _, value in parts.credentials()]
    return (parts.password, *found) if parts.password else tuple(found)


def mask_url(url: str) -> str:
    """The URL with its password (up to the last '@' of the authority) and the values of
    its credential-like query parameters (CREDENTIAL_KEYS, any case) replaced by ***."""
    parts = _Parts.of(url)
    return url if parts is None else str(parts.masked())


def mask_text(text: str, *secrets: str | None) -> str:
    """Mask every URL in text (as mask_url), every credential-like key=value, and every
    given secret in any spelling.

    Secrets shorter than MIN_LITERAL are masked only inside URLs, where the parts find
    them; masking "1" everywhere would mangle hosts and numbers without hiding anything.
    """
    out = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    out = _PAIR_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", out)
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
            if len(form) >= MIN_LITERAL:
                out = out.replace(form, MASK)
    return out


def keep_masked(url: str, stored: str | None) -> str:
    """`url` as submitted, with each credential it carries masked (a password or a
    credential-like query value that is exactly ***, as an edit form sends back what it
    was given) replaced by the one `stored` has in the same place.

    Raises InvalidUrl if `stored` has none to keep, or if `url` names another scheme,
    host or port than `stored`: a kept password must not follow the URL elsewhere.
    """
    parts = _Parts.of(url)
    if parts is None:
        return url
    masked_pairs = [(index, key) for index, key, value in parts.credentials() if value == MASK]
    if parts.password != MASK and not masked_pairs:
        return url
    old = _Parts.of(stored) if stored is not None else None
    if old is None:
        raise InvalidUrl("holds a masked credential (***): give the credential itself")
    if _place(url) != _place(stored or ""):
        raise InvalidUrl("holds a masked credential (***) for another scheme, host or port: give the credential itself")
    password = parts.password
    if password == MASK:
        if old.password is None:
            raise InvalidUrl("holds a masked password (***) and none is stored: give the password itself")
        password = old.password
    pairs = list(parts.pairs or ())
    stored_values: dict[str, list[str]] = {}
    for _, key, value in old.credentials():
        stored_values.setdefault(key, []).append(value)
    for index, key in masked_pairs:
        values = stored_values.get(key)
        if not values:
            raise InvalidUrl(f"holds a masked {key} (***) and none is stored: give it itself")
        pairs[index] = pairs[index].partition("=")[0] + "=" + values.pop(0)
    return str(attrs.evolve(parts, password=password, pairs=pairs if parts.pairs is not None else None))


def place(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) a URL connects to, lower case, the scheme's default port filled
    in (554 for an unknown scheme); raises ValueError for a port that is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 554)


def _place(url: str) -> tuple[str, str, int | None]:
    try:
        return place(url)
    except ValueError:
        return ("", url, None)


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

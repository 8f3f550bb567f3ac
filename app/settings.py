"""Settings from the environment (SPEC §2), validated all at once at start-up.

A bad value stops start-up with one line naming every bad variable (exit code 2).
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from collections.abc import Callable, Mapping
from typing import NewType
from urllib.parse import urlsplit

import attrs
import cattrs

from supervisors import mask_text
from supervisors.camera.onvif import parse_address
from supervisors.camera.sources import InvalidSource, SourcePolicy

from .accounts.passwords import DEFAULT_PROFILE, PROFILES
from .policy.limits import parse_networks
from .policy.origins import LOOPBACK_BINDS, origin_of
from .policy.validation import FieldError, field_errors

Timeout = NewType("Timeout", float)  # 1 … 300 s
Linger = NewType("Linger", float)  # 0 … 3600 s
Count = NewType("Count", int)  # 1 … 100000
Port = NewType("Port", int)
LogLevel = NewType("LogLevel", str)
LogFormat = NewType("LogFormat", str)
DatabaseUrl = NewType("DatabaseUrl", str)
Secret = NewType("Secret", str)
File = NewType("File", str)  # a readable file's path
Origins = NewType("Origins", tuple[str, ...])  # CORS_ORIGINS: "*" or origins, comma-separated
Hosts = NewType("Hosts", tuple[str, ...])  # ALLOWED_HOSTS: "*" or host names, comma-separated
Sources = NewType("Sources", tuple[str, ...])  # ALLOWED_SOURCES: CIDRs and host names, comma-separated
Switch = NewType("Switch", str)  # true | false | auto
Networks = NewType("Networks", tuple[str, ...])  # TRUSTED_PROXIES: CIDRs, comma-separated
NodeUrl = NewType("NodeUrl", str)  # NODE_URL: http(s)://host:port
NodeId = NewType("NodeId", str)  # NODE_ID: 1-64 of A-Z a-z 0-9 . _ -
Lease = NewType("Lease", float)  # LEASE_SECONDS: 1 … 300
ProbeAddress = NewType("ProbeAddress", str)  # DISCOVERY_ADDRESS: host:port
PasswordHash = NewType("PasswordHash", str)  # PASSWORD_HASH: a profile of app/accounts/passwords.py
SessionTime = NewType("SessionTime", float)  # SESSION_IDLE_TIMEOUT, SESSION_MAX_AGE: 60 s … a year
Rate = NewType("Rate", tuple[float, float])  # RATE_LIMIT: "rate/burst" per second, or off  # 16+ URL-safe characters: it travels in URLs and subprotocols
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@attrs.frozen
class Settings:
    ffmpeg_timeout: Timeout = Timeout(10.0)
    max_concurrent_streams: Count = Count(10)
    max_streams_per_client: Count = Count(5)
    host: str = "127.0.0.1"
    port: Port = Port(8000)
    database_url: DatabaseUrl = DatabaseUrl("sqlite:///data/streams.db")
    ffmpeg_bin: str = ""  # empty: the binary bundled with imageio-ffmpeg
    linger: Linger = Linger(5.0)
    log_level: LogLevel = LogLevel("INFO")
    log_format: LogFormat = LogFormat("text")
    api_token: Secret = Secret("")  # "": no access control
    metrics_token: Secret = Secret("")  # "": /metrics is behind API_TOKEN (if set)
    cors_origins: Origins = Origins(())  # (): same origin only
    allowed_hosts: Hosts = Hosts(())  # (): loopback names when bound to loopback, else any
    allow_url_streams: Switch = Switch("auto")  # auto: only without API_TOKEN, bound to loopback
    allowed_sources: Sources = Sources(())  # (): any address but link-local and metadata
    trusted_proxies: Networks = Networks(())  # (): X-Forwarded-For is never read
    rate_limit: Rate = Rate((20.0, 40.0))  # (0, 0): off
    max_connections_per_client: Count = Count(20)
    start_within: Timeout = Timeout(60.0)  # a socket that sends no start by then is closed
    certfile: File = File("")  # with KEYFILE: Hypercorn serves HTTPS and WSS itself
    keyfile: File = File("")

    @property
    def url_streams(self) -> bool:
        """Whether `?url=` may play (ALLOW_URL_STREAMS, or its automatic default)."""
        if self.allow_url_streams != "auto":
            return self.allow_url_streams == "true"
        return not self.api_token and self.host.lower() in LOOPBACK_BINDS

    def source_policy(self) -> SourcePolicy:
        return SourcePolicy.parse(self.allowed_sources)
    secret_key: Secret = Secret("")  # "": a key kept beside the database (SQLite only)
    node_url: NodeUrl = NodeUrl("")  # "": http://HOST:PORT (cluster: how other nodes reach this one)
    node_id: NodeId = NodeId("")  # "": host-port of NODE_URL, a name stable across restarts
    lease_seconds: Lease = Lease(10.0)  # a dead owner's camera is taken over this long after
    session_idle_timeout: SessionTime = SessionTime(12 * 3600.0)  # a sign-in unused this long ends
    session_max_age: SessionTime = SessionTime(7 * 24 * 3600.0)  # and this long after the login, however used
    password_hash: PasswordHash = PasswordHash(DEFAULT_PROFILE)  # Argon2id's cost (app/accounts/passwords.py)
    discovery_address: ProbeAddress = ProbeAddress("239.255.255.250:3702")  # where WS-Discovery probes go

    @property
    def database_path(self) -> str:
        """The SQLite file ("" for PostgreSQL)."""
        return self.database_url.removeprefix("sqlite:///") if self.database_url.startswith("sqlite:///") else ""

    @property
    def postgres(self) -> bool:
        return not self.database_url.startswith("sqlite:///")

    def ffmpeg(self) -> str:
        if self.ffmpeg_bin:
            return self.ffmpeg_bin
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())


Hook = Callable[[object, object], object]


def _number(kind: type, low: float, high: float) -> Hook:
    def hook(value: object, _: object) -> object:
        try:
            number = kind(str(value).strip())
        except ValueError:
            raise FieldError(f"must be {'an integer' if kind is int else 'a number'}") from None
        if not low <= number <= high:  # NaN fails too
            raise FieldError(f"must be {low:g}-{high:g}")
        return number

    return hook


def _choice(choices: tuple[str, ...], *, upper: bool) -> Hook:
    def hook(value: object, _: object) -> str:
        text = str(value).strip()
        text = text.upper() if upper else text.lower()
        if text not in choices:
            raise FieldError(f"must be one of {', '.join(choices)}")
        return text

    return hook


def _secret(value: object, _: object) -> str:
    text = str(value).strip()
    if len(text) < 16 or not re.fullmatch(r"[A-Za-z0-9._~-]+", text):
        raise FieldError("must be 16 or more characters of A-Z a-z 0-9 . _ ~ -")
    return text


def _list(value: object) -> tuple[str, ...]:
    items = tuple(item.strip() for item in str(value).split(",") if item.strip())
    if "*" in items and len(items) > 1:
        raise FieldError("must be * alone or a list")
    return items


def _origins(value: object, _: object) -> tuple[str, ...]:
    items = _list(value)
    normal = tuple(item if item == "*" else origin_of(item) for item in items)
    bad = [item for item, norm in zip(items, normal, strict=True) if norm is None]
    if bad:
        raise FieldError(f"must be * or origins like https://example.com (not {bad[0]!r})")
    return normal  # type: ignore[return-value]


def _hosts(value: object, _: object) -> tuple[str, ...]:
    items = _list(value)
    bad = [item for item in items if item != "*" and not re.fullmatch(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]", item)]
    if bad:
        raise FieldError(f"must be * or host names like example.com (not {bad[0]!r})")
    return tuple(item.lower() for item in items)


def _sources(value: object, _: object) -> tuple[str, ...]:
    items = _list(value)
    try:
        SourcePolicy.parse(items)
    except InvalidSource as error:
        raise FieldError(f"must be networks (10.0.0.0/8) or host names: {error}") from None
    return items


def _networks(value: object, _: object) -> tuple[str, ...]:
    items = _list(value)
    try:
        parse_networks(items)
    except ValueError as error:
        raise FieldError(str(error)) from None
    return items


def _rate(value: object, _: object) -> tuple[float, float]:
    text = str(value).strip().lower()
    if text in ("0", "off", "false", "no"):
        return (0.0, 0.0)
    rate, _, burst = text.partition("/")
    try:
        numbers = (float(rate), float(burst or rate))
    except ValueError:
        raise FieldError("must be rate/burst per second (20/40), or off") from None
    if not all(1 <= n <= 100_000 for n in numbers):
        raise FieldError("rate and burst must be 1-100000")
    return numbers


def _switch(value: object, _: object) -> str:
    text = str(value).strip().lower()
    words = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}
    text = words.get(text, text)
    if text not in ("true", "false", "auto"):
        raise FieldError("must be true, false or auto")
    return text


def _file(value: object, _: object) -> str:
    path = str(value).strip()
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise FieldError(f"cannot be read: {error.strerror}") from None
    return path


def _database_url(value: object, _: object) -> str:
    text = str(value).strip()
    if text.startswith("sqlite:///") and text != "sqlite:///":
        return text
    scheme = text.partition("://")[0]
    if scheme in ("postgresql", "postgres") and urlsplit(text).hostname and urlsplit(text).path.strip("/"):
        return text
    raise FieldError("must be sqlite:///<path> (or sqlite:///:memory:) or postgresql://user:pass@host:port/db")


def _node_url(value: object, _: object) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path or parts.query:
        raise FieldError("must be http://host:port (how other nodes reach this one)")
    return text


def _node_id(value: object, _: object) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise FieldError("must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return text


def _probe_address(value: object, _: object) -> str:
    try:
        host, port = parse_address(str(value))
    except ValueError:
        raise FieldError("must be host:port (239.255.255.250:3702: the LAN's WS-Discovery group)") from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_structure_hook(Timeout, _number(float, 1, 300))
converter.register_structure_hook(Linger, _number(float, 0, 3600))
converter.register_structure_hook(Count, _number(int, 1, 100_000))
converter.register_structure_hook(Port, _number(int, 0, 65535))
converter.register_structure_hook(LogLevel, _choice(LEVELS, upper=True))
converter.register_structure_hook(LogFormat, _choice(("text", "json"), upper=False))
converter.register_structure_hook(DatabaseUrl, _database_url)
converter.register_structure_hook(NodeUrl, _node_url)
converter.register_structure_hook(NodeId, _node_id)
converter.register_structure_hook(Lease, _number(float, 1, 300))
converter.register_structure_hook(SessionTime, _number(float, 60, 366 * 24 * 3600))
converter.register_structure_hook(PasswordHash, _choice(tuple(PROFILES), upper=False))
converter.register_structure_hook(ProbeAddress, _probe_address)
converter.register_structure_hook(Secret, _secret)
converter.register_structure_hook(Origins, _origins)
converter.register_structure_hook(Hosts, _hosts)
converter.register_structure_hook(Sources, _sources)
converter.register_structure_hook(Switch, _switch)
converter.register_structure_hook(Networks, _networks)
converter.register_structure_hook(Rate, _rate)
converter.register_structure_hook(File, _file)


class SettingsError(Exception):
    """Bad variables; str() is the one line to print."""


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from `environ` (default: the process environment).

    Raises SettingsError naming every bad variable (and a CERTFILE and KEYFILE that are
    not a pair TLS can load)."""
    environ = os.environ if environ is None else environ
    names = {f.name: f.name.upper() for f in attrs.fields(Settings)}
    given = {name: environ[var] for name, var in names.items() if environ.get(var, "") != ""}
    try:
        settings = converter.structure(given, Settings)
    except cattrs.ClassValidationError as error:
        bad = field_errors(error)
        shown = {k: "***" if k in ("api_token", "metrics_token", "secret_key") else repr(mask_text(str(v)))
                 for k, v in given.items()}
        detail = "; ".join(f"{names.get(k, k)}={shown.get(k, '')} {msg}" for k, msg in bad.items())
        raise SettingsError(f"invalid settings: {detail}") from None
    if settings.postgres and not settings.secret_key:
        raise SettingsError("invalid settings: SECRET_KEY is required with a PostgreSQL DATABASE_URL "
                            "(the nodes of a cluster sign play tokens and each other's requests with it)")
    if bool(settings.certfile) != bool(settings.keyfile):
        raise SettingsError("invalid settings: CERTFILE and KEYFILE go together (HTTPS needs both)")
    if settings.certfile:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.certfile, settings.keyfile)
        except (ssl.SSLError, OSError) as error:
            raise SettingsError(f"invalid settings: CERTFILE and KEYFILE cannot be loaded: {error}") from None
    return settings


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    try:
        return load(environ)
    except SettingsError as error:
        print(f"rtsp-viewer: {error}", file=sys.stderr)
        raise SystemExit(2) from None

"""Finding cameras on the LAN: a WS-Discovery probe for ONVIF devices, then each
device's media profiles and their RTSP URLs (ONVIF Media `GetProfiles` and
`GetStreamUri`), with WS-UsernameToken digest credentials when given.

Everything a device sends is untrusted. Its XML is parsed by defusedxml (no DTD, so no
entities and no external references) and only up to MAX_MESSAGE bytes; every request
has a time limit; no redirect is followed; and each address a device names (its service,
its media service, its stream) is checked against ALLOWED_SOURCES (`SourcePolicy`), as
a camera's is, before it is asked anything. A device's own text never reaches the
caller: a failure is one of a few fixed messages (`Device.error`).

The SOAP here is the little ONVIF needs for this, in this one module (no maintained
ONVIF client runs on Trio: python-onvif-zeep is synchronous, onvif-zeep-async asyncio).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from xml.etree.ElementTree import Element

import attrs
import httpx
import trio
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from ..events import Failure
from .sources import ANY_SOURCE, SourcePolicy
from .urls import mask_url

MULTICAST = ("239.255.255.250", 3702)
MAX_MESSAGE = 256 * 1024  # bytes read of any answer (a datagram is at most 64 KiB anyway)
MAX_DEVICES = 64
MAX_PROFILES = 16
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"

# what a caller is told, never the device's own words
NO_ANSWER = "no answer in time"
UNREADABLE = "not an ONVIF answer (unreadable, too large, or with a DTD)"
NEEDS_CREDENTIALS = "needs credentials (--user and --password)"
REFUSED_CREDENTIALS = "refused the credentials"
NO_MEDIA = "offers no media profile"


@attrs.frozen
class Profile:
    name: str
    token: str
    width: int | None
    height: int | None
    url: str | None  # the RTSP URL as the device gives it (without credentials), or None
    error: str | None = None  # why it has none

    def json(self) -> dict[str, object]:
        """As the API shows it: the URL masked (`mask_url`)."""
        return {**attrs.asdict(self), "url": None if self.url is None else mask_url(self.url)}


@attrs.frozen
class Device:
    name: str
    address: str  # the host of its service address
    xaddr: str  # its device service URL
    profiles: tuple[Profile, ...] = ()
    error: str | None = None  # why its profiles could not be read

    def json(self) -> dict[str, object]:
        return {**attrs.asdict(self, recurse=False), "profiles": [p.json() for p in self.profiles]}


@attrs.frozen
class Credentials:
    user: str
    password: str


class Unanswered(Exception):
    """A device did not give what was asked; str() is one of the fixed messages above."""


def _clean(text: str, limit: int = 200) -> str:
    """A device's name for a person to read: printable characters only (no terminal
    escapes, no line breaks), at most `limit` of them."""
    return "".join(c for c in text if c.isprintable())[:limit].strip()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _all(root: Element, name: str) -> Iterator[Element]:
    return (e for e in root.iter() if _local(e.tag) == name)


def _first(root: Element, name: str) -> Element | None:
    return next(_all(root, name), None)


def _text(root: Element | None, name: str) -> str:
    found = None if root is None else _first(root, name)
    return (found.text or "").strip() if found is not None else ""


def parse(data: bytes) -> Element:
    """A device's XML, or Unanswered(UNREADABLE): too large, malformed, or with a DTD
    (entities and external references are refused with it)."""
    if len(data) > MAX_MESSAGE:
        raise Unanswered(UNREADABLE)
    try:
        root: Element = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, UnicodeError, RecursionError):
        raise Unanswered(UNREADABLE) from None
    return root


def probe_message() -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="{NS['s']}" xmlns:a="{NS['a']}" xmlns:d="{NS['d']}" xmlns:dn="{NS['dn']}">
<s:Header><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>
<a:To s:mustUnderstand="true">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>
<a:Action s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action></s:Header>
<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>""".encode()


def probe_matches(data: bytes) -> list[tuple[str, str]]:
    """(device service URL, name) of each device a ProbeMatches datagram names; [] for
    anything else. The name is the scope `onvif://www.onvif.org/name/…`, else the
    hardware scope."""
    try:
        root = parse(data)
    except Unanswered:
        return []
    found = []
    for match in _all(root, "ProbeMatch"):
        scopes = _text(match, "Scopes").split()
        named = {kind: unquote(s.rsplit("/", 1)[-1]) for s in scopes for kind in ("name", "hardware")
                 if s.startswith(f"onvif://www.onvif.org/{kind}/")}
        name = _clean(named.get("name") or named.get("hardware") or "")
        for xaddr in _text(match, "XAddrs").split():
            try:
                parts = urlsplit(xaddr)
                if parts.scheme in ("http", "https") and parts.hostname and xaddr.isprintable():
                    found.append((xaddr, name))
            except ValueError:  # "http://[zz": not a URL
                continue
    return found


def security_header(credentials: Credentials, *, now: datetime | None = None, nonce: bytes | None = None) -> str:
    """WS-UsernameToken with PasswordDigest = Base64(SHA-1(nonce + created + password))."""
    nonce = nonce or secrets.token_bytes(16)
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + credentials.password.encode()).digest())  # noqa: S324
    return (f'<wsse:Security s:mustUnderstand="1" xmlns:wsse="{NS["wsse"]}" xmlns:wsu="{NS["wsu"]}">'
            f"<wsse:UsernameToken><wsse:Username>{_escape(credentials.user)}</wsse:Username>"
            f'<wsse:Password Type="{DIGEST}">{digest.decode()}</wsse:Password>'
            f'<wsse:Nonce EncodingType="{BASE64}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
            f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def envelope(body: str, credentials: Credentials | None) -> bytes:
    header = f"<s:Header>{security_header(credentials)}</s:Header>" if credentials else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{NS["s"]}" xmlns:tds="{NS["tds"]}" '
            f'xmlns:trt="{NS["trt"]}" xmlns:tt="{NS["tt"]}">{header}<s:Body>{body}</s:Body></s:Envelope>').encode()


@attrs.define
class Asker:
    """SOAP requests to one device, each within `timeout` seconds, to checked addresses only."""

    http: httpx.AsyncClient
    policy: SourcePolicy
    credentials: Credentials | None
    timeout: float

    async def checked(self, url: str) -> str:
        """`url`, if its host is one ALLOWED_SOURCES allows; raises Unanswered."""
        if not url.isprintable() or any(c.isspace() for c in url) or len(url) > 2000:
            raise Unanswered(UNREADABLE)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (a port that is no number raises here)
        except ValueError:
            raise Unanswered(UNREADABLE) from None
        if parts.scheme not in ("http", "https", "rtsp", "rtsps") or not parts.hostname:
            raise Unanswered(UNREADABLE)
        try:
            await self.policy.resolve(parts.hostname, parts.port or 0)
        except Failure as refused:
            raise Unanswered(f"address refused: {refused.message}") from None
        return url

    async def ask(self, url: str, body: str) -> Element:
        """The answer's Body; raises Unanswered."""
        await self.checked(url)
        content = envelope(body, self.credentials)
        try:
            with trio.fail_after(self.timeout):
                async with self.http.stream("POST", url, content=content, headers={
                        "Content-Type": "application/soap+xml; charset=utf-8"}) as response:
                    data = b""
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_MESSAGE:
                            raise Unanswered(UNREADABLE)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise Unanswered(NO_ANSWER) from None
        except httpx.HTTPError:
            raise Unanswered(NO_ANSWER) from None
        if (response.status_code in (400, 401, 403, 500) and b"NotAuthorized" in data) or response.status_code == 401:
            raise Unanswered(REFUSED_CREDENTIALS if self.credentials else NEEDS_CREDENTIALS)
        root = parse(data)
        if response.status_code != 200 or _first(root, "Fault") is not None:
            raise Unanswered(UNREADABLE)
        return root


async def describe(asker: Asker, xaddr: str, name: str) -> Device:
    """The device at `xaddr`: its media profiles and their stream URLs, or why not."""
    address = urlsplit(xaddr).hostname or ""
    try:
        media = xaddr
        try:
            capabilities = await asker.ask(xaddr, "<tds:GetCapabilities><tds:Category>Media</tds:Category>"
                                                  "</tds:GetCapabilities>")
            media = _text(_first(capabilities, "Media"), "XAddr") or xaddr
        except Unanswered as unanswered:
            if str(unanswered) in (NO_ANSWER, NEEDS_CREDENTIALS, REFUSED_CREDENTIALS) or \
                    str(unanswered).startswith("address refused"):
                raise
        found = await asker.ask(media, "<trt:GetProfiles/>")
        profiles = []
        for element in list(_all(found, "Profiles"))[:MAX_PROFILES]:
            token = element.get("token") or ""
            resolution = _first(element, "Resolution")
            width, height = _text(resolution, "Width"), _text(resolution, "Height")
            profiles.append(await _profile(asker, media, token, _text(element, "Name") or token,
                                           _pixels(width), _pixels(height)))
        if not profiles:
            raise Unanswered(NO_MEDIA)
        return Device(name or address, address, xaddr, tuple(profiles))
    except Unanswered as unanswered:
        return Device(name or address, address, xaddr, error=str(unanswered))


def _pixels(text: str) -> int | None:
    """A size a device states: ASCII digits only (`isdigit` takes '²'), at most 5 of them."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


async def _profile(asker: Asker, media: str, token: str, name: str, width: int | None, height: int | None) -> Profile:
    try:
        answer = await asker.ask(media, "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
                                        "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
                                        f"<trt:ProfileToken>{_escape(token)}</trt:ProfileToken></trt:GetStreamUri>")
        url = await asker.checked(_text(answer, "Uri"))
        if urlsplit(url).scheme not in ("rtsp", "rtsps"):
            raise Unanswered(UNREADABLE)
    except Unanswered as unanswered:
        return Profile(_clean(name), _clean(token), width, height, None, str(unanswered))
    return Profile(_clean(name), _clean(token), width, height, url)


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port`); raises ValueError."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


async def discover(*, wait: float = 3.0, credentials: Credentials | None = None,
                   probe: tuple[str, int] = MULTICAST, policy: SourcePolicy = ANY_SOURCE) -> list[Device]:
    """Probe for ONVIF devices for `wait` seconds (multicast on the LAN, or at one
    address: `probe`), then describe each that answered, each request within `wait`
    seconds too. Devices in the order they answered. Raises Failure(FORBIDDEN) for a
    probe address ALLOWED_SOURCES refuses, Failure(UNREACHABLE) for one that does not
    resolve, OSError if no probe can be sent at all. Cancellation: nothing is left open."""
    target = probe
    if probe != MULTICAST:
        target = (str(await policy.resolve(probe[0], probe[1])), probe[1])
    found: dict[str, str] = {}
    family = socket.AF_INET6 if ipaddress.ip_address(target[0]).version == 6 else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as udp:
        loopback = ipaddress.ip_address(target[0]).is_loopback
        await udp.bind((("::1" if family == socket.AF_INET6 else "127.0.0.1") if loopback else "", 0))
        if target == MULTICAST:
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # the LAN only
        await udp.sendto(probe_message(), target)
        with trio.move_on_after(wait):
            while len(found) < MAX_DEVICES:
                data, _ = await udp.recvfrom(65535)
                for xaddr, name in probe_matches(data)[:MAX_DEVICES - len(found)]:  # one datagram may list many
                    found.setdefault(xaddr, name)
    devices: list[Device | None] = [None] * len(found)
    async with httpx.AsyncClient(follow_redirects=False, verify=False, trust_env=False) as http:  # noqa: S501  (cameras' own certificates)
        asker = Asker(http, policy, credentials, wait)

        async def one(index: int, xaddr: str, name: str) -> None:
            devices[index] = await describe(asker, xaddr, name)

        async with trio.open_nursery() as nursery:
            for index, (xaddr, name) in enumerate(found.items()):
                nursery.start_soon(one, index, xaddr, name)
    return [d for d in devices if d is not None]


def with_credentials(url: str, credentials: Credentials | None) -> str:
    """An RTSP URL with the user and password in it (to register it as a stream)."""
    if credentials is None:
        return url
    parts = urlsplit(url)
    userinfo = f"{quote(credentials.user, safe='')}:{quote(credentials.password, safe='')}@"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, userinfo + host, parts.path, parts.query, parts.fragment))


"""Which camera addresses an upstream may connect to (ALLOWED_SOURCES).

Checked at every start, after DNS resolution, so a name cannot be pointed somewhere else
between the check and the connection: FFmpeg is then given the address that was checked
(rtsp:// only; rtsps:// keeps the name its certificate is for). Link-local and cloud
metadata addresses are refused unless a listed network holds them: a camera is never
there, and a metadata service hands out credentials. A camera's RTSP redirect is checked
as FFmpeg announces it (supervisors/ffmpeg.py). Pure, but `resolve` awaits DNS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence

import attrs
import trio

from ..events import ErrorCode, Failure
from .addresses import Address, Network, in_networks, normalise, parse_network

REFUSED = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128", "0.0.0.0/8", "::/128"))
RESOLVE_TIMEOUT = 5.0
_NUMERIC = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label that makes a name an address to inet_aton (0x7f.1)


class InvalidSource(ValueError):
    """An ALLOWED_SOURCES entry that is neither a network nor a host name."""


@attrs.frozen
class SourcePolicy:
    networks: tuple[Network, ...] = ()
    names: tuple[str, ...] = ()  # "cam.local", or ".example.com" for every name under it
    listed: bool = False  # False: ALLOWED_SOURCES unset, any address but REFUSED

    @classmethod
    def parse(cls, entries: Sequence[str]) -> SourcePolicy:
        """From ALLOWED_SOURCES entries (CIDRs, addresses, host names); raises InvalidSource."""
        networks: list[Network] = []
        names: list[str] = []
        for entry in entries:
            try:
                networks.append(parse_network(entry))
            except ValueError:
                name = entry.lower().rstrip(".")
                labels = name.lstrip(".").split(".")
                if not name or not all(part.isascii() and (part.isalnum() or "-" in part) for part in labels) \
                        or _NUMERIC.fullmatch(labels[-1]):  # no top-level domain is a number
                    raise InvalidSource(f"{entry!r} is neither a network nor a host name") from None
                names.append(name)
        return cls(tuple(networks), tuple(names), listed=bool(entries))

    def refusal(self, host: str, addresses: Sequence[Address]) -> str | None:
        """Why connecting to `host` at these addresses is refused, or None. Each address
        is judged in its one spelling (`addresses.normalise`): the IPv4 address it carries."""
        host = host.lower().rstrip(".")
        named = any(host == n or (n.startswith(".") and host.endswith(n)) for n in self.names)
        for given in addresses:
            address = normalise(given)
            in_listed = in_networks(address, self.networks)
            if in_networks(address, REFUSED) and not in_listed:
                return f"{given} is a link-local or metadata address"
            if self.listed and not (in_listed or named):
                return f"{host} ({given}) is not in ALLOWED_SOURCES"
        return None

    async def resolve(self, host: str, port: int) -> Address:
        """The address to connect to, checked; raises Failure (FORBIDDEN, or UNREACHABLE
        if the name does not resolve in RESOLVE_TIMEOUT seconds)."""
        try:
            with trio.fail_after(RESOLVE_TIMEOUT):
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, trio.TooSlowError):
            raise Failure(ErrorCode.UNREACHABLE, f"cannot resolve {host}") from None
        found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
        addresses = sorted(found, key=lambda a: (a.version, a))  # IPv4 first, as most cameras are
        why = self.refusal(host, addresses)
        if why is not None:
            raise Failure(ErrorCode.FORBIDDEN, f"source refused: {why}")
        return addresses[0]


ANY_SOURCE = SourcePolicy()  # ALLOWED_SOURCES unset: any address but REFUSED

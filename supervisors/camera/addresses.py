"""One spelling per IP address: every address that a policy looks at is normalised here.

An IPv6 address may carry an IPv4 address, and reach it: IPv4-mapped (`::ffff:a.b.c.d`,
what a dual-stack listener reports for an IPv4 peer), IPv4-compatible (`::a.b.c.d`), the
NAT64 well-known prefix (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002:AABB:CCDD::/48`, RFC
3056). Each is the IPv4 address it carries, for the source policy (ALLOWED_SOURCES and the
always-refused link-local and metadata addresses), for TRUSTED_PROXIES and for the client
keys of the per-client limits; so is a network written in one of those forms. A zone
(`fe80::1%eth0`) is not part of the address. Pure functions; nothing here awaits.

Per-client limits key an IPv6 client by its /64: one host is routinely given a whole /64
and can speak from any address in it.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN_CLIENT = "unknown"  # the client key of a peer whose address the server was not given
CLIENT_PREFIX = 64  # an IPv6 client is its /64

# (IPv6 prefix, its length): the IPv4 address sits in the 32 bits after the prefix
_EMBEDDING = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), 96),  # mapped
    (ipaddress.IPv6Network("64:ff9b::/96"), 96),  # NAT64
    (ipaddress.IPv6Network("2002::/16"), 16),  # 6to4 (the rest is the site's subnet and host)
    (ipaddress.IPv6Network("::/96"), 96),  # compatible (deprecated), but for :: and ::1
)


def _carried(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it carries one."""
    if int(address) <= 1:  # :: and ::1 are IPv6's own
        return None
    for prefix, length in _EMBEDDING:
        if address in prefix:
            return ipaddress.IPv4Address((int(address) >> (96 - length)) & 0xFFFFFFFF)
    return None


def normalise(address: Address) -> Address:
    """The address in its one spelling: the IPv4 address it carries, without a zone."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    carried = _carried(address)
    if carried is not None:
        return carried
    return ipaddress.IPv6Address(int(address)) if address.scope_id else address


def parse_address(text: str) -> Address | None:
    """An address as written in a URL host, a header or a peer (`[::1]`, `fe80::1%eth0`),
    normalised; None if it is not an IP address."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return normalise(ipaddress.ip_address(text.partition("%")[0]))
    except ValueError:
        return None


def normalise_network(network: Network) -> Network:
    """A network in the same spelling as the addresses in it: a network inside one of the
    IPv4-carrying prefixes, taken whole (`::ffff:10.0.0.0/104`), is the IPv4 network."""
    if isinstance(network, ipaddress.IPv6Network):
        for prefix, length in _EMBEDDING:
            if network.subnet_of(prefix) and network.prefixlen >= length:
                bits = min(32, network.prefixlen - length)
                if length == 96 and int(network.network_address) <= 1 and bits == 32:
                    break  # ::/128 and ::1/128 are IPv6's own
                carried = (int(network.network_address) >> (96 - length)) & 0xFFFFFFFF
                return ipaddress.IPv4Network((carried >> (32 - bits) << (32 - bits), bits))
    return network


def parse_network(entry: str) -> Network:
    """A network (`10.0.0.0/8`) or an address (`[::1]` too) as a network, normalised;
    raises ValueError."""
    return normalise_network(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))


def in_networks(address: Address, networks: tuple[Network, ...] | list[Network]) -> bool:
    """Whether a (normalised) address is in any of the (normalised) networks."""
    return any(address in network for network in networks)


def client_key(address: Address | None) -> str:
    """What the per-client limits count a client by: its IPv4 address, or its IPv6 /64."""
    if address is None:
        return UNKNOWN_CLIENT
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, CLIENT_PREFIX), strict=False))
    return str(address)

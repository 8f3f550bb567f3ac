"""Who a request comes from, and how much one client may ask.

- The client's address: the peer's, or, from a proxy in TRUSTED_PROXIES, the rightmost
  `X-Forwarded-For` hop that is not itself a trusted proxy (the one the proxy saw); in
  its one spelling (`supervisors.addresses`: `::ffff:10.0.0.1` is 10.0.0.1). The limits
  count a client by its key: its IPv4 address, or its IPv6 /64.
- RATE_LIMIT: a token bucket per address (`rate/burst`, per second) for REST requests,
  socket connects and socket actions; `retry_after` says how long until the next token.
- MAX_CONNECTIONS_PER_CLIENT: open sockets and HTTP streams per address; and a cap on
  all of them below the process's file-descriptor limit, so health still answers when a
  crowd holds every socket it may.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

import attrs
import trio

from supervisors.camera.addresses import (
    UNKNOWN_CLIENT,
    Network,
    client_key,
    in_networks,
    parse_address,
    parse_network,
)

MAX_TRACKED = 10_000  # buckets kept: the least recently used go first (they are full by then)
FD_RESERVE = 64  # descriptors kept for HTTP requests (health), FFmpeg pipes and the database


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs or addresses; raises ValueError naming a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(parse_network(entry))
        except ValueError:
            raise ValueError(f"{entry!r} is not a network (10.0.0.0/8) or an address") from None
    return tuple(networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: tuple[Network, ...]) -> str:
    """The address a request comes from, in its one spelling (see module docstring), or
    UNKNOWN_CLIENT when the server was not given the peer's."""
    address = parse_address(peer or "")
    if address is None:
        return UNKNOWN_CLIENT
    if not in_networks(address, trusted):
        return str(address)
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:  # not an address: the proxy did not write it
            break
        if not in_networks(hop_address, trusted):
            return str(hop_address)
    return str(address)


def over_https(scheme: str, peer: str | None, forwarded_proto: str | None, trusted: tuple[Network, ...]) -> bool:
    """Whether the client's request came over HTTPS: to this server, or to a proxy in
    TRUSTED_PROXIES that says so (`X-Forwarded-Proto: https`)."""
    if scheme in ("https", "wss"):
        return True
    address = parse_address(peer or "")
    if address is None or not in_networks(address, trusted):
        return False
    return (forwarded_proto or "").split(",")[0].strip().lower() == "https"


def limit_key(client: str) -> str:
    """What RATE_LIMIT and the connection caps count a client (`client_address`) by."""
    return client_key(parse_address(client))


class Limited(Exception):
    """Over a limit; `retry_after` seconds until the next try may pass (0: not a rate)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


@attrs.define
class RateLimiter:
    rate: float  # tokens per second; 0: no limit
    burst: float
    clock: Callable[[], float] = trio.current_time  # seconds; tests move it instead of waiting for a refill
    _buckets: OrderedDict[str, tuple[float, float]] = attrs.Factory(OrderedDict)  # client -> (tokens, at)

    what: str = "RATE_LIMIT"  # how its refusals name it

    def take(self, client: str) -> None:
        """Spend one of the client's tokens; raises Limited if it has none."""
        self._spend(client, 1)

    def check(self, client: str) -> None:
        """Raise Limited if the client has no token now; spend none."""
        self._spend(client, 0)

    def _spend(self, client: str, cost: int) -> None:
        if not self.rate:
            return
        now = self.clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            raise Limited(f"over {self.what} ({self.rate:g}/s, burst {self.burst:g})", (1 - tokens) / self.rate)
        self._buckets[client] = (tokens - cost, now)
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)


@attrs.define
class Connections:
    per_client: int
    total: int  # every client's together (below the fd limit)
    _open: Counter[str] = attrs.Factory(Counter)
    _held: int = 0  # the sum of `_open`, kept as it changes: summing it per socket is O(clients)

    def hold(self, client: str) -> Held:
        """`with`: one open socket or stream for the client while the block runs; entering
        raises Limited."""
        return Held(self, client)

    def take(self, client: str) -> None:
        """One more socket or stream for the client; raises Limited."""
        if self._held >= self.total:
            raise Limited(f"the server holds as many sockets as it may ({self.total})")
        if self._open[client] >= self.per_client:
            raise Limited(f"MAX_CONNECTIONS_PER_CLIENT ({self.per_client}) reached for this client")
        self._open[client] += 1
        self._held += 1

    def give(self, client: str) -> None:
        """One socket or stream of the client's has ended."""
        self._held -= 1
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


class Held:
    """A client's share of `Connections` while a `with` block runs (a class: a socket
    holds it for its whole life, and a generator's frame is about ten times the size)."""

    __slots__ = ("_client", "_connections")

    def __init__(self, connections: Connections, client: str) -> None:
        self._connections = connections
        self._client = client

    def __enter__(self) -> None:
        self._connections.take(self._client)

    def __exit__(self, *_: object) -> None:
        self._connections.give(self._client)


def socket_cap(soft_limit: int) -> int:
    """How many sockets and streams to hold at most with this many file descriptors."""
    return max(16, soft_limit - max(FD_RESERVE, soft_limit // 10))

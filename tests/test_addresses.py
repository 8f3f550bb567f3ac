"""One spelling per address: the source policy, TRUSTED_PROXIES and the client keys give
the same answer for every way of writing one address (supervisors/camera/addresses.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy.limits import client_address, limit_key, parse_networks
from supervisors import ErrorCode, Failure
from supervisors.camera.addresses import client_key, normalise, parse_address
from supervisors.camera.sources import ANY_SOURCE, InvalidSource, SourcePolicy

METADATA = ipaddress.IPv4Address("169.254.169.254")


def spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address, tail: int) -> list[str]:
    """Ways to write one address as text: an IPv4 address also as the IPv6 addresses that
    carry it (mapped, NAT64, 6to4 with any site part, compatible); an IPv6 one compressed,
    exploded, in upper case; either in brackets."""
    if isinstance(address, ipaddress.IPv6Address):
        written = [address.compressed, address.exploded, address.compressed.upper()]
    else:
        n = int(address)
        hi, lo = n >> 16, n & 0xFFFF
        written = [str(address), f"::ffff:{address}", f"::ffff:{hi:x}:{lo:x}", f"0:0:0:0:0:FFFF:{hi:X}:{lo:X}",
                   f"64:ff9b::{address}", f"64:FF9B::{hi:x}:{lo:x}",
                   str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | (tail & ((1 << 80) - 1))))]
        if n > 1:  # ::0.0.0.0 and ::0.0.0.1 are IPv6's unspecified and loopback addresses
            written.append(f"::{address}")
    return written + [f"[{w}]" for w in written if ":" in w]


def as_resolved(spelling: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """What getaddrinfo hands the policy for a spelling (not normalised)."""
    return ipaddress.ip_address(spelling.strip("[]"))


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), st.just(METADATA),
                      st.sampled_from([ipaddress.IPv4Address(a) for a in ("127.0.0.1", "10.1.2.3", "100.100.100.200")]))
networks = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(8, 32)).map(lambda p: ipaddress.IPv4Network(p, strict=False)),
    st.tuples(st.ip_addresses(v=6), st.integers(16, 128)).map(lambda p: ipaddress.IPv6Network(p, strict=False)),
    st.sampled_from([ipaddress.ip_network(n) for n in ("169.254.0.0/16", "10.0.0.0/8", "127.0.0.0/8")]))


def network_spellings(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    if isinstance(network, ipaddress.IPv6Network):
        return [str(network)]
    return [str(network), f"::ffff:{network.network_address}/{96 + network.prefixlen}"]


@settings(max_examples=400, deadline=None)
@given(address=addresses, tail=st.integers(0, (1 << 80) - 1), listed=st.lists(networks, max_size=3),
       pick=st.randoms(use_true_random=False))
def test_every_spelling_of_an_address_gets_the_same_answer_from_every_policy(
        address: ipaddress.IPv4Address | ipaddress.IPv6Address, tail: int,
        listed: list[ipaddress.IPv4Network | ipaddress.IPv6Network], pick: object) -> None:
    written = spellings(address, tail)
    entries = [pick.choice(network_spellings(n)) for n in listed]  # type: ignore[attr-defined]
    policies = [ANY_SOURCE, SourcePolicy.parse(entries)]
    trusted = parse_networks(entries)
    answers = {
        (tuple(policy.refusal("camera", [as_resolved(w)]) is None for policy in policies),
         client_address(w, ["198.51.100.7"], trusted),  # the peer a proxy in TRUSTED_PROXIES?
         client_address("10.9.9.9", [w], parse_networks(["10.0.0.0/8"])),  # the hop a proxy names
         limit_key(client_address(w, [], ())))
        for w in written}
    assert len(answers) == 1, (written, answers)


@pytest.mark.parametrize("host", [
    "169.254.169.254", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::169.254.169.254",
    "2002:a9fe:a9fe::1", "2002:a9fe:a9fe:ffff::", "::169.254.169.254", "2852039166", "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0251.0376", "169.254.43518", "100.100.100.200", "::ffff:100.100.100.200"])
async def test_the_metadata_address_is_refused_however_it_is_written(host: str) -> None:
    """Through the resolver too (inet_aton reads decimal, hex and octal forms)."""
    with pytest.raises(Failure) as refused:
        await ANY_SOURCE.resolve(host, 554)
    assert refused.value.code == ErrorCode.FORBIDDEN


def test_an_ipv6_client_is_its_slash_64_and_an_ipv4_client_its_address() -> None:
    assert limit_key("2001:db8::1") == limit_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert limit_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert limit_key("::ffff:192.0.2.1") == limit_key("192.0.2.1") == "192.0.2.1"
    assert client_key(None) == limit_key("not an address") == "unknown"
    assert parse_address("fe80::1%eth0") == normalise(ipaddress.IPv6Address("fe80::1"))


@pytest.mark.parametrize("entry", ["10.0.0.010", "0x7f.1", "2852039166", ".1", "cam.0x10"])
def test_an_allowed_source_that_reads_as_a_number_is_not_taken_for_a_host_name(entry: str) -> None:
    """inet_aton reads `0x7f.1` as 127.0.0.1: as a host name it would let that through."""
    with pytest.raises(InvalidSource):
        SourcePolicy.parse([entry])


def test_networks_written_in_an_ipv6_form_that_carries_ipv4_are_the_ipv4_networks() -> None:
    assert parse_networks(["::ffff:10.0.0.0/104", "2002:c000:200::/40", "::1", "::/128"]) == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("::/128"))

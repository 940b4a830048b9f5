"""Whose address a request is counted under: the peer's, unless the peer is a trusted proxy; a
client can write anything into X-Forwarded-For and must not change the answer by it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pizzeria.kit.clientaddr import client_address, parse_networks
from pizzeria.kit.settings import Settings
from pizzeria.supervisor import gateway_proxies

TRUSTED = parse_networks("10.0.0.0/8, 2001:db8::/32")
PUBLIC_V4 = st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8")).map(str)
PROXIES = st.lists(st.ip_addresses(network="10.0.0.0/8").map(str), min_size=1, max_size=3)
#: Whatever a client may write into the header.
CLAIMS = st.lists(
    st.one_of(st.ip_addresses().map(str), st.text(max_size=20), st.just("unknown"), st.just("10.9.9.9")), max_size=4
)


@given(peer=st.ip_addresses().map(str), claims=CLAIMS)
def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says(peer: str, claims: list[str]) -> None:
    assert client_address(peer, [", ".join(claims)], ()) == peer


@given(peer=PUBLIC_V4, claims=CLAIMS)
def test_a_peer_that_is_not_a_trusted_proxy_is_the_client(peer: str, claims: list[str]) -> None:
    assert client_address(peer, [", ".join(claims)], TRUSTED) == peer


@given(client=PUBLIC_V4, claims=CLAIMS, proxies=PROXIES, split=st.booleans())
def test_behind_trusted_proxies_the_client_is_what_the_first_of_them_saw(
    client: str, claims: list[str], proxies: list[str], split: bool
) -> None:
    # The client wrote `claims`; the first proxy appended the client's address, each next proxy
    # the one before it; the last one is the peer.
    *appended_by_proxies, peer = [client, *proxies]
    chain = [*claims, *appended_by_proxies]
    headers = [", ".join(chain[:1]), ", ".join(chain[1:])] if split and chain else [", ".join(chain)]
    assert client_address(peer, headers, TRUSTED) == client


def test_an_entry_that_is_not_an_address_stops_at_the_proxy_that_appended_it() -> None:
    assert client_address("10.0.0.1", ["203.0.113.9, nonsense"], TRUSTED) == "10.0.0.1"
    assert client_address("10.0.0.1", [], TRUSTED) == "10.0.0.1"
    assert client_address("10.0.0.1", ["[2001:db8::1]:443, 198.51.100.2:8080"], TRUSTED) == "198.51.100.2"


def test_trusted_proxies_are_checked_when_the_settings_are_read() -> None:
    assert Settings(TRUSTED_PROXIES="").trusted_networks() == ()  # type: ignore[call-arg]
    assert len(Settings(TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8,::1").trusted_networks()) == 3  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(TRUSTED_PROXIES="gateway")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("host", "gateway_url", "trusted"),
    [
        ("127.0.0.1", None, "127.0.0.1,::1"),
        ("0.0.0.0", None, "127.0.0.1,::1"),
        ("192.168.1.20", None, "192.168.1.20"),
        ("127.0.0.1", "http://localhost:8000", "127.0.0.1,::1"),
        ("127.0.0.1", "http://gateway:8000", ""),
    ],
)
def test_pizzeria_up_has_the_services_trust_the_gateway_only(
    monkeypatch: pytest.MonkeyPatch, host: str, gateway_url: str | None, trusted: str
) -> None:
    if gateway_url:
        monkeypatch.setenv("GATEWAY_URL", gateway_url)
    else:
        monkeypatch.delenv("GATEWAY_URL", raising=False)
    assert gateway_proxies(Settings(PIZZERIA_HOST=host)) == trusted  # type: ignore[call-arg]

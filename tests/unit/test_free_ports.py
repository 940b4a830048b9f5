"""The tests' port picker: a port free when picked is taken only when its server binds it, so
the picker must never hand the same port out twice (two services of one system on one port:
one of them answered for the other)."""

from __future__ import annotations

import pytest

from tests.support import tcpproxy


def test_a_port_is_never_handed_out_twice_even_when_the_draw_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([20_000, 20_000, 20_100, 20_000, 20_200, 20_300])
    monkeypatch.setattr(tcpproxy._pick, "randint", lambda low, high: next(draws))
    monkeypatch.setattr(tcpproxy, "_handed_out", set())
    first = tcpproxy.free_port()
    second = tcpproxy.free_port()
    assert first == 20_000
    assert second == 20_100, "the second draw named the first port again: it must be passed over"
    # A range of replicas' ports overlapping one handed out is passed over too.
    assert tcpproxy.free_ports(2, 100) == 20_200  # 20_000 + 100 would take 20_100 again


def test_many_picks_are_all_different() -> None:
    picked = [tcpproxy.free_ports(2, 100) for _ in range(200)]
    ports = [p + 100 * n for p in picked for n in range(2)]
    assert len(set(ports)) == len(ports)

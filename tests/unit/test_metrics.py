"""Many observations of one value at once leave a histogram series as that many single ones."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from pizzeria.kit.metrics import LATENCY_BUCKETS, observe_many


def samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for metric in histogram.collect() for s in metric.samples]


@pytest.mark.parametrize("value", [0.0, 0.0004, 0.001, 0.0011, 0.05, 9.99, 10.0, 10.01, 120.0])
@pytest.mark.parametrize("count", [0, 1, 2, 37])
def test_many_observations_at_once_are_the_same_as_one_by_one(value: float, count: int) -> None:
    one_by_one = Histogram("t_seconds", "t", ["group"], buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    at_once = Histogram("t_seconds", "t", ["group"], buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    series = one_by_one.labels("orders")
    for _ in range(count):
        series.observe(value)
    observe_many(at_once.labels("orders"), value, count)
    assert [(n, labels, pytest.approx(v)) for n, labels, v in samples(at_once) if not n.endswith("_created")] == [
        (n, labels, v) for n, labels, v in samples(one_by_one) if not n.endswith("_created")
    ]
    assert any(n == "t_seconds_count" and v == count for n, _, v in samples(at_once))


def test_a_series_not_laid_out_as_a_histogram_is_observed_one_by_one() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    observe_many(plain, 0.25, 3)
    assert plain.seen == [0.25, 0.25, 0.25]

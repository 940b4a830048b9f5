"""UUIDv7 identifiers: RFC 9562 layout, time prefix, strictly increasing in one process."""

from __future__ import annotations

import itertools
import random
import time
import uuid

from pizzeria.kit import ids
from pizzeria.kit.ids import Uuid7Source, new_id, uuid7


def test_version_and_variant_bits() -> None:
    for _ in range(100):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 7
        assert (value.int >> 62) & 0b11 == 0b10


def test_strictly_increasing_over_ten_thousand_calls() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    as_text = [str(i) for i in ids]
    assert as_text == sorted(as_text)  # they sort as text too, as databases store them


def test_time_prefix_is_the_current_unix_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    prefix_ms = value.int >> 80
    # The counter may borrow a millisecond or two from the future when it runs out.
    assert before <= prefix_ms <= after + 5


def test_new_id_is_the_canonical_text_of_a_uuid7() -> None:
    text = new_id()
    assert str(uuid.UUID(text)) == text
    assert uuid.UUID(text).version == 7


def seeded_source(seed: int, now_ns: int) -> Uuid7Source:
    return Uuid7Source(now_ns=lambda: now_ns, entropy=random.Random(seed).randbytes)


def test_a_source_with_given_time_and_randomness_makes_the_same_ids_every_time() -> None:
    first, again = seeded_source(7, 1_900_000_000_123_456_789), seeded_source(7, 1_900_000_000_123_456_789)
    made = [first.next() for _ in range(5)]
    assert made == [again.next() for _ in range(5)]
    assert all(value.int >> 80 == 1_900_000_000_123 for value in made)
    assert all(a < b for a, b in itertools.pairwise(made))
    assert seeded_source(8, 1_900_000_000_123_456_789).next() != made[0]


def test_use_puts_a_source_in_place_for_the_block_only() -> None:
    expected = seeded_source(3, 1_900_000_000_000_000_000).next()
    with ids.use(seeded_source(3, 1_900_000_000_000_000_000)):
        assert uuid7() == expected
    assert uuid7().int >> 80 != 1_900_000_000_000  # the system's clock again


def test_new_id_is_the_text_of_the_uuid7_the_source_would_make() -> None:
    source = seeded_source(5, 1_900_000_000_000_000_000)
    expected = [str(source.next()) for _ in range(20)]
    with ids.use(seeded_source(5, 1_900_000_000_000_000_000)):
        assert [new_id() for _ in range(20)] == expected

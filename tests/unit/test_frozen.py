"""`quick_init`: the quicker `__init__` of a frozen, slotted dataclass makes the instance the
dataclass's own would, and leaves everything else of the dataclass as it was."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from pizzeria.kit.frozen import quick_init
from pizzeria.messaging.broker import OutgoingMessage, Record
from pizzeria.messaging.envelope import Envelope


@dataclass(frozen=True, slots=True)
class Plain:
    name: str
    count: int = 1
    tags: list[str] = field(default_factory=list)


@quick_init
@dataclass(frozen=True, slots=True)
class Quick:
    name: str
    count: int = 1
    tags: list[str] = field(default_factory=list)


def test_makes_what_the_dataclass_init_makes() -> None:
    for args, kwargs in [(("a",), {}), (("a", 2), {}), (("a",), {"tags": ["x"]}), ((), {"name": "a", "count": 3})]:
        quick, plain = Quick(*args, **kwargs), Plain(*args, **kwargs)
        assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
    assert Quick("a").tags == []
    assert Quick("a").tags is not Quick("a").tags  # a new list each


def test_same_signature_and_same_errors_for_bad_calls() -> None:
    assert list(inspect.signature(Quick).parameters) == list(inspect.signature(Plain).parameters)
    assert inspect.signature(Quick).parameters["count"].default == 1
    for bad in [lambda c: c(), lambda c: c("a", 1, [], 4), lambda c: c("a", colour="red")]:
        with pytest.raises(TypeError):
            bad(Quick)
        with pytest.raises(TypeError):
            bad(Plain)


def test_still_frozen_equal_hashable_replaceable_picklable_matchable() -> None:
    item = Quick("a", 2, ["x"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.count = 3  # type: ignore[misc]
    assert item == Quick("a", 2, ["x"])
    assert item != Quick("a", 3, ["x"])
    assert dataclasses.replace(item, count=5) == Quick("a", 5, ["x"])
    assert pickle.loads(pickle.dumps(item)) == item
    assert repr(item) == "Quick(name='a', count=2, tags=['x'])"
    match item:
        case Quick(name, count):
            assert (name, count) == ("a", 2)
        case _:
            pytest.fail("no match")


def test_the_messaging_types_have_it() -> None:
    record = Record("t", 1, 2, b"v", "k", {"ce_id": "1"}, 5)
    assert record.defects == ()
    assert record == Record("t", 1, 2, b"v", "k", {"ce_id": "1"}, 5, ())
    assert OutgoingMessage("t", b"v").headers == {}
    assert OutgoingMessage("t", b"v").key is None
    assert Envelope("i", "s", "t", b"d").time.tzinfo is not None
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert hash(Envelope("i", "s", "t", b"d", time=at)) == hash(Envelope("i", "s", "t", b"d", time=at))


def test_refuses_what_it_cannot_make_alike() -> None:
    @dataclass(slots=True)
    class Thawed:
        name: str

    @dataclass(frozen=True, slots=True)
    class Checked:
        name: str

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Keywords:
        name: str = field(kw_only=True)

    for cls in (Thawed, Checked, Keywords):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_a_class_with_an_init_var_is_refused() -> None:
    with pytest.raises(TypeError, match="InitVar"):

        @quick_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class WithInitVar:
            x: int
            y: dataclasses.InitVar[int] = 0

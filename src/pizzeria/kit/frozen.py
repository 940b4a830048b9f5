"""Frozen, slotted dataclasses that are cheap to make.

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__` by name,
several times what setting a slot costs; for the types made once or more for every message
(records, envelopes, outgoing messages) that is a share of a message's CPU. `quick_init` gives
such a class an `__init__` of the same signature (names, order, defaults, factories) that sets
each slot through its descriptor. All else stays the dataclass's own: assignment still raises
`FrozenInstanceError`; equality, hashing, repr, pattern matching, `dataclasses.replace` and
pickling are unchanged."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar, cast

T = TypeVar("T")


class _Missing:
    """An argument not given, whose field's `default_factory` makes the value."""

    def __repr__(self) -> str:
        return "<factory>"


_MISSING = _Missing()


def quick_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass `cls` the quicker `__init__` (see the module)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__, which the quicker __init__ would not call")
    # (an InitVar is no field, so `fields` leaves it out; annotations may still be text here)
    annotations = [kind for klass in cls.__mro__ for kind in inspect.get_annotations(klass).values()]
    if any("InitVar" in str(kind) for kind in annotations):
        raise TypeError(f"{cls.__name__} has an InitVar, which the quicker __init__ would not take")
    namespace: dict[str, Any] = {"_MISSING": _MISSING}
    arguments: list[str] = []
    body: list[str] = []
    for index, f in enumerate(dataclasses.fields(cast(Any, cls))):
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: only positional fields set by __init__ are supported")
        setter = f"_set{index}"
        namespace[setter] = getattr(cls, f.name).__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{index}"] = f.default
            arguments.append(f"{f.name}=_default{index}")
            body.append(f"{setter}(self, {f.name})")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{index}"] = f.default_factory
            arguments.append(f"{f.name}=_MISSING")
            body.append(f"{setter}(self, _factory{index}() if {f.name} is _MISSING else {f.name})")
        else:
            arguments.append(f.name)
            body.append(f"{setter}(self, {f.name})")
    source = f"def __init__(self, {', '.join(arguments)}) -> None:\n" + "".join(f"    {line}\n" for line in body)
    exec(source, namespace)  # as `dataclasses` makes its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010  (mypy: no assigning to a method)
    return cls

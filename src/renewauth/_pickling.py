"""A grant in a form pickle takes, and back: how an auth object's configuration crosses
processes (`TokenAuth.__reduce__`).

Grants are frozen dataclasses that may hold read-only mappings, which pickle refuses; here
they become their classes and fields, and are built again on the other side by their own
constructors, so each one validates what it receives. Nothing here knows an auth object
but by the names of its attributes.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

__all__ = ["Portable", "portable", "restored", "transient_attributes"]


def portable(value: object) -> object:
    """`value` in a picklable form: frozen dataclasses as their fields, read-only mappings
    (which pickle refuses) as dicts; `restored` turns it back."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            field.name: portable(getattr(value, field.name))
            for field in dataclasses.fields(value)
            if field.init
        }
        return Portable(type(value), fields)
    if isinstance(value, MappingProxyType):
        return Portable(None, dict(value))
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Portable:
    """A dataclass (`kind`) as the fields its constructor takes, or a read-only mapping."""

    kind: type | None  # None: a read-only mapping
    fields: dict[str, object]


def restored(value: object) -> object:
    """What `portable` was given, built again."""
    if not isinstance(value, Portable):
        return value
    if value.kind is None:
        return MappingProxyType(dict(value.fields))
    return value.kind(**{name: restored(item) for name, item in value.fields.items()})


def transient_attributes(cls: type) -> frozenset[str]:
    """What an auth object of `cls` keeps for this process only: its manager, and what each
    transport among its bases declares in `_TRANSIENT` (gates bound to event loops, …)."""
    declared = (vars(base).get("_TRANSIENT", frozenset()) for base in cls.__mro__)
    return frozenset({"_manager"}).union(*declared)

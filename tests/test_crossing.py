"""Objects that cross processes, or get copied, keep working.

A `Token` pickles and deep-copies whole, its read-only `raw` included.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from renewauth import Token


def _unpickled(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - our own bytes


def _pickled(value: Any) -> Any:
    return _unpickled(pickle.dumps(value))


COPIERS: dict[str, Callable[[Any], Any]] = {"pickle": _pickled, "deepcopy": copy.deepcopy}


# --- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("copier", list(COPIERS.values()), ids=list(COPIERS))
def test_token_copies_whole_with_its_read_only_raw_fields(copier: Callable[[Any], Any]) -> None:
    token = Token(
        access_token="access-value",
        expires_at=200.0,
        issued_at=100.0,
        refresh_token="refresh-value",
        refresh_expires_at=300.0,
        refresh_used_at=100.0,
        scope="read",
        api_origin="https://api.example.com",
        raw={"access_token": "access-value", "extra": {"nested": [1, 2]}},
    )
    copied: Token = copier(token)
    assert copied == token
    for field in dataclasses.fields(Token):  # every field, those added later too
        assert getattr(copied, field.name) == getattr(token, field.name), field.name
    assert isinstance(copied.raw, MappingProxyType)
    assert repr(copied) == repr(token)
    assert "access-value" not in repr(copied)
    assert "refresh-value" not in repr(copied)

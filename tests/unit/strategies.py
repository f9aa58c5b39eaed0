"""Hypothesis strategies shared by the parsers' property tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def json_values(keys: Sequence[str], max_leaves: int = 40) -> st.SearchStrategy[Any]:
    """Any JSON document whose objects use `keys` (the fields a parser looks for,
    so that it meets them holding every type), nested, lists and scalars included."""
    return st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(list(keys)), inner, max_size=6),
                        max_leaves=max_leaves)

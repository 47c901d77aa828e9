"""Message encoding of the batch stages (``streams.faustio``, ``streams.items``): pure, no
broker."""

from __future__ import annotations

import random

import orjson

from streams.faustio import encode_lists
from streams.items import chunks


def test_lists_split_under_the_limit_and_keep_every_item_in_order() -> None:
    rng = random.Random(7)
    items = [["c", rng.randrange(10**9), "x" * rng.randrange(0, 300)] for _ in range(5_000)]
    parts = list(encode_lists(items, limit=64 * 1024))
    assert len(parts) > 1
    assert all(len(p) <= 64 * 1024 for p in parts)
    assert [i for p in parts for i in orjson.loads(p)] == items
    assert list(encode_lists(items[:10], limit=64 * 1024)) == [orjson.dumps(items[:10])]


def test_an_item_larger_than_the_limit_travels_alone() -> None:
    big = ["k", "y" * 2_000]
    parts = list(encode_lists([["a"], big, ["b"]], limit=1_000))
    assert [orjson.loads(p) for p in parts] == [[["a"]], [big], [["b"]]]


def test_encoded_values_group_under_the_limit_in_order() -> None:
    """``chunks``: the framing of ``entities`` and ``summaries`` messages."""
    parts = [orjson.dumps(["c", n, "x" * (n % 50)]) for n in range(2_000)]
    groups = list(chunks(parts, limit=4_096))
    assert len(groups) > 1
    assert all(sum(len(p) + 1 for p in g) <= 4_096 for g in groups)
    assert [p for g in groups for p in g] == parts
    assert list(chunks([b"y" * 5_000, b"z"], limit=4_096)) == [[b"y" * 5_000], [b"z"]]

"""Message encoding of the batch stages (``streams.faustio``): pure, no broker."""

from __future__ import annotations

import random

import orjson

from streams.faustio import encode_lists


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

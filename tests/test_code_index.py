"""The sorted code index (engine/code_index.py): a probe finds exactly the rows a plain Polars
filter over the `codes` table finds, whether the table is sorted by a compaction, appended to
since, or never compacted; the merge kernel agrees with NumPy's membership test."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from stories import Story, ingest_story, property_settings, stories

from engine import code_index
from engine.code_index import _assign_sorted, owners
from engine.store import Store


@settings(max_examples=200, deadline=None, database=None)
@given(owned=st.dictionaries(st.integers(0, 60), st.integers(0, 9), max_size=40),
       keys=st.sets(st.integers(0, 60), max_size=20))  # fmt: skip
def test_the_merge_finds_each_keys_owner_as_a_dict_does(owned: dict[int, int], keys: set[int]) -> None:
    codes = np.array(sorted(owned), dtype=np.int64)
    persons = np.array([owned[c] for c in sorted(owned)], dtype=np.int64)
    k = np.array(sorted(keys), dtype=np.int64)
    out = np.full(len(k), -1, np.int64)
    _assign_sorted(codes, persons, k, out)
    assert out.tolist() == [owned.get(int(c), -1) for c in k]


def _oracle(store: Store, kind: int, keys: list[int], upto: int | None) -> set[tuple[int, int]]:
    codes = pl.read_delta(str(store.table_path("codes"))).filter(
        (pl.col("kind") == kind) & pl.col("code").is_in(keys))  # fmt: skip
    if upto is not None:
        codes = codes.filter(pl.col("batch") <= upto)
    return set(codes.select("code", "person").iter_rows())


@property_settings(10)
@given(story=stories(), data=st.data())
def test_a_probe_finds_what_a_plain_filter_finds(story: Story, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        compacted = data.draw(st.sampled_from([None, *range(1, len(story.batches) + 1)]))
        ingest_story(store, story, Path(tmp) / "files", compact_after=compacted)
        stored = pl.read_delta(str(store.table_path("codes")))
        for _ in range(3):
            kind = data.draw(st.sampled_from([1, 2]))
            mine = stored.filter(pl.col("kind") == kind)["code"].to_list()
            keys = data.draw(st.lists(st.sampled_from(mine) | st.integers(0, 10**12),
                                      max_size=12) if mine else st.lists(st.integers(0, 99)))  # fmt: skip
            upto = data.draw(st.sampled_from([None, *range(len(story.batches) + 1)]))
            few = data.draw(st.sampled_from([0, code_index.FEW_KEYS]))  # the row-group path too
            saved, code_index.FEW_KEYS = code_index.FEW_KEYS, few
            try:
                got = owners(store, {kind: np.array(keys, dtype=np.int64)}, upto_batch=upto)
            finally:
                code_index.FEW_KEYS = saved
            assert set(got.select("code", "person").iter_rows()) == _oracle(store, kind, keys,
                                                                            upto)  # fmt: skip
            assert got["kind"].to_list() == [kind] * got.height


def test_compaction_sorts_the_codes_one_kind_per_file_and_keeps_the_reflected_batch(
    tmp_path: Path,
) -> None:
    from engine.maintenance import compact
    from loaders.ingest import ingest_files
    from loaders.synthetic import generate

    store = Store(tmp_path / "store")
    summary = generate(tmp_path / "files", residents=400, months=1, seed=3)
    ingest_files(store, sorted(summary.files))
    before = pl.read_delta(str(store.table_path("codes"))).sort("kind", "code")
    reflected = store.reflected_batch("codes")
    with store.writer("test"):
        compact(store)
    assert store.reflected_batch("codes") == reflected
    after = pl.read_delta(str(store.table_path("codes"))).sort("kind", "code")
    assert after.equals(before)
    actions = pl.DataFrame(store.delta("codes").get_add_actions(flatten=True))
    assert (actions["min.kind"] == actions["max.kind"]).all()
    for path in actions["path"]:
        codes = pl.read_parquet(store.table_path("codes") / path)["code"]
        assert codes.is_sorted()


def test_each_codes_file_an_ingest_appends_is_sorted_by_kind_and_code(tmp_path: Path) -> None:
    """A probe merges a sorted file with its keys as it is; an unsorted one is sorted again by
    every probe (each group of a national initial load probes every file appended before it)."""
    from loaders.demo import month_of
    from loaders.ingest import ingest_files
    from loaders.synthetic import generate

    store = Store(tmp_path / "store")
    summary = generate(tmp_path / "files", residents=600, months=1, seed=5)
    files = sorted(summary.files)
    initial = [f for f in files if month_of(f).startswith("0000")]
    ingest_files(store, initial)
    ingest_files(store, [f for f in files if f not in initial])
    actions = pl.DataFrame(store.delta("codes").get_add_actions(flatten=True))
    sizes = []
    for path in actions["path"]:
        codes = pl.read_parquet(store.table_path("codes") / path).select("kind", "code")
        assert codes.equals(codes.sort("kind", "code"))
        sizes.append(codes.height)
    assert sum(n > 1 for n in sizes) >= 2, sizes


@settings(max_examples=200, deadline=None, database=None)
@given(codes=st.lists(st.integers(0, 10**12), unique=True, min_size=1, max_size=400)
       | st.integers(100, 2000).map(lambda n: list(range(7, 7 * n, 7))),
       values=st.lists(st.integers(-1, 10**12), max_size=20), also=st.data())  # fmt: skip
def test_a_session_code_space_finds_each_code_it_was_given(
    codes: list[int], values: list[int], also: st.DataObject
) -> None:
    """The ingest session's dense code ids (binary search for a few values, a merge walk for
    many): every added code is found at its id, anything else (or negative) is -1."""
    from engine.ingest import _CodeSpace

    space = _CodeSpace()
    half = len(codes) // 2
    for part in (codes[:half], codes[half:]):
        space.add(np.array(part, dtype=np.int64))
    known = st.lists(st.sampled_from(codes), max_size=40) if codes else st.just([])
    asked = values + also.draw(known)
    ids = space.lookup(np.array(asked, dtype=np.int64))
    where = {c: i for i, c in enumerate(codes)}
    assert ids.tolist() == [where.get(v, -1) for v in asked]
    missing = space.missing(np.array(asked, dtype=np.int64))
    assert missing.tolist() == sorted({v for v in asked if v >= 0 and v not in where})

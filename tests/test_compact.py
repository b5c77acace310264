"""Compaction of `current` (DESIGN: a streaming merge, never the whole population in memory):
slice by slice of person keys, the current state reads the same before and after, the new base is
sorted by person and the delta is empty."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import engine.derived
from engine.current import scan_current
from engine.derived import compact
from engine.store import Store
from loaders.ingest import ingest_files
from loaders.synthetic import generate


def current(store: Store) -> pl.DataFrame:
    return scan_current(store).sort("person").collect()


def test_compaction_in_slices_keeps_the_current_state_and_sorts_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted(generate(tmp_path / "files", residents=400, months=2, seed=5,
                            event_rate=6.0).files)  # fmt: skip
    initial = [f for f in files if Path(f).name.startswith("0000")]
    store = Store(tmp_path / "store")
    monkeypatch.setattr(engine.derived, "COMPACT_PERSONS", 37)  # ~11 slices

    ingest_files(store, initial)
    loaded = current(store)
    compact(store)
    assert current(store).equals(loaded)

    ingest_files(store, [f for f in files if f not in initial])
    changed = current(store)
    assert not changed.equals(loaded)
    compact(store)  # base and delta both hold rows of the same persons now

    assert current(store).equals(changed)
    base = pl.read_delta(str(store.table_path("current_base")))
    assert base["person"].is_sorted() and base["person"].n_unique() == base.height
    assert pl.read_delta(str(store.table_path("current_delta"))).is_empty()
    assert store.reflected_batch("current_base") == store.journal_head().batch

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


def test_store_compaction_keeps_the_newest_bases_and_reclaims_replaced_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`juki store compact --keep-bases 2`, once per month: the two newest bases stay on disk
    (an extract before the newest starts from the other), older ones and the files earlier
    compactions replaced are deleted; the journal's rows and head never change."""
    import datetime as dt

    from engine import maintenance
    from engine.current import generations
    from engine.slices import pick_generation
    from loaders.demo import month_of

    monkeypatch.setattr(maintenance, "REPLACED_FILES_HOURS", 0)
    files = sorted(generate(tmp_path / "files", residents=300, months=3, seed=9).files)
    store = Store(tmp_path / "store")
    months: dict[str, list[str]] = {}
    for f in files:
        months.setdefault(month_of(str(f)), []).append(str(f))
    for month in sorted(months):
        ingest_files(store, months[month])
        head, journal = store.journal_head(), pl.read_delta(str(store.table_path("journal")))
        state = current(store)
        maintenance.compact(store, keep_bases=2)
        after = store.journal_head()  # (new versions: the merge and the vacuum commits)
        assert (after.batch, after.next_person, after.recorded_at) == (
            head.batch, head.next_person, head.recorded_at)  # fmt: skip
        assert pl.read_delta(str(store.table_path("journal"))).sort(
            "batch", "apply_order").equals(journal.sort("batch", "apply_order"))  # fmt: skip
        assert current(store).equals(state)
    kept = list(generations(store))
    assert len(kept) == 2 and kept[0].batch == store.journal_head().batch
    on_disk = {p.name for p in store.table_path("current_base").glob("*.parquet")}
    needed = {Path(u).name for g in kept for u in g.table.file_uris()}
    assert on_disk == needed
    for name in ("current_delta", "codes", "journal"):  # only the live files are left
        live = {Path(u).name for u in store.delta(name).file_uris()}
        assert {p.name for p in store.table_path(name).rglob("*.parquet")} == live, name
    # a date in the last month but before its base: the base compacted before that month
    last = max(months)
    day = dt.date.fromisoformat(f"{last}-15")
    assert pick_generation(store, upto_batch=None, date=day).batch == kept[1].batch


def test_a_base_pushed_out_of_the_kept_ones_stays_until_the_grace_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extract may have picked the oldest kept base just before a compaction pushed it out:
    its files stay for REPLACED_FILES_HOURS (as replaced delta files do), and a later
    compaction deletes them."""
    from engine import maintenance
    from engine.current import generations

    files = sorted(generate(tmp_path / "files", residents=200, months=2, seed=3).files)
    store = Store(tmp_path / "store")
    ingest_files(store, files[: len(files) // 2])
    maintenance.compact(store, keep_bases=1)
    ingest_files(store, files[len(files) // 2 :])
    maintenance.compact(store, keep_bases=1)  # the first base is pushed out now
    on_disk = list(generations(store))
    assert on_disk[1].batch > 0 and on_disk[1].on_disk()  # (then the store's empty version 0)
    first = {Path(u).name for u in on_disk[1].table.file_uris()}
    assert first

    later = maintenance.time.time() + maintenance.REPLACED_FILES_HOURS * 3600 + 60
    monkeypatch.setattr(maintenance.time, "time", lambda: later)
    maintenance.reclaim(store, keep_bases=1)

    assert [g.batch for g in generations(store)] == [on_disk[0].batch]
    left = {p.name for p in store.table_path("current_base").glob("*.parquet")}
    assert not first & left and left

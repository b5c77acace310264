"""Store maintenance: info, rebuild and compaction of derived tables, the held-rows view."""

from __future__ import annotations

import time
from typing import Any

import polars as pl

from engine import deltalog, derived
from engine.current import generations
from engine.schema import JOURNAL_ENCODINGS
from engine.store import DERIVED, KEEP_LOG, Store


def store_info(store: Store) -> list[dict[str, Any]]:
    """Per table: Delta version, the journal batch it reflects (None for tables that are not
    derived from the journal), rows, files, bytes."""
    store.require()
    sizes = store.sizes()
    head = store.journal_head().batch
    rows = []
    for name in store.tables():
        table = store.delta(name)
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        count = int(actions["num_records"].sum()) if actions.height else 0
        reflects = head if name == "journal" else (
            store.reflected_batch(name) if name in DERIVED else None)  # fmt: skip
        rows.append({"table": name, "version": table.version(), "reflects": reflects,
                     "rows": count, "files": actions.height, "bytes": sizes[name]})  # fmt: skip
    return rows


def rebuild(store: Store) -> int:
    """Recompute every derived table from the journal (run under the writer lock)."""
    return derived.rebuild(store)


# Files below this size are merged by `compact`. A Delta commit costs time in proportion to the
# table's live files (measured: +0.06 ms per file), and every ingest batch adds a journal file.
SMALL_FILE_BYTES = 64 * 2**20


# Compaction keeps this many compacted bases on disk by default (the newest included): as-of
# reads for a date before the newest base start from an older one (engine/slices.py), so with a
# nightly compaction a month of base dates reads fast. A 125 M base is ~5.2 GB.
KEEP_BASES = 31
# Other files a compaction replaces (the delta's, the journal's small files, the unsorted
# codes), and a base pushed out of the newest `keep_bases`, are deleted by a compaction at least
# this long after: a reader that listed them before the replacement has long finished.
REPLACED_FILES_HOURS = 1


def compact(store: Store, *, keep_bases: int = KEEP_BASES) -> int:
    """Merge the current delta into the base and the small files of the journal (data unchanged;
    its commit metadata carried over), rewrite `codes` sorted (engine/code_index.py), and delete
    the files of bases older than the `keep_bases` newest and those the previous compactions
    replaced (`reclaim`). Run under the writer lock."""
    from deltalake import CommitProperties

    from engine.code_index import sort_codes

    head = derived.compact(store)
    table = store.delta("journal")
    meta = deltalog.juki_metadata(table)
    table.optimize.compact(
        target_size=SMALL_FILE_BYTES,
        writer_properties=deltalog.writer_properties(JOURNAL_ENCODINGS),
        commit_properties=CommitProperties(custom_metadata=meta),
        post_commithook_properties=KEEP_LOG,
    )
    sort_codes(store)
    reclaim(store, keep_bases=keep_bases)
    return head


def reclaim(store: Store, *, keep_bases: int = KEEP_BASES) -> list[str]:
    """Delete files no version of interest needs (Delta VACUUM): of `current_base`, those of
    bases older than the `keep_bases` newest (once out of them for REPLACED_FILES_HOURS); of
    the current delta, the codes and the journal, those replaced at least REPLACED_FILES_HOURS
    ago. The journal's data never changes (its small files were merged into larger ones); its
    commit metadata is carried over. Returns the deleted files (relative to the store). Run
    under the writer lock."""
    from deltalake import CommitProperties

    kept = _kept_bases(store, max(keep_bases, 1))
    deleted = [f"current_base/{f}" for f in store.delta("current_base").vacuum(
        retention_hours=0, dry_run=False, enforce_retention_duration=False, keep_versions=kept,
        post_commithook_properties=KEEP_LOG)]  # fmt: skip
    for name in ("current_delta", "codes", "journal"):
        table = store.delta(name)
        meta = deltalog.juki_metadata(table) if name == "journal" else {}
        deleted += [f"{name}/{f}" for f in table.vacuum(
            retention_hours=REPLACED_FILES_HOURS, dry_run=False,
            enforce_retention_duration=False, post_commithook_properties=KEEP_LOG,
            commit_properties=CommitProperties(custom_metadata=meta) if meta else None)]  # fmt: skip
    return deleted


def _kept_bases(store: Store, keep: int) -> list[int]:
    """Versions of the bases whose files stay: the `keep` newest, and an older one until the
    compaction that pushed it out of them is REPLACED_FILES_HOURS old. An extract for a date a
    month back may have picked the oldest kept base just before that compaction committed
    (engine/slices.py): its files must outlive the read, as the replaced delta files do."""
    bases = list(generations(store))
    committed = {int(h["version"]): int(h["timestamp"])
                 for h in store.delta("current_base").history()}  # fmt: skip
    cutoff = (time.time() - REPLACED_FILES_HOURS * 3600) * 1000
    return [g.version for k, g in enumerate(bases)
            if k < keep or committed.get(bases[k - keep].version, 0) > cutoff]  # fmt: skip


def held_rows(store: Store) -> list[dict[str, Any]]:
    """Held rows with the seq each waits for (the first gap of its municipality)."""
    held = pl.read_delta(str(store.table_path("held")))
    positions = pl.read_delta(str(store.table_path("positions")))
    view = (
        held.join(positions, on="municipality_code", how="left")
        .with_columns(waits_for=pl.col("last_seq").fill_null(0) + 1)
        .sort("municipality_code", "seq")
        .select("municipality_code", "seq", "waits_for", "file", "row", "batch")
    )
    return view.to_dicts()

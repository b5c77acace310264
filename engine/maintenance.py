"""Store maintenance: info, rebuild and compaction of derived tables, the held-rows view."""

from __future__ import annotations

from typing import Any

import polars as pl

from engine import deltalog, derived
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


def compact(store: Store) -> int:
    """Merge the current delta into the base and the small files of the journal (data unchanged;
    its commit metadata carried over), and rewrite `codes` sorted (engine/code_index.py). Run
    under the writer lock."""
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
    return head


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

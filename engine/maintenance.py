"""Store maintenance: info, rebuild and compaction of derived tables, the held-rows view."""

from __future__ import annotations

from typing import Any

import polars as pl

from engine import derived
from engine.store import SCHEMAS, Store


def store_info(store: Store) -> list[dict[str, Any]]:
    """Per table: Delta version, the journal batch it reflects, rows, files, bytes."""
    store.require()
    sizes = store.sizes()
    head = store.journal_head().batch
    rows = []
    for name in SCHEMAS:
        table = store.delta(name)
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        count = int(actions["num_records"].sum()) if actions.height else 0
        reflects = head if name == "journal" else store.reflected_batch(name)
        rows.append({"table": name, "version": table.version(), "reflects": reflects,
                     "rows": count, "files": actions.height, "bytes": sizes[name]})  # fmt: skip
    return rows


def rebuild(store: Store) -> int:
    """Recompute every derived table from the journal (run under the writer lock)."""
    return derived.rebuild(store)


def compact(store: Store) -> int:
    """Merge the current delta into the base (run under the writer lock)."""
    return derived.compact(store)


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

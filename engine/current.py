"""The current table: per person the version in effect now, as a compacted base plus a delta.

Readers take the newest delta row per person and the base for everyone else; a delta row whose
`version` is null is a tombstone (every version of the person cancelled).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from engine.store import Store

ORDER = ["written_batch", "written_order"]


def scan_current(
    store: Store,
    *,
    persons: Sequence[int] | pl.Series | None = None,
    person_range: tuple[int, int] | None = None,
) -> pl.LazyFrame:
    """LazyFrame of current rows (one per person with an effective version).

    `person_range` (low, high) keeps persons low ≤ person < high, read by pruning: the base is
    sorted by person, one file per compaction slice.
    """
    base = pl.scan_delta(str(store.table_path("current_base")))
    delta = pl.scan_delta(str(store.table_path("current_delta")))
    if person_range is not None:
        mine = in_range(person_range)
        base, delta = base.filter(mine), delta.filter(mine)
    if persons is not None:
        keys = pl.Series("person", persons, dtype=pl.Int64)
        base = base.filter(pl.col("person").is_in(keys.implode()))
        delta = delta.filter(pl.col("person").is_in(keys.implode()))
    newest = delta.sort(ORDER).unique(subset="person", keep="last", maintain_order=False)
    # the base's order is kept (it is sorted by person): national extracts then need no sort
    rest = base.join(newest.select("person"), on="person", how="anti", maintain_order="left")
    return pl.concat([rest, newest], how="vertical").filter(pl.col("version").is_not_null())


def in_range(person_range: tuple[int, int]) -> pl.Expr:
    """low ≤ person < high."""
    low, high = person_range
    return pl.col("person").is_between(low, high, closed="left")

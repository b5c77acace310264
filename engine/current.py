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
    newest: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """LazyFrame of current rows (one per person with an effective version).

    `person_range` (low, high) keeps persons low ≤ person < high, read by pruning: the base is
    sorted by person, one file per compaction slice. `newest`: the delta's rows as
    `newest_delta` read them once (a national extract reads many slices; the delta's files span
    every person, so each slice would decode all of them again).
    """
    base = pl.scan_delta(str(store.table_path("current_base")))
    delta = (pl.scan_delta(str(store.table_path("current_delta"))) if newest is None
             else newest.lazy())  # fmt: skip
    if person_range is not None:
        mine = in_range(person_range)
        base, delta = base.filter(mine), delta.filter(mine)
    if newest is None:
        delta = delta.sort(ORDER).unique(subset="person", keep="last", maintain_order=False)
    else:
        base = base.select(newest.columns)
    if persons is not None:
        keys = pl.Series("person", persons, dtype=pl.Int64)
        rows = delta.filter(pl.col("person").is_in(keys.implode())).collect()
        # a person with a delta row is read from the delta alone: taking them out of the keys
        # the base is filtered by spares an anti-join over the base's rows (10 M of them for a
        # national lookup)
        keys = keys.filter(~keys.is_in(rows["person"].implode()))
        base = base.filter(pl.col("person").is_in(keys.implode()))
        return pl.concat([base, rows.lazy()], how="vertical").filter(
            pl.col("version").is_not_null())  # fmt: skip
    # the base's order is kept (it is sorted by person): national extracts then need no sort
    rest = base.join(delta.select("person"), on="person", how="anti", maintain_order="left")
    return pl.concat([rest, delta], how="vertical").filter(pl.col("version").is_not_null())


def newest_delta(store: Store, columns: list[str]) -> pl.DataFrame:
    """The delta's newest row per person (tombstones included), with `columns` (and `person`,
    `version`), sorted by person: for `scan_current(newest=...)`."""
    wanted = list(dict.fromkeys(["person", "version", *columns]))
    return (
        pl.scan_delta(str(store.table_path("current_delta")))
        .sort(ORDER)
        .unique(subset="person", keep="last", maintain_order=False)
        .select(wanted)
        .sort("person")
        .collect()
    )


def in_range(person_range: tuple[int, int]) -> pl.Expr:
    """low ≤ person < high."""
    low, high = person_range
    return pl.col("person").is_between(low, high, closed="left")

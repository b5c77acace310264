"""Statistics (SPEC §5 `juki stats`): counts of persons registered on a date per group.

Groups are any of `prefecture`, `municipality`, `age5`, `sex`; the columns come in the SPEC's
order (`prefecture_code`, `municipality_code`, `age5`, `sex`, `count`) whatever the order of
`--by`, rows sorted by them (`age5` by age, not as text: `5-9` before `10-14`). Aggregates
provide no person's data, so nothing is recorded as provided; a prefecture-scoped agency counts
only its prefecture's residents.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from engine.access import Grant, in_scope
from engine.age import age_expr
from engine.errors import UsageError
from engine.store import Store

GROUPS = {"prefecture": "prefecture_code", "municipality": "municipality_code", "age5": "age5",
          "sex": "sex"}  # fmt: skip
TOP_BAND = 20  # 100+


def parse_by(text: str) -> list[str]:
    """`prefecture,age5,sex` → the output's group columns in the SPEC's order."""
    asked = [b.strip() for b in text.split(",") if b.strip()]
    for b in asked:
        if b not in GROUPS:
            raise UsageError(f"--by '{b}': not one of {', '.join(GROUPS)}")
    return [GROUPS[g] for g in GROUPS if g in asked]


def age5_label(band: pl.Expr) -> pl.Expr:
    """`0-4`, `5-9`, …, `95-99`, `100+` from the band number (age // 5, capped at 20)."""
    low = band * 5
    return (
        pl.when(band >= TOP_BAND)
        .then(pl.lit("100+"))
        .otherwise(pl.format("{}-{}", low, low + 4))
    )


def counts(
    store: Store, grant: Grant, *, date: dt.date, by: list[str], upto_batch: int | None = None,
    slice_persons: int | None = None,
) -> pl.DataFrame:  # fmt: skip
    """`count` of persons registered on the date per group of `by` (output column names).

    Counted slice by slice of person keys (the extracts' slices), the slices' counts summed:
    memory follows a slice, never the population."""
    from engine.extract import SLICE_PERSONS
    from engine.history import person_slices
    from engine.slices import slice_reader, versions_on

    columns = ["prefecture_code", "municipality_code", "birth_date", "sex", "status"]
    reader = slice_reader(store, columns=columns, upto_batch=upto_batch, date=date)
    registered = (pl.col("status") == 1) & in_scope(grant)
    band = pl.min_horizontal(age_expr(pl.col("birth_date"), date) // 5, pl.lit(TOP_BAND))
    keys = [c if c != "age5" else "_band" for c in by]
    partial = []
    for person_range in person_slices(store, slice_persons or SLICE_PERSONS):
        frame = versions_on(store, reader, person_range=person_range,
                            prefilter=registered, ordered=False).lazy().filter(registered)  # fmt: skip
        partial.append(
            (frame.with_columns(_band=band.cast(pl.Int32)).group_by(keys).agg(count=pl.len())
             if by else frame.select(count=pl.len())).collect()
        )  # fmt: skip
    summed = pl.concat(partial)
    if not by:
        return summed.select(count=pl.col("count").sum().cast(pl.Int64))
    grouped = (
        summed.group_by(keys)
        .agg(count=pl.col("count").sum().cast(pl.Int64))
        .sort(keys)
        .with_columns([age5_label(pl.col("_band")).alias("age5")] if "age5" in by else [])
    )
    return grouped.select(*by, "count")

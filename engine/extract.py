"""Extracts (SPEC §5 `juki extract`): everyone registered on a base date, a region and age band,
or the persons reaching milestone ages in a month — always through the as-of read of
`engine/history.py`, the agency's scope and the protected-person rule.

Rows have no specified order; they are sorted by `resident_code` so that the same history gives
the same file (`--known-at` reproduces an earlier extract byte for byte).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from engine.access import Grant, in_scope, provided_columns, withhold
from engine.age import age_expr, reached_on_expr
from engine.codes import is_valid
from engine.errors import UsageError
from engine.history import registered_on
from engine.store import Store


@dataclass(frozen=True)
class Region:
    """Prefectures and municipalities asked for (a person in any of them); empty: everywhere."""

    prefectures: tuple[str, ...] = ()
    municipalities: tuple[str, ...] = ()

    def check(self) -> None:
        for p in self.prefectures:
            if not (len(p) == 2 and p.isdigit() and 1 <= int(p) <= 47):
                raise UsageError(f"--prefecture '{p}': not a prefecture code 01–47")
        for m in self.municipalities:
            if not is_valid(m, "municipality_code"):
                raise UsageError(f"--municipality '{m}': not a valid local government code")

    def expr(self) -> pl.Expr:
        if not self.prefectures and not self.municipalities:
            return pl.lit(True)
        return pl.col("prefecture_code").is_in(list(self.prefectures)) | pl.col(
            "municipality_code"
        ).is_in(list(self.municipalities))

    def to_json(self) -> dict[str, list[str]]:
        return {"prefecture": list(self.prefectures), "municipality": list(self.municipalities)}


def _registered(
    store: Store, grant: Grant, *, date: dt.date, upto_batch: int | None, region: Region
) -> pl.LazyFrame:
    needed = [*grant.output_columns, "resident_code", "prefecture_code", "municipality_code",
              "birth_date"]  # fmt: skip
    return registered_on(store, date=date, upto_batch=upto_batch,
                         columns=list(dict.fromkeys(needed))).filter(
        region.expr() & in_scope(grant)
    )  # fmt: skip


def _finish(
    frame: pl.LazyFrame, grant: Grant, own: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Withhold, order, and split into (output rows, provided records)."""
    # fixed-width codes: numeric order is text order, and an int64 sort is far cheaper
    shown = withhold(
        frame.with_columns(pl.col("protected").fill_null(False)), grant
    ).sort(pl.col("resident_code").cast(pl.Int64))
    result = shown.with_columns(_provided=provided_columns(grant)).collect()
    provided = result.select("resident_code", columns="_provided")
    return result.select(*grant.output_columns, *own), provided


def base_date(
    store: Store, grant: Grant, *, date: dt.date, upto_batch: int | None = None,
    region: Region = Region(),
) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """Everyone registered (status 1) on the date, with the version in effect then."""
    return _finish(_registered(store, grant, date=date, upto_batch=upto_batch, region=region),
                   grant, [])  # fmt: skip


def region_age(
    store: Store, grant: Grant, *, date: dt.date, min_age: int, max_age: int,
    upto_batch: int | None = None, region: Region = Region(),
) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """Persons registered on the date in the region with age on the date in [min_age, max_age]."""
    check_band(min_age, max_age)
    frame = (
        _registered(store, grant, date=date, upto_batch=upto_batch, region=region)
        .with_columns(age=age_expr(pl.col("birth_date"), date))
        .filter(pl.col("age").is_between(min_age, max_age))
    )
    return _finish(frame, grant, ["age"])


def milestone(
    store: Store, grant: Grant, *, first: dt.date, last: dt.date, ages: list[int],
    upto_batch: int | None = None, region: Region = Region(),
) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """Persons registered on the month's last day who reach one of the ages within the month."""
    if not ages or min(ages) < 0:
        raise UsageError(f"--ages {','.join(map(str, ages))}: not a list of ages")
    reached = [reached_on_expr(pl.col("birth_date"), a) for a in ages]
    in_month = [r.is_between(first, last) for r in reached]
    age = pl.coalesce([pl.when(m).then(pl.lit(a, pl.Int32)) for m, a in zip(in_month, ages,
                                                                             strict=True)])  # fmt: skip
    on = pl.coalesce([pl.when(m).then(r) for m, r in zip(in_month, reached, strict=True)])
    frame = (
        _registered(store, grant, date=last, upto_batch=upto_batch, region=region)
        .with_columns(age=age, reached_on=on)
        .filter(pl.col("age").is_not_null())
    )
    return _finish(frame, grant, ["age", "reached_on"])


def check_band(min_age: int, max_age: int) -> None:
    if min_age < 0 or max_age < min_age:
        raise UsageError(f"--min-age {min_age} --max-age {max_age}: not an age band")


def parse_ages(text: str) -> list[int]:
    """`20,34,44,54` → [20, 34, 44, 54] (distinct, ascending)."""
    try:
        ages = sorted({int(a) for a in text.split(",") if a.strip()})
    except ValueError:
        raise UsageError(f"--ages '{text}': not a comma-separated list of ages") from None
    if not ages or ages[0] < 0 or ages[-1] > 200:
        raise UsageError(f"--ages '{text}': not a comma-separated list of ages")
    return ages

"""Extracts (SPEC §5 `juki extract`): everyone registered on a base date, a region and age band,
or the persons reaching milestone ages in a month — always through the as-of read of
`engine/history.py`, the agency's scope and the protected-person rule.

National-size extracts stream (DESIGN "As-of reads"): the work runs over slices of person keys
(`SLICE_PERSONS`, the compaction's slices: each reads one base file), each slice's rows handed
on before the next is read, so memory follows the slice, never the 125 M rows.

Rows have no specified order; they come in the order of the internal person key (never shown),
so that the same history gives the same file (`--known-at` reproduces an earlier extract byte
for byte: keys never change) and each slice is sorted cheaply (its base rows are nearly in
order).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from engine.access import Grant, in_scope, provided_columns, withhold
from engine.age import age_expr, reached_on_expr
from engine.codes import is_prefecture_code, is_valid
from engine.derived import COMPACT_PERSONS
from engine.errors import UsageError
from engine.history import person_slices
from engine.slices import SliceReader, slice_reader, versions_on
from engine.store import Store

SLICE_PERSONS = COMPACT_PERSONS
SLICES_AHEAD = 2  # slices computed at once (memory: this many slices beside the one written)
# One slice of an extract: the output rows, and per row its provision record
# (`resident_code`, `columns`).
Part = tuple[pl.DataFrame, pl.DataFrame]


@dataclass(frozen=True)
class Region:
    """Prefectures and municipalities asked for (a person in any of them); empty: everywhere."""

    prefectures: tuple[str, ...] = ()
    municipalities: tuple[str, ...] = ()

    def check(self) -> None:
        for p in self.prefectures:
            if not is_prefecture_code(p):
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


def _needed(grant: Grant) -> list[str]:
    return list(dict.fromkeys([*grant.output_columns, "resident_code", "prefecture_code",
                               "municipality_code", "birth_date"]))  # fmt: skip


def _registered(
    store: Store, grant: Grant, *, region: Region, person_range: tuple[int, int],
    reader: SliceReader, also: pl.Expr | None = None,
) -> pl.LazyFrame:  # fmt: skip
    """The slice's persons registered on the reader's date, in the region and the grant's scope (and
    `also`, a condition on the version's columns applied as early as the others)."""
    wanted = (pl.col("status") == 1) & region.expr() & in_scope(grant)
    if also is not None:
        wanted = wanted & also
    return versions_on(store, reader, person_range=person_range,
                       prefilter=wanted).lazy().filter(wanted)  # fmt: skip


def _finish(frame: pl.LazyFrame, grant: Grant, own: list[str]) -> Part:
    """Withhold, order, and split into (output rows, provided records)."""
    shown = withhold(frame.with_columns(pl.col("protected").fill_null(False)), grant)
    result = in_person_order(
        shown.with_columns(_provided=provided_columns(grant, enum=True)).collect()
    )
    provided = result.select("resident_code", columns="_provided")
    return result.select(*grant.output_columns, *own), provided


def in_person_order(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows sorted by person. They come as the base's rows (sorted by person: compaction
    writes them so) followed by the few from the delta and the as-of corrections, so a freshly
    compacted store needs no sort at all."""
    person = frame["person"]
    if person.is_sorted():
        return frame
    return frame[person.arg_sort()]  # measured: half the time of frame.sort("person")


def _parts(
    store: Store, grant: Grant, own: list[str], slice_persons: int | None, date: dt.date,
    upto_batch: int | None, frame_of: Callable[[tuple[int, int], SliceReader], pl.LazyFrame],
) -> Iterator[Part]:  # fmt: skip
    """The extract slice by slice (an empty store gives one empty part: the output's columns);
    what spans every slice (the current delta, the rows since the base) is read once."""
    emitted = False
    reader = slice_reader(store, columns=[*_needed(grant), "status"], upto_batch=upto_batch,
                          date=date)  # fmt: skip

    def part_of(person_range: tuple[int, int]) -> Part:
        return _finish(frame_of(person_range, reader), grant, own)

    # two slices are computed at once, ahead of the one handed on: a slice's many small
    # queries keep about one core busy (a 125 M region/age extract's slices: 1.9 → 1.7 s)
    ranges = person_slices(store, slice_persons or SLICE_PERSONS)
    with ThreadPoolExecutor(SLICES_AHEAD, thread_name_prefix="juki-slice") as pool:
        ahead = deque(pool.submit(part_of, r) for r in ranges[:SLICES_AHEAD])
        for i in range(len(ranges)):
            part = ahead.popleft().result()
            if i + SLICES_AHEAD < len(ranges):
                ahead.append(pool.submit(part_of, ranges[i + SLICES_AHEAD]))
            if part[0].height or not emitted:
                emitted = True
                yield part


def joined(parts: Iterator[Part]) -> Part:
    """All parts as one (output rows, provided records), for callers that want the whole."""
    tables, provided = zip(*parts, strict=True)
    return pl.concat(tables), pl.concat(provided)


def base_date_parts(
    store: Store, grant: Grant, *, date: dt.date, upto_batch: int | None = None,
    region: Region = Region(), slice_persons: int | None = None,
) -> Iterator[Part]:  # fmt: skip
    """Everyone registered (status 1) on the date, with the version in effect then."""
    def frame(persons: tuple[int, int], reader: SliceReader) -> pl.LazyFrame:
        return _registered(store, grant, region=region, person_range=persons, reader=reader)

    return _parts(store, grant, [], slice_persons, date, upto_batch, frame)


def region_age_parts(
    store: Store, grant: Grant, *, date: dt.date, min_age: int, max_age: int,
    upto_batch: int | None = None, region: Region = Region(),
    slice_persons: int | None = None,
) -> Iterator[Part]:  # fmt: skip
    """Persons registered on the date in the region with age on the date in [min_age, max_age]."""
    check_band(min_age, max_age)

    band = pl.col("birth_date").is_between(*_births_within(date, min_age, max_age))

    def frame(persons: tuple[int, int], reader: SliceReader) -> pl.LazyFrame:
        return (
            _registered(store, grant, region=region, person_range=persons,
                        reader=reader, also=band)
            .with_columns(age=age_expr(pl.col("birth_date"), date))
            .filter(pl.col("age").is_between(min_age, max_age))
        )

    return _parts(store, grant, ["age"], slice_persons, date, upto_batch, frame)


def milestone_parts(
    store: Store, grant: Grant, *, first: dt.date, last: dt.date, ages: list[int],
    upto_batch: int | None = None, region: Region = Region(),
    slice_persons: int | None = None,
) -> Iterator[Part]:  # fmt: skip
    """Persons registered on the month's last day who reach one of the ages within the month."""
    if not ages or min(ages) < 0:
        raise UsageError(f"--ages {','.join(map(str, ages))}: not a list of ages")
    reached = [reached_on_expr(pl.col("birth_date"), a) for a in ages]
    in_month = [r.is_between(first, last) for r in reached]
    age = pl.coalesce([pl.when(m).then(pl.lit(a, pl.Int32)) for m, a in zip(in_month, ages,
                                                                             strict=True)])  # fmt: skip
    on = pl.coalesce([pl.when(m).then(r) for m, r in zip(in_month, reached, strict=True)])

    def frame(persons: tuple[int, int], reader: SliceReader) -> pl.LazyFrame:
        return (
            _registered(store, grant, region=region, person_range=persons,
                        reader=reader, also=age.is_not_null())
            .with_columns(age=age, reached_on=on)
            .filter(pl.col("age").is_not_null())
        )

    return _parts(store, grant, ["age", "reached_on"], slice_persons, last, upto_batch, frame)


def base_date(store: Store, grant: Grant, **options: object) -> Part:
    """`base_date_parts` as one table."""
    return joined(base_date_parts(store, grant, **options))  # type: ignore[arg-type]


def region_age(store: Store, grant: Grant, **options: object) -> Part:
    """`region_age_parts` as one table."""
    return joined(region_age_parts(store, grant, **options))  # type: ignore[arg-type]


def milestone(store: Store, grant: Grant, **options: object) -> Part:
    """`milestone_parts` as one table."""
    return joined(milestone_parts(store, grant, **options))  # type: ignore[arg-type]


def _years_before(date: dt.date, years: int) -> dt.date:
    try:
        return date.replace(year=date.year - years)
    except ValueError:  # 29 February
        return date.replace(year=date.year - years, day=28)


def _births_within(date: dt.date, min_age: int, max_age: int) -> tuple[dt.date, dt.date]:
    """A window of birth dates holding everyone aged min_age–max_age on the date, a few days
    wider than exact: a cheap comparison that drops most rows early; `age_expr` decides."""
    slack = dt.timedelta(days=3)
    earliest = _years_before(date, min(max_age + 1, date.year - 1)) - slack
    latest = _years_before(date, min(min_age, date.year - 1)) + slack
    return max(earliest, dt.date.min + slack), latest


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

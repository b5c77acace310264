"""As-of reads over the whole population, slice by slice of person keys (extracts, stats).

The rule is `engine/history.py`'s (SPEC §1); this is its national-size path. What every slice
needs from tables whose files span all persons is read once (`SliceReader`): the current delta's
newest rows, and the journal rows applied since the batch the compacted base reflects (B0, the
"recent" rows; a month or a day). Per slice, the base file is read (its key columns for every
person, its record columns only for rows the caller's `prefilter` keeps) and:

- a person whose current version is dated ≤ D (and, with a `--known-at` bound, who has no row
  after it) has that version on D — the current row;
- any other ("late") person: the last recent row (non-`X1`, not cancelled by a recent `X1`) dated
  ≤ D is the version on D; without one, the base row when it is dated ≤ D and no recent `X1`
  cancels it — every recent row comes after every pre-B0 row in application order, and the base
  row is the last effective pre-B0 version; without a base row the person had no version on D;
- only persons whose base row is dated after D or cancelled by a recent `X1` need their whole
  history, read from the journal (none after a fresh compaction and a recent D).

When the bound is before B0 the base is too new to start from, and the slice takes the journal
path of `history.as_of`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from engine.current import in_range, newest_delta
from engine.history import as_of, cancellations, effective_on, scan_history
from engine.store import Store

KEYS = ["person", "version", "change_date", "municipality_code", "seq"]
DATED = ["person", "version", "change_date"]  # what tells a late person, read for every row
RECENT_KEYS = ["person", "batch", "apply_order", "reason", "change_date", "municipality_code",
               "seq", "cancels_municipality_code", "cancels_seq"]  # fmt: skip


@dataclass(frozen=True)
class SliceReader:
    """What an as-of read over many slices reads once."""

    columns: list[str]  # the record columns asked for (`person` first)
    upto_batch: int | None
    newest: pl.DataFrame  # the delta's newest row per person (tombstones included)
    recent: pl.DataFrame | None  # rows base_batch < batch ≤ bound; None: bound before the base
    after_bound: pl.Series  # persons with rows after the bound (empty without one)
    base_files: pl.DataFrame  # per base file: min/max person, max change_date (its statistics)
    date: dt.date | None = None  # the date `corrected` was read for
    corrected: pl.DataFrame | None = None  # versions on `date` of persons read from the journal

    def base_dated_by(self, person_range: tuple[int, int]) -> dt.date | None:
        """The latest change_date of the base files that may hold the range (None: unknown)."""
        low, high = person_range
        files = self.base_files.filter((pl.col("low") < high) & (pl.col("high") >= low))
        if files.is_empty():
            return dt.date.min
        if files["latest"].null_count():
            return None
        return files["latest"].max()  # type: ignore[return-value]


# Persons read from the journal in one scan for all slices at most (more: slice by slice).
GLOBAL_CORRECTIONS = 5_000_000


def slice_reader(
    store: Store, *, columns: list[str], upto_batch: int | None, date: dt.date | None = None
) -> SliceReader:
    """Read the delta's newest rows and the rows since the base, for `columns`; with `date`,
    also the versions on it of every person whose base row may not serve (dated after it, or
    with a recent X1), in ONE journal scan instead of one per slice."""
    wanted = list(dict.fromkeys(["person", *columns]))
    newest = newest_delta(store, [*wanted, *KEYS])
    base_batch = store.reflected_batch("current_base")
    recent = None
    if upto_batch is None or upto_batch >= base_batch:
        rows = scan_history(store, upto_batch=upto_batch).filter(pl.col("batch") > base_batch)
        recent = rows.select(list(dict.fromkeys([*RECENT_KEYS, *wanted]))).collect()
    after = pl.Series("person", [], pl.Int64)
    if upto_batch is not None:
        after = (scan_history(store).filter(pl.col("batch") > upto_batch).select("person")
                 .unique().collect()["person"])  # fmt: skip
    actions = pl.DataFrame(store.delta("current_base").get_add_actions(flatten=True))
    stats = {"min.person": "low", "max.person": "high", "max.change_date": "latest"}
    if set(stats) <= set(actions.columns):
        files = actions.select([pl.col(c).alias(n) for c, n in stats.items()])
    else:  # no statistics: every file may hold anything
        files = pl.DataFrame({"low": [0], "high": [2**62], "latest": [None]},
                             schema={"low": pl.Int64, "high": pl.Int64, "latest": pl.Date})  # fmt: skip
    reader = SliceReader(wanted, upto_batch, newest, recent, after, files)
    if date is None or recent is None:
        return reader
    latest = files["latest"].max()
    suspects = [recent.filter(pl.col("reason") == "X1").select("person")]
    if latest is None or latest > date:  # type: ignore[operator]
        suspects.append(pl.scan_delta(str(store.table_path("current_base")))
                        .filter(pl.col("change_date") > date).select("person").collect())  # fmt: skip
    persons = pl.concat(suspects)["person"].unique()
    if persons.is_empty() or len(persons) > GLOBAL_CORRECTIONS:
        return reader
    history = scan_history(store, upto_batch=upto_batch).filter(
        pl.col("person").is_in(persons.implode()))  # fmt: skip
    corrected = effective_on(history, date, wanted).collect()
    return SliceReader(wanted, upto_batch, newest, recent, after, files, date, corrected)


def versions_on(
    store: Store,
    reader: SliceReader,
    *,
    date: dt.date,
    person_range: tuple[int, int],
    prefilter: pl.Expr | None = None,
) -> pl.DataFrame:
    """Per person of the slice the version in effect on `date` as known at the reader's bound
    (`reader.columns`; any status). `prefilter` (on those columns) may drop rows early: only
    rows it keeps are certain to be returned."""
    wanted = reader.columns
    keep = prefilter if prefilter is not None else pl.lit(True)
    mine = in_range(person_range)
    if reader.recent is None:
        return (as_of(store, date=date, upto_batch=reader.upto_batch, columns=wanted,
                      person_range=person_range, newest=reader.newest)
                .filter(keep).collect())  # fmt: skip
    base = pl.scan_delta(str(store.table_path("current_base"))).filter(mine)
    full = base.filter(keep).select(wanted).collect()
    newest = reader.newest.filter(mine)
    latest = reader.base_dated_by(person_range)
    if newest.is_empty() and reader.after_bound.is_empty() and latest is not None and latest <= date:
        return full  # a compacted store read for a recent date (by the files' statistics)
    dated = base.select(DATED).collect()
    # the current version per person: the delta's newest row, else the base's
    current = pl.concat([dated.join(newest.select("person"), on="person", how="anti"),
                         newest.select(DATED)]).filter(pl.col("version").is_not_null())  # fmt: skip
    late = pl.concat([
        current.filter(pl.col("change_date") > date).select("person"),
        reader.after_bound.to_frame().filter(mine),
    ]).unique()  # fmt: skip
    # filters, not joins: one pass over the slice's rows, order kept, columns copied once
    late_set = late["person"].implode()
    settled = pl.concat([
        full.filter(~pl.col("person").is_in(newest["person"].implode())
                    & ~pl.col("person").is_in(late_set)),
        newest.filter(pl.col("version").is_not_null() & keep
                      & ~pl.col("person").is_in(late_set)).select(wanted),
    ])  # fmt: skip
    if late.is_empty():
        return settled
    recent = reader.recent.filter(mine).join(late, on="person", how="semi").lazy()
    cancels = cancellations(recent).collect()
    # the as-of rule over the rows since the base alone (an X1 of an older row matches none)
    candidates = effective_on(recent, date, wanted).collect()
    rest = late.join(candidates.select("person"), on="person", how="anti")
    base_rows = (base.filter(pl.col("person").is_in(rest["person"].implode())).select(KEYS)
                 .collect().filter(pl.col("version").is_not_null()))  # fmt: skip
    usable = base_rows.filter(pl.col("change_date") <= date).join(
        cancels, on=["municipality_code", "seq"], how="anti")  # fmt: skip
    from_base = full.filter(pl.col("person").is_in(usable["person"].implode()))
    hard = base_rows.join(usable.select("person"), on="person", how="anti")["person"]
    parts = [settled, candidates.filter(keep), from_base]
    if not hard.is_empty() and reader.corrected is not None and reader.date == date:
        parts.append(reader.corrected.filter(mine & pl.col("person").is_in(hard.implode()))
                     .filter(keep))  # fmt: skip
    elif not hard.is_empty():
        history = scan_history(store, upto_batch=reader.upto_batch).filter(
            mine & pl.col("person").is_in(hard.implode()))  # fmt: skip
        parts.append(effective_on(history, date, wanted).filter(keep).collect())
    return pl.concat(parts, how="vertical_relaxed")

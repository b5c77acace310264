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

The base need not be the newest one (`pick_generation`): compaction leaves the older bases on
disk, and for a date before the newest base was compacted (the usual emergency-benefit
extract: a base date a few weeks back), every person changed since would be "late" with a base
row dated after D — a journal read of all their histories (16.6 s of a 125 M region/age
extract). Starting from an older base dated ≤ D instead, those persons take their version from
the rows since it (a month or so) or from its row; the current delta then does not cover the
rows since that base, so every person with such rows is read as late. With a bound before the
newest base, an older base at or before the bound serves the same way; without one, the slice
takes the journal path of `history.as_of`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.current import Generation, generations, in_range, newest_delta
from engine.deltalog import latest_version
from engine.history import as_of, cancellations, effective_on, scan_history
from engine.schema import CURRENT_SCHEMA
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
    recent: pl.DataFrame | None  # the persons (sorted, distinct) with rows base < batch ≤ bound;
    # None: bound before base
    after_bound: pl.Series  # persons with rows after the bound (empty without one)
    base: Generation  # the compacted base the read starts from
    newest_version: int  # the version of the (newest) base the current delta is kept against
    date: dt.date  # the date the read is for
    chosen: pl.DataFrame | None  # the as-of rule on `date` over `recent` alone, by person
    older_cancels: pl.DataFrame | None  # (municipality_code, seq) of rows before the base that
    # recent X1s cancel (both None without `recent`)
    corrected: pl.DataFrame | None = None  # versions on `date` of persons read from the journal

    @property
    def newest_covers_recent(self) -> bool:
        """Whether `newest` holds the current row of every person with `recent` rows (true for
        the newest base, whose rows since are exactly the current delta's)."""
        return self.base.version == self.newest_version

    def recent_in(self, person_range: tuple[int, int], rows: pl.DataFrame | None = None
                  ) -> pl.DataFrame:  # fmt: skip
        """The rows (default: the recent persons) of persons in the range (a zero-copy slice:
        sorted by person)."""
        rows = self.recent if rows is None else rows
        assert rows is not None
        low, high = rows["person"].search_sorted(pl.Series(person_range), side="left")
        return rows.slice(low, high - low)

    def base_dated_by(self, person_range: tuple[int, int]) -> dt.date | None:
        """The latest change_date of the base files that may hold the range (None: unknown)."""
        low, high = person_range
        files = self.base.files.filter((pl.col("low") < high) & (pl.col("high") >= low))
        if files.is_empty():
            return dt.date.min
        if files["latest"].null_count():
            return None
        return files["latest"].max()  # type: ignore[return-value]


# Persons read from the journal in one scan for all slices at most (more: slice by slice).
GLOBAL_CORRECTIONS = 5_000_000
# An older base is started from only while the journal rows since it (read into memory with
# the asked columns, ~200 bytes each) number at most this many: ~6 months of national changes.
RECENT_ROWS = 10_000_000


def _journal_rows_after(store: Store) -> Callable[[int], int]:
    """The journal rows in batches after a batch, by the files' statistics (an upper bound);
    the file list is read once."""
    actions = pl.DataFrame(store.delta("journal").get_add_actions(flatten=True))
    if actions.is_empty() or "max.batch" not in actions.columns:
        return lambda batch: 0 if actions.is_empty() else 2**62
    return lambda batch: int(actions.filter(pl.col("max.batch") > batch)["num_records"].sum())


def pick_generation(store: Store, *, upto_batch: int | None, date: dt.date) -> Generation:
    """The compacted base an as-of read on `date` known at `upto_batch` starts from.

    The newest base, unless it is too new: compacted after the bound, or holding rows dated
    after `date` (every person changed since would be read from the journal). Then the newest
    older base still on disk that is at or before the bound and dated ≤ `date` (else merely at
    or before the bound), while the journal rows since it stay few (`RECENT_ROWS`); when none
    serves, the newest base (the journal path).
    """
    found = generations(store)
    newest = next(found)
    bounded = upto_batch is None or upto_batch >= newest.batch
    latest = newest.latest()
    if bounded and latest is not None and latest <= date:
        return newest
    rows_after = _journal_rows_after(store)
    fallback = None
    for older in found:
        if rows_after(older.batch) > RECENT_ROWS:
            break
        if upto_batch is not None and older.batch > upto_batch:
            continue
        latest = older.latest()
        if latest is not None and latest <= date:
            return older
        if not bounded and fallback is None:
            fallback = older
    return fallback or newest


def slice_reader(
    store: Store, *, columns: list[str], upto_batch: int | None, date: dt.date
) -> SliceReader:
    """Read the delta's newest rows and the rows since the base, for `columns`, and the
    versions on `date` of every person whose base row may not serve (dated after it, or with a
    recent X1), in ONE journal scan instead of one per slice."""
    wanted = list(dict.fromkeys(["person", *columns]))
    base = pick_generation(store, upto_batch=upto_batch, date=date)
    current = latest_version(store.table_path("current_base"))
    if base.version == current:
        newest = newest_delta(store, [*wanted, *KEYS])
    else:  # the delta is kept against the newest base: persons with rows since `base` are late
        newest = pl.from_arrow(CURRENT_SCHEMA.empty_table()).select(  # type: ignore[union-attr]
            list(dict.fromkeys(["person", "version", *wanted, *KEYS])))
    assert isinstance(newest, pl.DataFrame)
    after = pl.Series("person", [], pl.Int64)
    if upto_batch is not None:
        after = (scan_history(store).filter(pl.col("batch") > upto_batch).select("person")
                 .unique().collect()["person"])  # fmt: skip
    if upto_batch is not None and upto_batch < base.batch:
        return SliceReader(wanted, upto_batch, newest, None, after, base, current, date, None, None)
    rows = (scan_history(store, upto_batch=upto_batch).filter(pl.col("batch") > base.batch)
            .select(list(dict.fromkeys([*RECENT_KEYS, *wanted]))).collect())  # fmt: skip
    # Only the chosen rows and the persons are kept, each sorted by person so that a slice's
    # are a range (`recent_in`): sorting every row since the base with its record columns took
    # longer than the rest of the reader (a month: 1.6 M rows, ~1 s).
    recent = rows.select(pl.col("person").unique().sort())
    # An X1 of a row since the base is settled among those rows: only one that cancels an older
    # row (perhaps the base's) can cancel a base row and send its person to the journal. (The
    # rows an X1 may name are narrowed by seq first: a hash of the few X1s, not of every row.)
    x1 = rows.filter(pl.col("reason") == "X1")
    named = rows.filter(pl.col("seq").is_in(x1["cancels_seq"].drop_nulls().implode()))
    older = x1.join(named, left_on=["cancels_municipality_code", "cancels_seq"],
                    right_on=["municipality_code", "seq"], how="anti")  # fmt: skip
    # the as-of rule over the rows since the base, for every person at once
    chosen = effective_on(rows.lazy(), date, wanted).collect().sort("person")
    reader = SliceReader(wanted, upto_batch, newest, recent, after, base, current, date, chosen,
                         cancellations(older.lazy()).collect())  # fmt: skip
    suspects = [older.select("person")]
    latest = base.latest()
    if latest is None or latest > date:
        suspects.append(base.scan().filter(pl.col("change_date") > date).select("person")
                        .collect())  # fmt: skip
    persons = pl.concat(suspects)["person"].unique()
    if persons.is_empty() or len(persons) > GLOBAL_CORRECTIONS:
        return reader
    history = scan_history(store, upto_batch=upto_batch).filter(
        pl.col("person").is_in(persons.implode()))  # fmt: skip
    corrected = effective_on(history, date, wanted).collect()
    return dataclasses.replace(reader, corrected=corrected)


def versions_on(
    store: Store,
    reader: SliceReader,
    *,
    person_range: tuple[int, int],
    prefilter: pl.Expr | None = None,
    ordered: bool = True,
) -> pl.DataFrame:
    """Per person of the slice the version in effect on the reader's date as known at its bound
    (`reader.columns`; any status). `prefilter` (on those columns) may drop rows early: only
    rows it keeps are certain to be returned. `ordered`: in person order (extracts); counts
    take the rows in any order."""
    wanted, date = reader.columns, reader.date
    keep = prefilter if prefilter is not None else pl.lit(True)
    mine = in_range(person_range)
    if reader.recent is None:
        return (as_of(store, date=date, upto_batch=reader.upto_batch, columns=wanted,
                      person_range=person_range, newest=reader.newest)
                .filter(keep).collect())  # fmt: skip
    base = reader.base.scan().filter(mine)
    full = base.filter(keep).select(wanted).collect()
    newest = reader.newest.filter(mine)
    # persons with rows since an older base than the delta's: their current row is not known here
    since = (reader.recent_in(person_range).select("person") if not reader.newest_covers_recent
             else pl.DataFrame(schema={"person": pl.Int64}))  # fmt: skip
    latest = reader.base_dated_by(person_range)
    undated = latest is not None and latest <= date  # no base row is dated after D (statistics)
    if newest.is_empty() and since.is_empty() and reader.after_bound.is_empty() and undated:
        return full  # a compacted store read for a recent date (by the files' statistics)
    # the current version per person: the delta's newest row, else the base's (which is dated
    # after D only if the files' statistics allow it)
    current = newest.select(DATED)
    if not undated:
        dated = base.select(DATED).collect()
        current = pl.concat([dated.join(newest.select("person"), on="person", how="anti"),
                             current])  # fmt: skip
    late = pl.concat([
        current.filter(pl.col("version").is_not_null() & (pl.col("change_date") > date))
        .select("person"),
        reader.after_bound.to_frame().filter(mine),
        since,
    ]).unique()  # fmt: skip
    # filters, not joins: one pass over the slice's rows, order kept, columns copied once
    late_set = late["person"].implode()
    newer = ~pl.col("person").is_in(newest["person"].implode())
    settled_new = newest.filter(pl.col("version").is_not_null() & keep
                                & ~pl.col("person").is_in(late_set)).select(wanted)  # fmt: skip
    if late.is_empty():
        return _in_order(full, [settled_new], ordered=ordered, keep=newer)
    # the as-of rule over the rows since the base alone (an X1 of an older row matches none),
    # for the late persons (read for every person at once)
    assert reader.chosen is not None and reader.older_cancels is not None
    candidates = reader.recent_in(person_range, reader.chosen).join(late, on="person",
                                                                     how="semi")  # fmt: skip
    cancels = reader.older_cancels
    rest = late.join(candidates.select("person"), on="person", how="anti")
    if undated and cancels.is_empty():  # every base row serves: no base read needed
        from_base = pl.col("person").is_in(rest["person"].implode())
        hard = pl.Series("person", [], pl.Int64)
    else:
        base_rows = (base.filter(pl.col("person").is_in(rest["person"].implode())).select(KEYS)
                     .collect().filter(pl.col("version").is_not_null()))  # fmt: skip
        usable = base_rows.filter(pl.col("change_date") <= date).join(
            cancels, on=["municipality_code", "seq"], how="anti")  # fmt: skip
        from_base = pl.col("person").is_in(usable["person"].implode())
        hard = base_rows.join(usable.select("person"), on="person", how="anti")["person"]
    # the base's rows that serve: settled, or late with a usable base row
    kept = (newer & ~pl.col("person").is_in(late_set)) | from_base
    few = [settled_new, candidates.filter(keep)]
    if not hard.is_empty() and reader.corrected is not None:
        few.append(reader.corrected.filter(mine & pl.col("person").is_in(hard.implode()))
                   .filter(keep))  # fmt: skip
    elif not hard.is_empty():
        history = scan_history(store, upto_batch=reader.upto_batch).filter(
            mine & pl.col("person").is_in(hard.implode()))  # fmt: skip
        few.append(effective_on(history, date, wanted).filter(keep).collect())
    return _in_order(full, few, ordered=ordered, keep=kept)


def _in_order(base_rows: pl.DataFrame, few: list[pl.DataFrame], *, ordered: bool,
              keep: pl.Expr | None = None) -> pl.DataFrame:  # fmt: skip
    """The base's rows that `keep` keeps (default: all; in person order: compaction writes them
    so) with the few others (the delta's, the as-of corrections') put in place by person. A
    sort of the whole slice took most of a national extract over an older base (125 M: ~45 s
    of both cores); filtering the base's rows first copied every row once more."""
    others = pl.concat([base_rows.clear(), *few], how="vertical_relaxed")
    mask = None if keep is None else base_rows.select(keep.fill_null(False)).to_series()
    if mask is not None and mask.all():
        mask = None
    if others.is_empty() or not ordered:
        kept = base_rows if mask is None else base_rows.filter(mask)
        return kept if others.is_empty() else pl.concat([kept, others], how="vertical_relaxed")
    if others.schema != base_rows.schema:
        base_rows = base_rows.cast(others.schema)  # type: ignore[arg-type]
    if not base_rows["person"].is_sorted():
        kept = base_rows if mask is None else base_rows.filter(mask)
        return pl.concat([kept, others]).sort("person")
    # one gather by an index made from where the others go among the kept rows (persons are
    # unique across both): ~half the time of a sort, a third of Polars' merge_sorted with its
    # conversion to Arrow
    others = others.sort("person")
    positions = (np.arange(base_rows.height) if mask is None
                 else np.flatnonzero(mask.to_numpy()))  # fmt: skip
    mine = base_rows["person"].to_numpy()[positions]
    at = np.searchsorted(mine, others["person"].to_numpy()) + np.arange(others.height)
    index = np.empty(len(mine) + len(at), dtype=np.int64)
    theirs = np.zeros(len(index), dtype=bool)
    theirs[at] = True
    index[~theirs] = positions
    index[at] = np.arange(base_rows.height, base_rows.height + others.height)
    return pl.concat([base_rows, others], rechunk=True)[index]

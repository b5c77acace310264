"""Derived tables caught up to the journal: current (delta), codes, positions, held.

Every derived table carries the journal version it reflects. `catch_up` brings each table from its
own version to the journal's head from the journal rows in between, so a crash between the journal
commit and the derived commits is repaired by catching up, never by guessing; running it twice
changes nothing. `rebuild` recomputes them all from the whole journal.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from engine import deltalog, faults
from engine.current import ORDER
from engine.schema import (
    BASE_ENCODINGS,
    CHANGE_FIELDS,
    CODE_ENCODINGS,
    CURRENT_SCHEMA,
    HELD_SCHEMA,
    RECORD_FIELDS,
)
from engine.store import APP_ID, SCHEMAS, Store

APPLIED = ["applied", "released"]
CATCH_UP_TABLES = ("current_delta", "codes", "positions", "held")
COMPACT_PERSONS = 4_000_000  # person keys per slice of a compaction (one base file each)
BASE_ROW_GROUP = 128 * 1024  # rows per row group of the base: reads by person prune to these


# Parquet encodings of the derived tables appended at every ingest (as their compacted forms)
APPEND_ENCODINGS = {"current_delta": BASE_ENCODINGS, "codes": CODE_ENCODINGS}


def write_appended(store: Store, name: str, frame: pl.DataFrame) -> dict[str, Any]:
    """Write rows to append to a derived table as a file of it (uncommitted: see commit_table)."""
    table = deltalog.arrow_table(frame, SCHEMAS[name])
    return deltalog.write_file(store.table_path(name), table,
                               encodings=APPEND_ENCODINGS.get(name))  # fmt: skip


def commit_table(
    store: Store, name: str, frame: pl.DataFrame, version: int, mode: str,
    *, written: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Commit `frame` to the derived table (append or overwrite), recording that it reflects
    journal batch `version` (a `txn` action of juki's app id) in the same commit. `written`:
    the appended rows' file, written already by `write_appended`."""
    path = store.table_path(name)
    if mode == "append":
        # juki's own writer (engine/deltalog.py): delta-rs's took 1 s for a month's 1.2 M
        # current rows at 10 M persons, dictionary-encoding their distinct codes
        add = written if written is not None else write_appended(store, name, frame)
        deltalog.commit(path, deltalog.latest_version(path) + 1, [add], {},
                        app_transaction=(APP_ID, version))  # fmt: skip
    else:
        from deltalake import CommitProperties, Transaction, write_deltalake

        write_deltalake(
            str(path),
            frame.select(SCHEMAS[name].names).to_arrow().cast(SCHEMAS[name]),
            mode=mode,  # type: ignore[arg-type]
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=APP_ID, version=version)]
            ),
        )
    faults.point("derived-commit")


def read_journal(store: Store, *, after: int, upto: int) -> pl.DataFrame:
    """Journal rows of the batches after `after` up to `upto` (file skipping on `batch`)."""
    return (
        pl.scan_delta(str(store.table_path("journal")))
        .filter((pl.col("batch") > after) & (pl.col("batch") <= upto))
        .collect()
    )


# what a history row is read for (versions and the current rows they make): not the journal's
# bookkeeping of the row (file, row, outcome, rule, message, raw, …), which costs decoding
HISTORY_COLUMNS = ["batch", "apply_order", "person", "version",
                   *[f.name for f in (*RECORD_FIELDS, *CHANGE_FIELDS)]]  # fmt: skip


def history_of(store: Store, persons: pl.Series, *, upto: int) -> pl.DataFrame:
    """Applied and released journal rows of the given persons (`HISTORY_COLUMNS`), in
    application order."""
    return (
        pl.scan_delta(str(store.table_path("journal")))
        .filter(
            pl.col("person").is_in(persons.implode())
            & pl.col("outcome").is_in(APPLIED)
            & (pl.col("batch") <= upto)
        )
        .select(HISTORY_COLUMNS)
        .sort("batch", "apply_order")
        .collect()
    )


def effective_stacks(history: pl.DataFrame) -> pl.DataFrame:
    """Each person's effective versions, oldest first, `_is_top` on the one in effect.

    An `X1` pops the version it cancels (ingest guarantees it is the top). A Python walk, but only
    over the histories of persons with an `X1`: cancellations are rare.
    """
    ordered = history.sort("person", "batch", "apply_order")
    persons = ordered["person"].to_list()
    reasons = ordered["reason"].to_list()
    keep: list[int] = []
    tops: list[bool] = []
    stack: list[int] = []
    for i, (person, reason) in enumerate(zip(persons, reasons, strict=True)):
        if i == 0 or persons[i - 1] != person:
            stack = []
        if reason == "X1":
            if stack:
                stack.pop()
        else:
            stack.append(i)
        if i + 1 == len(persons) or persons[i + 1] != person:
            keep.extend(stack)
            tops.extend([False] * (len(stack) - 1) + [True] * bool(stack))
    return ordered[keep].with_columns(_is_top=pl.Series(tops, dtype=pl.Boolean))


def effective_rows(history: pl.DataFrame) -> pl.DataFrame:
    """Per person the current row after its whole history; a tombstone when nothing is left."""
    last = (
        history.sort("person", "batch", "apply_order")
        .group_by("person", maintain_order=True)
        .last()
        .select(
            "person",
            last_version=pl.col("version"),
            written_batch=pl.col("batch"),
            written_order=pl.col("apply_order"),
        )
    )
    tops = effective_stacks(history).filter(pl.col("_is_top")).drop("batch", "apply_order", "_is_top")
    live = tops.join(last, on="person")
    dead = last.join(tops.select("person"), on="person", how="anti")
    return pl.concat([_as_current(live), _as_current(dead)], how="vertical_relaxed")


def _as_current(frame: pl.DataFrame) -> pl.DataFrame:
    missing = [
        pl.lit(None, dtype=pl.from_arrow(pa.array([], f.type)).dtype).alias(f.name)  # type: ignore[union-attr]
        for f in CURRENT_SCHEMA
        if f.name not in frame.columns
    ]
    return frame.with_columns(missing).select(CURRENT_SCHEMA.names)


def current_rows(
    store: Store,
    rows: pl.DataFrame,
    *,
    upto: int,
    earlier: pl.DataFrame | None = None,
    covered: pl.Series | None = None,
    earlier_upto: int = 0,
) -> pl.DataFrame:
    """New current rows for the persons that `rows` (journal rows) touch.

    A person with an `X1` needs their whole history: `earlier` may hold the applied journal rows
    up to batch `earlier_upto` of the persons in `covered` (the ingest session read them
    already, or created the person); the journal is read for any other."""
    applied = pl.col("outcome").is_in(APPLIED)
    # The rows are chosen on their keys alone and gathered once: filtering, then gathering every
    # column (a month's 1.6 M rows, ~40 columns) copied them three times.
    keys = rows.select("person", "reason", "batch", "apply_order", _i=pl.int_range(pl.len()),
                       _applied=applied).filter(pl.col("_applied"))  # fmt: skip
    if keys.is_empty():
        return pl.DataFrame(schema=pl.from_arrow(CURRENT_SCHEMA.empty_table()).schema)
    x1_persons = keys.filter(pl.col("reason") == "X1")["person"].unique()
    # The last row per person: sorted on the keys, each person's last (sorting every column
    # costs 3x more)
    last = (
        keys.filter(~pl.col("person").is_in(x1_persons.implode()))
        .select("person", "batch", "apply_order", "_i")
        .sort("person", "batch", "apply_order")
        .filter(pl.col("person") != pl.col("person").shift(-1, fill_value=-1))
    )
    newest = (
        rows[last["_i"].sort()]
        .with_columns(
            last_version=pl.col("version"),
            written_batch=pl.col("batch"),
            written_order=pl.col("apply_order"),
        )
    )
    parts = [_as_current(newest)]
    if len(x1_persons):
        if earlier is None:
            history = history_of(store, x1_persons, upto=upto)
        else:
            mine = pl.col("person").is_in(x1_persons.implode())
            before = earlier_rows(store, x1_persons, earlier, covered, upto=earlier_upto)
            history = pl.concat([before, rows.filter(applied & mine)], how="diagonal_relaxed")
        parts.append(effective_rows(history))
    return pl.concat(parts, how="vertical_relaxed")


def earlier_rows(
    store: Store,
    persons: pl.Series,
    earlier: pl.DataFrame | None,
    covered: pl.Series | None,
    *,
    upto: int,
) -> pl.DataFrame:
    """The applied journal rows up to batch `upto` of `persons`: from `earlier` (the rows an
    ingest session read) for the persons in `covered` (default: those `earlier` holds), from the
    journal for the others — an X1 that names its person by a code issued in the same session (a
    code change cancelled at once) does not make the session read that person's history."""
    rows = []
    if earlier is not None:
        rows.append(earlier.filter(pl.col("person").is_in(persons.implode())))
    known = covered if covered is not None else (
        earlier["person"] if earlier is not None else persons.clear())  # fmt: skip
    unread = persons.filter(~persons.is_in(known.implode()))
    if len(unread):
        rows.append(history_of(store, unread, upto=upto))
    return pl.concat(rows, how="diagonal_relaxed")


def code_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Codes first issued by these journal rows: (kind, code as int64, person, batch), sorted by
    kind and code: a lookup merges a sorted file with its keys as it is (an ingest's next group
    probes every file appended since the last compaction: sorting each one again was half of a
    125 M initial load)."""
    parts = []
    for kind, column, flag in ((1, "resident_code", "issued_resident_code"),
                               (2, "my_number", "issued_my_number")):  # fmt: skip
        parts.append(
            rows.filter(pl.col(flag).fill_null(False)).select(
                kind=pl.lit(kind, pl.Int8),
                code=pl.col(column).cast(pl.Int64),
                person="person",
                batch="batch",
            ).sort("code")  # (one int64 key per kind: a sort on (kind, code) was 9 % of a load)
        )
    return pl.concat(parts)


def position_rows(store: Store, rows: pl.DataFrame) -> pl.DataFrame:
    """Last used seq per municipality, merged with the table's."""
    used = rows.filter(pl.col("sequenced").fill_null(False)).select("municipality_code", "seq")
    old = pl.read_delta(str(store.table_path("positions"))).rename({"last_seq": "seq"})
    return (
        pl.concat([old, used.cast({"seq": pl.Int64})])
        .group_by("municipality_code")
        .agg(last_seq=pl.col("seq").max())
        .sort("municipality_code")
    )


def held_rows(store: Store, rows: pl.DataFrame) -> pl.DataFrame:
    """Held rows still waiting: the table's and the new ones, less those released or rejected."""
    old = pl.read_delta(str(store.table_path("held")))
    new = rows.filter(pl.col("outcome") == "held").select(HELD_SCHEMA.names)
    done = rows.filter(
        pl.col("outcome").is_in(["released", "rejected"]) & pl.col("sequenced").fill_null(False)
    ).select("municipality_code", "seq")
    return (
        pl.concat([old, new.cast(old.schema)])
        .join(done, on=["municipality_code", "seq"], how="anti")
        .sort("municipality_code", "seq")
    )


@dataclass(frozen=True)
class CatchUp:
    """What brings the derived tables to journal batch `head`: per table the rows to commit and
    how (`append` / `overwrite`), and the files of appended rows already written (uncommitted)."""

    head: int
    frames: dict[str, tuple[pl.DataFrame, str]]
    written: dict[str, dict[str, Any]]


def plan_catch_up(
    store: Store,
    head: int,
    rows: pl.DataFrame,
    *,
    rows_after: int,
    earlier: pl.DataFrame | None = None,
    covered: pl.Series | None = None,
    stamped: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> CatchUp | None:
    """The derived rows from journal rows in memory (every batch after `rows_after`, up to
    `head`), their appended files written; None when the rows do not reach back to what a
    table lacks. Reads the journal only up to `rows_after` (with `earlier`, see current_rows):
    an ingest plans while its own batches are still being committed, and stamped. `stamped`
    gives the current rows their batches' `recorded_at` (the rows may hold placeholders)."""
    versions = {name: store.reflected_batch(name) for name in CATCH_UP_TABLES}
    low = min(versions.values())
    if low >= head:
        return CatchUp(head, {}, {})
    if rows_after > low:
        return None
    builders: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], str]] = {
        "current_delta": (
            lambda r: current_rows(store, r, upto=head, earlier=earlier, covered=covered,
                                   earlier_upto=rows_after), "append"
        ),
        "codes": (code_rows, "append"),
        "positions": (lambda r: position_rows(store, r), "overwrite"),
        "held": (lambda r: held_rows(store, r), "overwrite"),
    }
    frames: dict[str, tuple[pl.DataFrame, str]] = {}
    written: dict[str, Future[dict[str, Any]]] = {}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="juki-derived") as pool:
        for name, (build, mode) in builders.items():
            if versions[name] >= head:
                continue
            # (rows hold the batches after rows_after: a table reflecting that needs them all)
            frames[name] = (build(rows if versions[name] <= rows_after
                                  else rows.filter(pl.col("batch") > versions[name])), mode)  # fmt: skip
            if mode == "append" and name != "current_delta":
                written[name] = pool.submit(write_appended, store, name, frames[name][0])
        if "current_delta" in frames:  # stamped last: the other tables are made meanwhile
            frame = frames["current_delta"][0]
            frames["current_delta"] = (stamped(frame) if stamped else frame, "append")
            written["current_delta"] = pool.submit(write_appended, store, "current_delta",
                                                   frames["current_delta"][0])  # fmt: skip
        return CatchUp(head, frames, {name: w.result() for name, w in written.items()})


def apply_catch_up(store: Store, plan: CatchUp) -> int:
    """Commit a plan (after the journal commits it reflects); returns its head batch."""
    # The tables are independent (each records the batch it reflects): commit them side by side.
    with ThreadPoolExecutor(max_workers=len(plan.frames) or 1,
                            thread_name_prefix="juki-derived") as pool:  # fmt: skip
        for done in [pool.submit(commit_table, store, name, frame, plan.head, mode,
                                 written=plan.written.get(name))
                     for name, (frame, mode) in plan.frames.items()]:  # fmt: skip
            done.result()
    return plan.head


def catch_up(
    store: Store,
    rows: pl.DataFrame | None = None,
    *,
    rows_after: int = 0,
    earlier: pl.DataFrame | None = None,
    covered: pl.Series | None = None,
) -> int:
    """Bring every derived table to the journal head; returns the head batch.

    `rows` may carry journal rows already in memory (every batch after `rows_after`), which
    saves reading them back; otherwise they are read from the journal. `earlier`: the applied
    journal rows up to `rows_after` of the persons in `covered` (see current_rows).
    """
    head = store.journal_head().batch
    if head == 0:
        return head
    plan = None
    if rows is not None:
        plan = plan_catch_up(store, head, rows, rows_after=rows_after, earlier=earlier,
                             covered=covered)  # fmt: skip
    if plan is None:
        low = min(store.reflected_batch(name) for name in CATCH_UP_TABLES)
        plan = plan_catch_up(store, head, read_journal(store, after=low, upto=head),
                             rows_after=low, covered=covered)  # fmt: skip
        assert plan is not None
    return apply_catch_up(store, plan)


def rebuild(store: Store, *, progress: Callable[[int, int], None] | None = None) -> int:
    """Recompute every derived table from the whole journal; returns the journal's last batch."""
    for name in ("current_base", *CATCH_UP_TABLES):
        shutil.rmtree(store.table_path(name), ignore_errors=True)
    store.ensure_tables()
    head = catch_up(store)
    if progress:
        progress(1, 1)
    return head


def compact(store: Store) -> int:
    """Merge the current delta into a new base, sorted by person; the delta starts empty again.

    Works on slices of COMPACT_PERSONS person keys (keys are dense, 0 … next_person): per slice,
    the base's and the delta's rows (pruned by the files' person statistics), the delta's newest
    row winning, tombstones dropped; memory follows the slice, never the population (after an
    initial load the delta is the whole population). The new base is sorted by person, so the
    next compaction reads each slice's base rows from a few row groups.
    A crash between the two commits leaves the delta applied twice, which reads the same.
    """
    head = catch_up(store)
    version = store.reflected_batch("current_delta")
    persons = store.journal_head().next_person
    names = CURRENT_SCHEMA.names
    base_dir = store.table_path("current_base")
    base = store.delta("current_base")
    old = pa.table(base.get_add_actions(flatten=True))["path"].to_pylist()
    adds = []
    for low in range(0, persons, COMPACT_PERSONS):
        mine = pl.col("person").is_between(low, low + COMPACT_PERSONS, closed="left")
        rows = pl.concat([
            pl.scan_delta(str(store.table_path(name))).filter(mine).select(names)
            .with_columns(_delta=pl.lit(name == "current_delta"))
            for name in ("current_base", "current_delta")
        ])  # fmt: skip
        # read, then sorted eagerly: the same sort inside the lazy query took twice as long
        # (a 125 M store's 4 M-row slice: 2.3-2.7 s against 1.2 s)
        live = (
            rows.collect()
            .sort("person", "_delta", *ORDER)
            .unique(subset="person", keep="last", maintain_order=True)
            .filter(pl.col("version").is_not_null())
            .select(names)
        )
        if live.height:
            adds.append(deltalog.write_file(base_dir, deltalog.arrow_table(live, CURRENT_SCHEMA),
                                            row_group_size=BASE_ROW_GROUP,
                                            encodings=BASE_ENCODINGS))  # fmt: skip
    deltalog.commit(base_dir, base.version() + 1, adds, {}, app_transaction=(APP_ID, version),
                    removes=old)  # fmt: skip
    empty = pl.from_arrow(CURRENT_SCHEMA.empty_table())
    commit_table(store, "current_delta", empty, version, "overwrite")  # type: ignore[arg-type]
    return head

"""Push-type change notification (プッシュ型通知, SPEC §5a): which subscriptions are due, what a run
delivers, and the `push_runs` table that holds each subscription's watermark.

A run at TS delivers, per due subscription, the rows `juki changes` gives for its targets over
the journal batches after its watermark up to the last batch recorded ≤ TS (batches are the
application order: a row held and released late is in the batch that released it, so the next
run delivers it). All due subscriptions share one window read, one code set per kind and one
history read (engine/changes.py); each subscription's targets stream from its partition through
a semi-join against the window's codes.

A delivered run is one `push_runs` row committed after its file and its provision records; the
row carries the window (`after`, `upto` batches), the file's SHA-256 and the provided records, so
a redelivery or a catch-up pull records the same rows again without recomputing anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.dates import JST
from engine.store import Store
from engine.subscriptions import Subscription

if TYPE_CHECKING:
    import polars as pl

    from engine.access import Grant

UTC_US = pa.timestamp("us", tz="UTC")
PUSH_RUNS_SCHEMA = pa.schema(
    [
        pa.field("subscription", pa.string()),
        pa.field("run_id", pa.string()),  # YYYYMMDDTHHMMSS, Japan time
        pa.field("run_at", UTC_US),  # the run's TS (`--now`)
        pa.field("number", pa.int64()),  # 1, 2, … per subscription
        pa.field("agency", pa.string()),
        pa.field("affair", pa.string()),
        pa.field("interval", pa.string()),
        pa.field("after", pa.int64()),  # window: after < batch ≤ upto
        pa.field("upto", pa.int64()),  # the new watermark
        pa.field("rows", pa.int64()),
        pa.field("file", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("columns", pa.list_(pa.string())),  # the file's columns
        pa.field("provided_codes", pa.list_(pa.string())),  # resident_code per provided row
        pa.field("provided_columns", pa.list_(pa.string())),  # columns per provided row
        pa.field("committed_at", UTC_US),
    ]
)
RUN_FIELDS = [f.name for f in PUSH_RUNS_SCHEMA if not f.name.startswith("provided_")]


def app_id(subscription: str) -> str:
    """The Delta app transaction marking a subscription's runs in `provisions` and `requests`."""
    return f"juki-push:{subscription}"


# -- calendar ------------------------------------------------------------------------------------
def run_id_of(at: dt.datetime) -> str:
    """A run's id: its TS in Japan time, to the second."""
    return at.astimezone(JST).strftime("%Y%m%dT%H%M%S")


def period_of(interval: str, at: dt.datetime) -> tuple[int, ...]:
    """The Japan-time calendar day, ISO week (from Monday) or calendar month containing `at`."""
    day = at.astimezone(JST).date()
    if interval == "daily":
        return (day.year, day.month, day.day)
    if interval == "weekly":
        iso = day.isocalendar()
        return (iso.year, iso.week)
    return (day.year, day.month)


def push_request_id(subscription: str, run_id: str) -> str:
    """The request id of a run: deterministic, so a run redone after a crash is the same file
    (shaped like other request ids: a stamp and 8 hex digits)."""
    return f"{run_id}000000-{hashlib.sha256(subscription.encode()).hexdigest()[:8]}"


# -- push_runs -----------------------------------------------------------------------------------
def read_runs(
    store: Store, *, provided: bool = False, subscription: str | None = None
) -> pl.DataFrame:
    """Delivered runs (the provided records only when asked; one subscription's or all), by
    subscription and number."""
    import polars as pl

    root = store.table_path("push_runs")
    fields = [f.name for f in PUSH_RUNS_SCHEMA] if provided else RUN_FIELDS
    if not (root / "_delta_log").is_dir():
        return pl.DataFrame(PUSH_RUNS_SCHEMA.empty_table()).select(fields)
    runs = pl.scan_delta(str(root))
    if subscription is not None:
        runs = runs.filter(pl.col("subscription") == subscription)
    return runs.select(fields).collect().sort("subscription", "number")


def watermark(sub: Subscription, runs: pl.DataFrame) -> int:
    """The last batch delivered to the subscription (its initial watermark before any run)."""
    import polars as pl

    mine = runs.filter(pl.col("subscription") == sub.name)
    return int(mine["upto"].max()) if mine.height else sub.watermark  # type: ignore[arg-type]


def is_due(sub: Subscription, runs: pl.DataFrame, at: dt.datetime) -> bool:
    """No run yet in the subscription's period (day, ISO week, month, Japan time) containing TS."""
    import polars as pl

    if not sub.active:
        return False
    period = period_of(sub.interval, at)
    stamps = runs.filter(pl.col("subscription") == sub.name)["run_at"].to_list()
    return all(period_of(sub.interval, t) != period for t in stamps)


def next_number(sub: Subscription, runs: pl.DataFrame) -> int:
    import polars as pl

    return runs.filter(pl.col("subscription") == sub.name).height + 1


def commit_runs(store: Store, rows: list[dict[str, Any]]) -> None:
    """Append delivered runs (their watermarks move): the last commit of a run."""
    from engine.appends import append

    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in PUSH_RUNS_SCHEMA}
                                  for r in rows], schema=PUSH_RUNS_SCHEMA)  # fmt: skip
    append(store.table_path("push_runs"), table)


# -- what a run delivers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One due subscription under its grant, from its watermark."""

    subscription: Subscription
    grant: Grant
    after: int


def deliveries(
    store: Store,
    plans: list[Plan],
    *,
    upto: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Per plan, (output rows, provided records) over batches after < batch ≤ upto: exactly the
    rows of `juki changes` with since/until the stamps of those batches (codes matched as known
    at `upto`, so a run redone after a crash gives the same rows)."""
    import polars as pl

    from engine.changes import (
        PREVIOUS,
        assemble,
        match_codes,
        read_history,
        record_columns,
        versions_at,
        window_of_batches,
    )
    from engine.subscriptions import scan_targets

    if not plans:
        return []
    step = progress or (lambda done, total: None)
    total = len(plans) + 2
    widest = window_of_batches(store, after=min(p.after for p in plans), upto=upto,
                               codes_upto=upto)  # fmt: skip
    for kind in sorted({p.subscription.kind for p in plans}):
        widest.codes(store, kind)  # type: ignore[arg-type]  # read once, narrowed per window
    windows = {a: widest if a == widest.after else widest.narrow(store, after=a)
               for a in {p.after for p in plans}}  # fmt: skip
    step(1, total)
    found = []
    for i, plan in enumerate(plans):
        window = windows[plan.after]
        codes = window.codes(store, plan.subscription.kind)  # type: ignore[arg-type]
        found.append(match_codes(scan_targets(store, plan.subscription), codes))
        step(2 + i, total)
    persons = pl.concat([f["person"] for f in found]).unique()
    columns = record_columns(*(p.grant for p in plans))
    earliest = min([widest.until_date, *(w.since_date for w in windows.values())])
    history = read_history(store, persons, upto=widest.upto, floor=min(windows),
                           earliest=earliest, columns=list(PREVIOUS))  # fmt: skip
    now, before = versions_at(store, history, upto=widest.upto, until=widest.until_date,
                              befores={a: w.since_date for a, w in windows.items()},
                              columns=columns)  # fmt: skip
    out = [assemble(f, windows[p.after].summary(), now, before[p.after], p.grant)
           for p, f in zip(plans, found, strict=True)]  # fmt: skip
    step(total, total)
    return out

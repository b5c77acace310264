"""The main job end to end (`juki demo` / `make demo`): a synthetic population ingested month by
month into a store that the user can then query, the last month as a cycle of scheduled jobs.

The months before the last are back-filled in process, stamped as received at the end of their
month; the last month runs as jobs (`loaders/demo_jobs.py`): its ingest, the nightly check, the
pension change check, a base-date extract and the population pyramid.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

import polars as pl

from engine.current import scan_current
from engine.dates import JST, japan_date, now_utc, parse_month
from engine.maintenance import compact, store_info
from engine.store import Store
from loaders.demo_jobs import JobLine, cycle, run_cycle
from loaders.ingest import IngestReport, ingest_files
from loaders.synthetic import generate


def month_of(path: str) -> str:
    """The period a generated file belongs to: its name up to the second '-'."""
    return "-".join(Path(path).name.split("-")[:2])


def received(period: str, first_month: str) -> Callable[[], dt.datetime]:
    """When a back-filled period's files count as received: the initial population on its
    registration day (the first generated month's first day), a month on its last day."""
    if period.startswith("0000"):
        day = parse_month(first_month)[0]
        at = dt.datetime(day.year, day.month, day.day, 9, tzinfo=JST)
    else:
        day = parse_month(period)[1]
        at = dt.datetime(day.year, day.month, day.day, 23, tzinfo=JST)
    return lambda: at


def run_demo(
    store: Store,
    *,
    samples: Path,
    residents: int = 20_000,
    months: int = 3,
    seed: int = 1,
    on_step: Callable[[str, IngestReport], None] | None = None,
    on_job: Callable[[JobLine], None] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Generate; back-fill the initial population and every month but the last; run the last
    month's cycle as jobs; return a summary of the store."""
    now = now or now_utc()
    summary = generate(samples, residents=residents, months=months, seed=seed)
    files = sorted(summary.files)
    periods = [(period, list(group)) for period, group in groupby(files, key=month_of)]
    last = periods[-1][0] if months and not periods[-1][0].startswith("0000") else None
    first_month = next((p for p, _ in periods if not p.startswith("0000")), "2024-01")
    for period, group in periods if last is None else periods[:-1]:
        report = ingest_files(store, group, clock=received(period, first_month))
        if on_step:
            label = "initial population" if period.startswith("0000") else f"month {period}"
            on_step(label, report)
    with store.writer("juki demo compact"):
        compact(store)
    if last is not None:
        jobs = cycle(store, samples=samples, month=last, today=japan_date(now), now=now)
        for line in run_cycle(store, jobs):
            if on_job:
                on_job(line)
    current = scan_current(store).select("status").collect()
    info = {r["table"]: r for r in store_info(store)}
    journal = pl.scan_delta(str(store.table_path("journal")))
    versions = journal.filter(pl.col("outcome").is_in(["applied", "released"])).select(pl.len())
    return {
        "files generated": len(files),
        "rows generated": summary.rows,
        "persons registered (status 1)": int((current["status"] == 1).sum()),
        "persons moved out, awaiting move-in (2)": int((current["status"] == 2).sum()),
        "persons removed (9)": int((current["status"] == 9).sum()),
        "versions in the history": int(versions.collect().item()),
        "codes issued": info["codes"]["rows"],
        "held rows": info["held"]["rows"],
        "journal batches (one per file)": info["journal"]["reflects"],
        "store size (MiB)": round(sum(r["bytes"] for r in info.values()) / 2**20, 1),
    }

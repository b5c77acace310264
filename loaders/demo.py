"""The main job end to end (`juki demo` / `make demo`): a synthetic population ingested month by
month into a store that the user can then query."""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

import polars as pl

from engine.current import scan_current
from engine.maintenance import compact, store_info
from engine.store import Store
from loaders.ingest import IngestReport, ingest_files
from loaders.synthetic import generate


def month_of(path: str) -> str:
    """The period a generated file belongs to: its name up to the second '-'."""
    return "-".join(Path(path).name.split("-")[:2])


def run_demo(
    store: Store,
    *,
    samples: Path,
    residents: int = 20_000,
    months: int = 3,
    seed: int = 1,
    on_step: Callable[[str, IngestReport], None] | None = None,
) -> dict[str, Any]:
    """Generate, ingest period by period, compact; return a summary of the store."""
    summary = generate(samples, residents=residents, months=months, seed=seed)
    files = sorted(summary.files)
    for period, group in groupby(files, key=month_of):
        report = ingest_files(store, list(group))
        if on_step:
            label = "initial population" if period.startswith("0000") else f"month {period}"
            on_step(label, report)
    with store.writer("juki demo compact"):
        compact(store)
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

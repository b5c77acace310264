"""National-scale runner: generate, initial load, compaction, then a month of changes.

    python -m benchmarks.scale --residents 10_000_000 --out /tmp/juki-scale
    python -m benchmarks.scale --out /tmp/juki-scale --month-on /tmp/juki-scale/loaded

The second form measures only the month's ingest, into a hard-linked copy of a prepared store
(`run` keeps one as <out>/loaded), so ingest time can be compared across store sizes.

Prints a table of juki's figures beside Polars and DuckDB baselines measured in the same run.
The month's event volumes are multiplied by --event-rate (default 12.4 = 124 M / 10 M), so a 10 M
store receives the ~1.7 M change rows of one national month, in the national month's 94 files.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

from benchmarks.baselines import duckdb_validate, link_copy, polars_validate
from engine.maintenance import compact
from engine.store import Store
from loaders.demo import month_of
from loaders.ingest import ingest_files
from loaders.synthetic import generate


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(
    residents: int, months: int, out: Path, *, seed: int = 1, event_rate: float = 12.4
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    files_dir, store_dir = out / "files", out / "store"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    summary = generate(files_dir, residents=residents, months=months, seed=seed,
                       event_rate=event_rate)  # fmt: skip
    gen_s = time.perf_counter() - t
    rows.append(("generate: residents/s written", f"{residents / gen_s:,.0f} ({gen_s:.1f} s)"))
    files = sorted(summary.files)
    initial = [f for f in files if month_of(f).startswith("0000")]
    changes = [f for f in files if not month_of(f).startswith("0000")]
    store = Store(store_dir)

    t = time.perf_counter()
    report = ingest_files(store, initial)
    load_s = time.perf_counter() - t
    n_init = report.total("applied")
    rows.append(("initial load: A4 rows/s (validated, history + derived)",
                 f"{n_init / load_s:,.0f} ({n_init:,} rows, {load_s:.1f} s)"))  # fmt: skip
    t = time.perf_counter()
    with store.writer("benchmark compact"):
        compact(store)
    rows.append(("compaction of current", f"{time.perf_counter() - t:.1f} s"))
    link_copy(store_dir, out / "loaded")  # for --month-on

    rows += month_rows(store, changes, where="")
    n, s = duckdb_validate(changes)
    rows.append(("baseline: stateless DuckDB validation of the same rows, rows/s",
                 f"{n / s:,.0f} ({s:.2f} s)"))  # fmt: skip
    rows.append(("peak RSS", f"{_rss_gib():.1f} GiB"))
    return rows


def month_rows(store: Store, files: list[str], *, where: str) -> list[tuple[str, str]]:
    """Ingest the month's files as one call, timed, beside the stateless Polars baseline."""
    t = time.perf_counter()
    report = ingest_files(store, files)
    s = time.perf_counter() - t
    n = sum(getattr(f, "applied", 0) + getattr(f, "rejected", 0) for f in report.files)
    rows = [(f"changes: {len(files)} files as one call{where}, rows/s",
             f"{n / s:,.0f} ({n:,} rows, {s:.1f} s, {report.total('rejected')} rejected)")]
    n, s = polars_validate(files)
    rows.append(("baseline: stateless Polars validation of the same rows, rows/s",
                 f"{n / s:,.0f} ({s:.2f} s)"))  # fmt: skip
    return rows


def month_on(prepared: Path, files: list[str], out: Path) -> list[tuple[str, str]]:
    """Ingest a month's files into a copy of a prepared store (loaded and compacted, e.g. by
    `run`): the copy hard-links the Parquet and log files, which Delta never changes in place, so
    a 125 M store is copied in seconds and the month can be measured again after a change."""
    store_dir = out / "month-store"
    link_copy(prepared, store_dir)
    rows = month_rows(Store(store_dir), files, where=f" into {prepared}")
    rows.append(("peak RSS", f"{_rss_gib():.1f} GiB"))
    shutil.rmtree(store_dir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--residents", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    parser.add_argument("--months", type=int, default=1)
    parser.add_argument("--event-rate", type=float, default=12.4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/juki-scale"))
    parser.add_argument("--month-on", type=Path, metavar="STORE",
                        help="only ingest the change files of --out/files into a hard-linked "
                             "copy of STORE (a store loaded and compacted from those files)")  # fmt: skip
    args = parser.parse_args()
    if args.month_on:
        changes = sorted(str(f) for f in (args.out / "files").iterdir()
                         if not month_of(str(f)).startswith("0000"))  # fmt: skip
        rows = month_on(args.month_on, changes, args.out)
    else:
        rows = run(args.residents, args.months, args.out, seed=args.seed,
                   event_rate=args.event_rate)  # fmt: skip
    width = max(len(k) for k, _ in rows)
    if not args.month_on:
        print(f"juki scale run: {args.residents:,} residents, {args.months} month(s) of changes "
              f"at {args.event_rate}x the per-resident national event rate")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    import os
    import sys

    main()
    sys.stdout.flush()
    os._exit(0)

"""W1 at national size: `juki changes` of N My-Number targets over a month's window, beside the
straightforward DuckDB SQL that joins the targets with the full current table.

    python -m benchmarks.w1_scale --store STORE --targets 100_000_000 --since TS

STORE is a store with a month of changes recorded after TS (e.g. the scale runner's 125 M store
after `--month-on`). The targets are N My Numbers drawn from the current base (written once to
<store>/../w1/). juki runs as the CLI in a child process (its peak RSS is the child's); the
baseline writes the joined rows of persons whose current version was recorded after TS, which is
less than juki delivers (reasons, previous values, provision records, manifest).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.baselines import sample_my_numbers
from benchmarks.push_scale import REGISTRY  # JPS, affair pension-change with `changes`

JUKI = [sys.executable, "-m", "engine.cli"]


def targets_file(store: Path, work: Path, n: int) -> Path:
    path = work / f"targets-{n}.parquet"
    if not path.exists():
        sample_my_numbers(store, n, seed=1, ordered=True).write_parquet(path)
    return path


def juki_changes(store: Path, targets: Path, since: str, out: Path) -> tuple[float, str]:
    t = time.perf_counter()
    result = subprocess.run(
        [*JUKI, "changes", str(targets), "--since", since, "--agency", "JPS", "--affair",
         "pension-change", "--out", str(out), "--store", str(store)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - t, result.stderr.strip().splitlines()[-1]


def duckdb_join(store: Path, targets: Path, since: str, out: Path) -> float:
    import duckdb
    from deltalake import DeltaTable

    files = [f for name in ("current_base", "current_delta")
             for f in DeltaTable(str(store / name)).file_uris()]  # fmt: skip
    listed = ", ".join(f"'{f}'" for f in files)
    con = duckdb.connect()
    con.sql("SET memory_limit = '10GB'")
    t = time.perf_counter()
    con.sql(f"""
        copy (select c.* from read_parquet('{targets}') as t
              join read_parquet([{listed}], union_by_name = true) as c using (my_number)
              where c.recorded_at > TIMESTAMPTZ '{since}')
        to '{out}' (format parquet)""")  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--targets", type=lambda s: int(s.replace("_", "")), default=100_000_000)
    parser.add_argument("--since", required=True, help="window start (ISO 8601)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    work = args.store.parent / "w1"
    work.mkdir(exist_ok=True)
    (work / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    subprocess.run([*JUKI, "registry", "load", str(work / "registry.toml"), "--store",
                    str(args.store)], check=True, capture_output=True)  # fmt: skip
    targets = targets_file(args.store, work, args.targets)
    seconds, summary = juki_changes(args.store, targets, args.since, work / "changes.parquet")
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"juki changes, {args.targets:,} targets: {seconds:.1f} s, peak RSS {child:.1f} GiB "
          f"({summary})")  # fmt: skip
    if not args.skip_baseline:
        base = duckdb_join(args.store, targets, args.since, work / "duckdb.parquet")
        print(f"baseline: DuckDB join of the targets with the full current table: {base:.1f} s "
              f"(juki / DuckDB = {seconds / base:.1f})")  # fmt: skip


if __name__ == "__main__":
    import os

    main()
    sys.stdout.flush()
    os._exit(0)

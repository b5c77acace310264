"""The self-check (`juki audit self`) over a year of provision records, at growing sizes, with
the curve through them extrapolated to the national year (1.5 billion records).

    python -m benchmarks.selfcheck_scale --store STORE --work DIR --records 25_000_000,100_000_000

STORE is only read: DIR/store is a hard-linked copy of it (its codes resolve a My Number to
every resident code the person held) whose provision records are replaced by a synthetic year
written by juki's own writer (`ProvisionBatch`, one commit per request, as `provide` does):
twelve monthly change checks of the pension service (~80 % of the records, as in the national
figures) and 48 smaller requests, each over persons drawn at random from the store, spread over
2026. At each size the same persons (who received records) are checked through `audit_self`,
each in turn, timed from the My Number to the page of records; then `juki audit compact` (the
daily job) rewrites each bucket-year sorted, and they are checked again. The records are
written at the first size and added to for the next, so the sizes share their first records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from benchmarks.baselines import link_copy
from engine.provision import ProvisionBatch, audit_self, compact
from engine.store import Store

NATIONAL_YEAR = 1_500_000_000
PENSION_SHARE = 0.8  # 1.22 of the 1.5 billion a year are the pension service's monthly checks
SMALL_REQUESTS = 48
COLUMNS = "resident_code,my_number,surname,given_name,birth_date,sex,address,municipality_code"


@dataclass(frozen=True)
class _Party:
    code: str


@dataclass(frozen=True)
class _Grant:
    """What `ProvisionBatch.write` reads of a grant."""

    agency: _Party
    affair: _Party
    function: str
    request_id: str


class _Size(NamedTuple):
    """What one size of the year measured (seconds)."""

    records: int
    written_in: float
    loose: list[float]  # per person, as written
    tight: list[float]  # per person, after `audit compact`
    compacted_in: float
    found: int


def _resident_codes(store: Store) -> np.ndarray:
    """Every person's current resident code (int64)."""
    from engine.current import scan_current

    return (scan_current(store).select(pl.col("resident_code").cast(pl.Int64)).collect()
            ["resident_code"].to_numpy())  # fmt: skip


def _my_numbers(store: Store, resident_codes: list[int]) -> list[int]:
    """The current My Numbers of the persons holding these resident codes."""
    from engine.current import scan_current

    return (scan_current(store)
            .filter(pl.col("resident_code").cast(pl.Int64).is_in(resident_codes))
            .select(pl.col("my_number").cast(pl.Int64)).collect()["my_number"].to_list())  # fmt: skip


def _requests(records: int, start: int) -> list[tuple[str, int, dt.datetime]]:
    """(request id, size, provided_at) of the year's requests adding `records` records, the
    n-th set of them (`start`) dated apart from the earlier sets."""
    year = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    pension = int(records * PENSION_SHARE) // 12
    small = (records - 12 * pension) // SMALL_REQUESTS
    out = [(f"selfcheck-{start}-pension-{m:02d}", pension,
            year + dt.timedelta(days=30.4 * m + 1, seconds=start)) for m in range(12)]  # fmt: skip
    out += [(f"selfcheck-{start}-small-{i:02d}", small,
             year + dt.timedelta(days=7.6 * i + 3, seconds=start)) for i in range(SMALL_REQUESTS)]  # fmt: skip
    return out


def _write_year(store: Store, codes: np.ndarray, records: int, start: int, seed: int) -> float:
    """Append `records` records in the year's requests; returns the seconds taken."""
    rng = np.random.default_rng(seed + start)
    began = time.perf_counter()
    for request_id, size, at in _requests(records, start):
        grant = _Grant(_Party("JPS" if "pension" in request_id else "MHLW"),
                       _Party("pension-change" if "pension" in request_id else "benefit"),
                       "changes" if "pension" in request_id else "lookup", request_id)  # fmt: skip
        picked = codes[rng.integers(0, len(codes), size)]  # (a target may repeat: SPEC §5)
        batch = ProvisionBatch()
        for part in np.array_split(picked, max(1, len(picked) // 4_000_000)):
            batch.add(pl.DataFrame({
                "resident_code": pl.Series(part).cast(pl.String).str.zfill(11),
                "columns": pl.Series([COLUMNS] * len(part), dtype=pl.Enum([COLUMNS])),
            }))  # fmt: skip
        batch.commit(store, grant, provided_at=at)  # type: ignore[arg-type]
    return time.perf_counter() - began


def _check(store: Store, numbers: list[int]) -> tuple[list[float], int]:
    """Seconds per self-check of each My Number (each its first page of 50), and the records
    the checks found in all."""
    seconds, found = [], 0
    for n in numbers:
        began = time.perf_counter()
        page = audit_self(store, f"{n:012d}", limit=50)
        seconds.append(time.perf_counter() - began)
        found += len(page.records)
    return seconds, found


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _fit(sizes: list[int], medians: list[float]) -> tuple[float, float]:
    """Least-squares line seconds = a + b · records through the measured medians."""
    if len(sizes) < 2:
        return medians[0], 0.0
    b, a = np.polyfit(np.array(sizes, dtype=float), np.array(medians), 1)
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--store", type=Path, required=True, help="a store with persons' codes")
    parser.add_argument("--work", type=Path, default=Path("/tmp/juki-selfcheck"))
    parser.add_argument("--records", default="25_000_000,100_000_000",
                        help="comma-separated sizes of the year, ascending")  # fmt: skip
    parser.add_argument("--persons", type=int, default=50, help="persons checked at each size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep DIR/store afterwards")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.records.split(",")]
    if sizes != sorted(sizes):
        parser.error("--records: sizes ascending")

    work = args.work / "store"
    args.work.mkdir(parents=True, exist_ok=True)
    link_copy(args.store, work)
    shutil.rmtree(work / "provisions", ignore_errors=True)
    store = Store(work)
    codes = _resident_codes(store)
    rows: list[_Size] = []
    written = 0
    checked: list[int] = []
    for size in sizes:
        seconds = _write_year(store, codes, size - written, start=len(rows), seed=args.seed)
        written = size
        if not checked:  # persons with records from the first size on
            first = (pl.scan_delta(str(work / "provisions")).select("resident_code")
                     .head(100_000).collect()["resident_code"].cast(pl.Int64))  # fmt: skip
            picked = first.sample(min(args.persons, first.len()), seed=args.seed)
            checked = _my_numbers(store, picked.to_list())
        loose, found = _check(store, checked)
        began = time.perf_counter()
        compact(store)
        compacted_in = time.perf_counter() - began
        tight, _ = _check(store, checked)
        rows.append(_Size(size, seconds, loose, tight, compacted_in, found))
        print(f"{size:>14,} records: written in {seconds:.1f} s; self-check median "
              f"{_ms(statistics.median(loose))} (max {_ms(max(loose))}) as written, "
              f"{_ms(statistics.median(tight))} (max {_ms(max(tight))}) after `audit compact` "
              f"({compacted_in:.1f} s); {found} records for {len(checked)} persons",
              flush=True)  # fmt: skip
    for label, times in (("as written", [r.loose for r in rows]),
                         ("after `audit compact`", [r.tight for r in rows])):  # fmt: skip
        medians = [statistics.median(t) for t in times]
        a, b = _fit([r.records for r in rows], medians)
        if b <= 0:  # no growth measured: the largest size's median stands for the national year
            print(f"{label}: no growth with the records measured (medians "
                  f"{', '.join(_ms(m) for m in medians)}); the national year is "
                  f"{NATIONAL_YEAR / rows[-1].records:.0f}x the largest size [≤ 1 s]")  # fmt: skip
        else:
            print(f"{label}: seconds ≈ {a:.3f} + {b * 1e9:.3f} per billion records: "
                  f"{a + b * NATIONAL_YEAR:.2f} s at the national year's {NATIONAL_YEAR:,} "
                  "[≤ 1 s]")  # fmt: skip
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    import os

    main()
    sys.stdout.flush()
    os._exit(0)

"""Extract scale runner (issue 5): the base-date full extract and a one-prefecture region/age
extract on a prepared store, each run as the `juki` command an operator would type, with the
full-scan Polars query of the same beside it.

    python -m benchmarks.extract_scale --store /tmp/s125/loaded --out /tmp/x125 --date 2024-01-15

The store is link-copied (`--store` is never written) and given a registry; each command runs in
its own process, so the peak memory printed is that command's alone. Baseline: Polars over the
journal (the as-of rule of SPEC §1 written directly: applied rows, X1 cancellations anti-joined,
change_date ≤ D, the last version per person, status 1), writing the same rows to Parquet. At
national size the baselines hold the population in memory (out of memory on 24 GiB);
`--skip-baseline` leaves them out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from benchmarks.baselines import link_copy

REGISTRY = """
[[agency]]
code = "MHLW"
name = "厚生労働省"
scope = "national"

[[affair]]
code = "benefit"
name = "特定公的給付の支給"
agencies = ["MHLW"]
functions = ["extract", "stats"]
columns = ["resident_code", "surname", "given_name", "birth_date", "address", "municipality_code",
           "status"]
"""
COLUMNS = ["resident_code", "surname", "given_name", "birth_date", "address", "municipality_code",
           "status", "protected"]  # fmt: skip


def _juki(*args: str) -> tuple[float, float, str]:
    """Seconds, peak GiB and the summary line of one `juki` command in its own process (peak
    by /usr/bin/time: a child's ru_maxrss can count the parent's pages it was forked with)."""
    juki = str(Path(sys.executable).parent / "juki")
    timer = ["/usr/bin/time", "-f", "juki-peak-kb %M"] if Path("/usr/bin/time").exists() else []
    t = time.perf_counter()
    done = subprocess.run([*timer, juki, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"juki {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    peaks = [int(x.split()[1]) for x in lines if x.startswith("juki-peak-kb ")]
    line = [x for x in lines if not x.startswith("juki-peak-kb ")][-1]
    return seconds, (peaks[0] / 2**20 if peaks else float("nan")), line


def _polars_as_of(store: Path, day: dt.date, out: Path, prefecture: str | None,
                  ages: tuple[int, int] | None) -> tuple[float, int]:  # fmt: skip
    """The full-scan baseline: seconds and rows written."""
    from engine.age import age_expr

    t = time.perf_counter()
    journal = pl.scan_delta(str(store / "journal")).filter(
        pl.col("outcome").is_in(["applied", "released"])
    )
    cancelled = journal.filter(pl.col("reason") == "X1").select(
        municipality_code=pl.col("cancels_municipality_code"), seq=pl.col("cancels_seq"))  # fmt: skip
    frame = (
        journal.filter((pl.col("reason") != "X1") & (pl.col("change_date") <= day))
        .join(cancelled, on=["municipality_code", "seq"], how="anti")
        .sort("batch", "apply_order")
        .group_by("person")
        .last()
        .filter(pl.col("status") == 1)
    )
    if prefecture is not None:
        frame = frame.filter(pl.col("prefecture_code") == prefecture)
    if ages is not None:
        frame = frame.with_columns(age=age_expr(pl.col("birth_date"), day)).filter(
            pl.col("age").is_between(*ages))  # fmt: skip
    result = frame.select(COLUMNS + (["age"] if ages else [])).collect()
    result.write_parquet(out)
    return time.perf_counter() - t, result.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="a prepared store (not written)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--prefecture", default="13")
    parser.add_argument("--min-age", type=int, default=20)
    parser.add_argument("--max-age", type=int, default=39)
    parser.add_argument("--skip-baseline", action="store_true",
                        help="leave out the baselines (they hold the population in memory)")
    options = parser.parse_args()
    out = options.out
    store = out / "store"
    out.mkdir(parents=True, exist_ok=True)
    link_copy(options.store, store)
    for table in ("provisions", "requests"):
        subprocess.run(["rm", "-rf", str(store / table)], check=True)
    (out / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    _juki("registry", "load", str(out / "registry.toml"), "--store", str(store))
    who = ["--agency", "MHLW", "--affair", "benefit", "--store", str(store)]
    day = options.date.isoformat()
    results: dict[str, object] = {"date": day}

    seconds, peak, line = _juki("extract", "region-age", "--date", day, "--min-age",
                                str(options.min_age), "--max-age", str(options.max_age),
                                "--prefecture", options.prefecture, "--out",
                                str(out / "region-age.parquet"), *who)  # fmt: skip
    print(f"juki region-age ({options.prefecture}, {options.min_age}–{options.max_age}): "
          f"{seconds:.1f} s, peak {peak:.1f} GiB — {line}", flush=True)  # fmt: skip
    results["region_age"] = {"seconds": seconds, "peak_gib": peak}
    if not options.skip_baseline:
        base_s, base_rows = _polars_as_of(store, options.date,
                                          out / "baseline-region-age.parquet", options.prefecture,
                                          (options.min_age, options.max_age))  # fmt: skip
        print(f"Polars full scan, same region/age: {base_s:.1f} s ({base_rows:,} rows); "
              f"juki is {base_s / seconds:.1f}× faster", flush=True)  # fmt: skip
        results["region_age"] = {**results["region_age"], "baseline_seconds": base_s}  # type: ignore[dict-item]

    seconds, peak, line = _juki("extract", "base-date", "--date", day, "--out",
                                str(out / "base-date.parquet"), *who)  # fmt: skip
    print(f"juki base-date: {seconds:.1f} s, peak {peak:.1f} GiB — {line}", flush=True)
    results["base_date"] = {"seconds": seconds, "peak_gib": peak}
    (out / "base-date.parquet").unlink()  # gigabytes at national size
    if not options.skip_baseline:
        base_s, base_rows = _polars_as_of(store, options.date, out / "baseline-base-date.parquet",
                                          None, None)  # fmt: skip
        print(f"Polars full scan, same base date: {base_s:.1f} s ({base_rows:,} rows); "
              f"juki is {base_s / seconds:.1f}× faster", flush=True)  # fmt: skip
        results["base_date"] = {**results["base_date"], "baseline_seconds": base_s}  # type: ignore[dict-item]
        (out / "baseline-base-date.parquet").unlink()

    seconds, peak, line = _juki("stats", "--date", day, "--by", "prefecture,age5,sex", "--out",
                                str(out / "stats.parquet"), *who)  # fmt: skip
    print(f"juki stats by prefecture, age5, sex: {seconds:.1f} s, peak {peak:.1f} GiB — {line}")
    results["stats"] = {"seconds": seconds, "peak_gib": peak}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

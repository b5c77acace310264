"""Baselines measured beside juki in the same run: stateless validation of notification rows
written directly in Polars and in DuckDB SQL (check digits of the three codes, dates, reason)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

REASONS = ["A1", "A2", "A3", "A4", "D1", "D2", "D3", "D4",
           "M1", "M2", "M3", "M4", "M5", "M6", "M7", "X1"]  # fmt: skip


def polars_validate(paths: Sequence[str]) -> tuple[int, float]:
    """Rows and seconds for a plain Polars validation pass over the files."""
    started = time.perf_counter()
    frame = pl.scan_parquet(list(paths)).select(
        "municipality_code", "resident_code", "my_number", "change_date", "birth_date", "reason"
    )
    mn = pl.col("my_number").cast(pl.Int64, strict=False)
    rc = pl.col("resident_code").cast(pl.Int64, strict=False)
    mc = pl.col("municipality_code").cast(pl.Int64, strict=False)

    def mod11(code: pl.Expr, weights: Sequence[int]) -> pl.Expr:
        body = code // 10
        n = len(weights)
        s = pl.sum_horizontal([((body // 10 ** (n - 1 - i)) % 10) * w for i, w in enumerate(weights)])
        r = s % 11
        return pl.when(r <= 1).then(0).otherwise(11 - r) == code % 10

    mc_s = pl.sum_horizontal([((mc // 10 ** (5 - i)) % 10) * w for i, w in enumerate((6, 5, 4, 3, 2))])
    out = frame.select(
        ok=mod11(mn, (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        & mod11(rc, (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        & ((11 - mc_s % 11) % 10 == mc % 10)
        & pl.col("change_date").cast(pl.Date, strict=False).is_not_null()
        & pl.col("reason").is_in(REASONS)
    ).collect()
    return out.height, time.perf_counter() - started


def duckdb_validate(paths: Sequence[str]) -> tuple[int, float]:
    """Rows and seconds for the same validation written in DuckDB SQL."""
    import duckdb

    started = time.perf_counter()
    files = ", ".join(f"'{p}'" for p in paths)

    def mod11(col: str, weights: Sequence[int]) -> str:
        n = len(weights)
        terms = " + ".join(f"(({col} // 10 // {10 ** (n - 1 - i)}) % 10) * {w}"
                           for i, w in enumerate(weights))  # fmt: skip
        return f"(CASE WHEN ({terms}) % 11 <= 1 THEN 0 ELSE 11 - ({terms}) % 11 END) = {col} % 10"

    sql = f"""
        WITH t AS (SELECT TRY_CAST(my_number AS BIGINT) mn, TRY_CAST(resident_code AS BIGINT) rc,
                          TRY_CAST(municipality_code AS BIGINT) mc, change_date, reason
                   FROM read_parquet([{files}]))
        SELECT count(*) FILTER (WHERE {mod11('mn', (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2))}
                                  AND {mod11('rc', (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))}
                                  AND TRY_CAST(change_date AS DATE) IS NOT NULL
                                  AND reason IN ({", ".join(f"'{r}'" for r in REASONS)})),
               count(*)
        FROM t"""
    con = duckdb.connect()
    _, rows = con.execute(sql).fetchone()  # type: ignore[misc]
    con.close()
    return int(rows), time.perf_counter() - started


def link_copy(source: Path, target: Path) -> None:
    """A copy of a store that hard-links its files (Delta never changes a data or log file in
    place, so a 125 M store copies in seconds); lock files get fresh inodes of their own."""
    import shutil
    import subprocess

    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)
    for lock in (".writer.lock", ".push.lock"):
        (target / lock).unlink(missing_ok=True)
    shutil.rmtree(target / ".jobs", ignore_errors=True)


def sample_my_numbers(store: Path, n: int, *, seed: int, ordered: bool) -> pl.DataFrame:
    """n My Numbers drawn without replacement from the current base of `store` (a Polars
    frame with `my_number`), in base order or (not `ordered`) in random order."""
    import numpy as np

    numbers = pl.scan_delta(str(store / "current_base")).select("my_number").collect()
    rows = np.random.default_rng(seed).choice(numbers.height, size=min(n, numbers.height),
                                              replace=False)  # fmt: skip
    return numbers[np.sort(rows) if ordered else rows]

"""Workload W5 (`juki check`'s hot core): uniqueness of both code columns, reporting which codes
are duplicated, plus the check digits of all three codes, over national-size int64 columns.

The same work three ways, each returning the same `W5Result` (the tests and runners compare
them): juki's numba kernels, plain Polars expressions, DuckDB SQL. `synthetic_codes` simulates
a population's columns directly as arrays, with a few planted duplicates and bad check digits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.codes import (
    MUNICIPALITY_WEIGHTS,
    MY_NUMBER_WEIGHTS,
    RESIDENT_CODE_WEIGHTS,
    with_check_digit,
)
from engine.kernels.checkdigits import bad_check_digits
from engine.kernels.unique import duplicated_codes

COLUMNS = ("resident_code", "my_number", "municipality_code")
PLANTED = 1_000  # duplicates per code column, and bad check digits per column


@dataclass(frozen=True)
class W5Result:
    """Duplicated codes per column (sorted) and the number of bad check digits per column."""

    duplicated: dict[str, np.ndarray]
    bad: dict[str, int]
    seconds: float

    def same_as(self, other: W5Result) -> bool:
        return self.bad == other.bad and all(
            np.array_equal(self.duplicated[c], other.duplicated[c]) for c in self.duplicated
        )


def synthetic_codes(persons: int, *, seed: int = 1) -> dict[str, np.ndarray]:
    """resident_code, my_number (random bodies + check digit), municipality_code (one of ~1,700
    bodies + check digit) for `persons`, with PLANTED duplicates and bad check digits each."""
    rng = np.random.default_rng(seed)
    rc = with_check_digit(rng.integers(0, 10**10, persons, dtype=np.int64), "resident_code")
    mn = with_check_digit(rng.integers(0, 10**11, persons, dtype=np.int64), "my_number")
    towns = with_check_digit(rng.choice(np.arange(1_000, 48_000), 1_700, replace=False),
                             "municipality_code")  # fmt: skip
    mc = towns[rng.integers(0, len(towns), persons)]
    planted = min(PLANTED, persons // 4)
    for codes in (rc, mn):
        at = rng.choice(persons, 2 * planted, replace=False)
        codes[at[:planted]] = codes[at[planted:]]
    for codes in (rc, mn, mc):
        at = rng.choice(persons, planted, replace=False)
        codes[at] = codes[at] // 10 * 10 + (codes[at] % 10 + 1) % 10
    return {"resident_code": rc, "my_number": mn, "municipality_code": mc}


def juki_w5(codes: dict[str, np.ndarray]) -> W5Result:
    started = time.perf_counter()
    duplicated = {c: duplicated_codes(codes[c]) for c in ("resident_code", "my_number")}
    bad = {c: int(bad_check_digits(codes[c], c).sum()) for c in COLUMNS}  # type: ignore[arg-type]
    return W5Result(duplicated, bad, time.perf_counter() - started)


def _polars_check(code: pl.Expr, weights: tuple[int, ...], municipality: bool) -> pl.Expr:
    body = code // 10
    n = len(weights)
    total = pl.sum_horizontal([((body // 10 ** (n - 1 - i)) % 10) * w for i, w in enumerate(weights)])
    if municipality:
        return (11 - total % 11) % 10
    r = total % 11
    return pl.when(r <= 1).then(0).otherwise(11 - r)


WEIGHTS = {"resident_code": RESIDENT_CODE_WEIGHTS, "my_number": MY_NUMBER_WEIGHTS,
           "municipality_code": MUNICIPALITY_WEIGHTS}  # fmt: skip


def polars_w5(codes: dict[str, np.ndarray]) -> W5Result:
    """The same checks written directly in Polars: group_by + filter, digit arithmetic."""
    started = time.perf_counter()
    frame = pl.DataFrame(codes)
    duplicated = {
        c: frame.lazy().group_by(c).len().filter(pl.col("len") > 1).select(c).sort(c)
        .collect()[c].to_numpy()
        for c in ("resident_code", "my_number")
    }  # fmt: skip
    checks = frame.lazy().select(
        [(pl.col(c) % 10 != _polars_check(pl.col(c), WEIGHTS[c], c == "municipality_code"))
         .sum().alias(c) for c in COLUMNS]
    ).collect()  # fmt: skip
    bad = {c: int(checks[c][0]) for c in COLUMNS}
    return W5Result(duplicated, bad, time.perf_counter() - started)


def _sql_check(col: str, weights: tuple[int, ...], municipality: bool) -> str:
    n = len(weights)
    total = " + ".join(f"(({col} // 10 // {10 ** (n - 1 - i)}) % 10) * {w}"
                       for i, w in enumerate(weights))  # fmt: skip
    if municipality:
        return f"(11 - ({total}) % 11) % 10"
    return f"CASE WHEN ({total}) % 11 <= 1 THEN 0 ELSE 11 - ({total}) % 11 END"


def duckdb_w5(codes: dict[str, np.ndarray]) -> W5Result:
    """The same checks in DuckDB SQL: GROUP BY … HAVING count(*) > 1, digit arithmetic."""
    import duckdb
    import pyarrow as pa

    started = time.perf_counter()
    con = duckdb.connect()
    con.register("population", pa.table(codes))
    duplicated = {
        c: con.execute(f"SELECT {c} FROM population GROUP BY {c} HAVING count(*) > 1 "
                       f"ORDER BY {c}").fetchnumpy()[c].astype(np.int64)
        for c in ("resident_code", "my_number")
    }  # fmt: skip
    terms = ", ".join(
        f"count(*) FILTER (WHERE {c} % 10 <> {_sql_check(c, WEIGHTS[c], c == 'municipality_code')})"
        for c in COLUMNS
    )
    row = con.execute(f"SELECT {terms} FROM population").fetchone()
    con.close()
    assert row is not None
    bad = {c: int(v) for c, v in zip(COLUMNS, row, strict=True)}
    return W5Result(duplicated, bad, time.perf_counter() - started)

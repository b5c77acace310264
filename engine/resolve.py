"""From the codes in a request or target file to persons (SPEC §5).

A code matches the person who holds it or ever held it as known at the read's bound, even a code
issued by a notification later cancelled (codes are never reissued): the `codes` table keeps
every issued code with the batch that issued it, so the bound is a batch number. Code text is
parsed to int64 from the Arrow bytes by a numba kernel (width, ASCII digits, check digit), never
per row in Python.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import polars as pl

from engine.codes import MY_NUMBER_WEIGHTS, RESIDENT_CODE_WEIGHTS, WIDTH
from engine.schema import CODE_KIND
from engine.store import Store

CodeColumn = Literal["my_number", "resident_code"]


def parse_codes(text: pl.Expr, kind: CodeColumn) -> pl.Expr:
    """int64 of each well-formed code (right width, digits, check digit), else null."""
    return text.map_batches(lambda s: parse_code_series(s, kind), return_dtype=pl.Int64)


def parse_code_series(codes: pl.Series, kind: CodeColumn) -> pl.Series:
    """int64 of each well-formed code (right width, digits only, check digit), else null.

    Reads Polars' own string views chunk by chunk, zero-copy, with a numba kernel
    (engine/code_kernels.py): no copy of 100 M strings, no per-row Python.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from engine.code_kernels import VIEW, parse_views_into

    if codes.dtype != pl.String:
        codes = codes.cast(pl.String)
    weights = np.array(CHECK_WEIGHTS[kind], dtype=np.int64)
    values = np.empty(len(codes), np.int64)
    ok = np.empty(len(codes), np.bool_)
    jobs, start = [], 0
    for chunk in codes.get_chunks():
        arrow = chunk.to_arrow(compat_level=pl.CompatLevel.newest())
        if arrow.type != pa.string_view():
            arrow = pc.cast(arrow, pa.string_view())
        end = start + len(arrow)
        if len(arrow):
            views = np.frombuffer(arrow.buffers()[1], dtype=np.uint8)
            views = views[arrow.offset * VIEW : (arrow.offset + len(arrow)) * VIEW]
            jobs.append((arrow, views, start, end))
        start = end

    def parse(job: tuple[Any, np.ndarray, int, int]) -> None:
        arrow, views, lo, hi = job
        parse_views_into(views, WIDTH[kind], weights, values[lo:hi], ok[lo:hi])
        if arrow.null_count:
            ok[lo:hi] &= pc.is_valid(arrow).to_numpy(zero_copy_only=False)

    if len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=PARSE_THREADS) as pool:
            list(pool.map(parse, jobs))
    else:
        for job in jobs:
            parse(job)
    validity = pa.py_buffer(np.packbits(ok, bitorder="little"))
    parsed = pa.Array.from_buffers(pa.int64(), len(values), [validity, pa.py_buffer(values)])
    return pl.Series(codes.name, parsed)


# Threads parsing a request file's chunks (the machine this is sized for has 2 cores).
PARSE_THREADS = 2

CHECK_WEIGHTS = {"my_number": MY_NUMBER_WEIGHTS, "resident_code": RESIDENT_CODE_WEIGHTS}


def known_batch(store: Store, known_at: dt.datetime | None) -> int | None:
    """The last batch recorded at or before `known_at` (0: none); None without a bound."""
    if known_at is None:
        return None
    found = (
        pl.scan_delta(str(store.table_path("journal")))
        .filter(pl.col("recorded_at") <= known_at)
        .select(pl.col("batch").max())
        .collect()
        .item()
    )
    return int(found) if found is not None else 0


def batch_stamp(store: Store, batch: int) -> dt.datetime | None:
    """The `recorded_at` of a journal batch (None for batch 0: before the first batch)."""
    if batch <= 0:
        return None
    found = (
        pl.scan_delta(str(store.table_path("journal")))
        .filter(pl.col("batch") == batch)
        .select(pl.col("recorded_at").max())
        .collect()
        .item()
    )
    return found


def scan_codes(store: Store, kind: CodeColumn, *, upto_batch: int | None) -> pl.LazyFrame:
    """(code, person) of every code of the kind issued up to the batch bound."""
    codes = pl.scan_delta(str(store.table_path("codes"))).filter(
        pl.col("kind") == CODE_KIND[kind]
    )
    if upto_batch is not None:
        codes = codes.filter(pl.col("batch") <= upto_batch)
    return codes.select("code", "person")


def resolve(
    store: Store, request: pl.DataFrame, kind: CodeColumn, *, upto_batch: int | None
) -> pl.DataFrame:
    """`request` (`request_row`, `code` text) → plus `malformed` and `person` (null: no match)."""
    from engine.code_index import persons_of

    parsed = parse_code_series(request["code"], kind)
    person = persons_of(store, CODE_KIND[kind], parsed.fill_null(-1).to_numpy(),
                        upto_batch=upto_batch)  # fmt: skip
    person = pl.Series("person", person)
    return request.select(
        "request_row", "code", malformed=parsed.is_null(),
        person=pl.when(person >= 0).then(person),
    )


def codes_of_persons(
    store: Store, persons: pl.Series, kind: CodeColumn, *, upto_batch: int | None
) -> pl.DataFrame:
    """(code, person) of every code of the kind these persons ever held."""
    return (
        scan_codes(store, kind, upto_batch=upto_batch)
        .filter(pl.col("person").is_in(persons.implode()))
        .collect()
    )


def person_of(store: Store, code: str, kind: CodeColumn) -> int | None:
    """The person who holds or ever held this code (None: unknown or malformed)."""
    request = pl.DataFrame({"request_row": [1], "code": [code]})
    person = resolve(store, request, kind, upto_batch=None)["person"][0]
    return None if person is None else int(person)


def resident_codes_of(store: Store, person: int) -> list[str]:
    """Every resident code the person ever held, zero-padded."""
    codes = codes_of_persons(store, pl.Series([person], dtype=pl.Int64), "resident_code",
                             upto_batch=None)  # fmt: skip
    return sorted(f"{int(c):011d}" for c in codes["code"])

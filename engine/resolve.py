"""From the codes in a request or target file to persons (SPEC §5).

A code matches the person who holds it or ever held it as known at the read's bound, even a code
issued by a notification later cancelled (codes are never reissued): the `codes` table keeps
every issued code with the batch that issued it, so the bound is a batch number. Code text is
parsed to int64 from the Arrow bytes by a numba kernel (width, ASCII digits, check digit), never
per row in Python.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

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

    from engine.code_kernels import VIEW, parse_views

    if codes.dtype != pl.String:
        codes = codes.cast(pl.String)
    weights = np.array(CHECK_WEIGHTS[kind], dtype=np.int64)
    values, ok = [np.zeros(0, np.int64)], [np.zeros(0, np.bool_)]
    for chunk in codes.get_chunks():
        arrow = chunk.to_arrow(compat_level=pl.CompatLevel.newest())
        if arrow.type != pa.string_view():
            arrow = pc.cast(arrow, pa.string_view())
        if len(arrow) == 0:
            continue
        views = np.frombuffer(arrow.buffers()[1], dtype=np.uint8)
        views = views[arrow.offset * VIEW : (arrow.offset + len(arrow)) * VIEW]
        v, good = parse_views(views, WIDTH[kind], weights)
        if arrow.null_count:
            good &= pc.is_valid(arrow).to_numpy(zero_copy_only=False)
        values.append(v)
        ok.append(good)
    return pl.select(
        pl.when(pl.lit(pl.Series(np.concatenate(ok))))
        .then(pl.lit(pl.Series(codes.name, np.concatenate(values))))
    ).to_series().alias(codes.name)


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
    parsed = request.with_columns(code_int=parse_codes(pl.col("code"), kind))
    keys = parsed["code_int"].drop_nulls().unique()
    owners = (
        scan_codes(store, kind, upto_batch=upto_batch)
        .filter(pl.col("code").is_in(keys.implode()))
        .unique("code")
        .collect()
    )
    return parsed.join(owners, left_on="code_int", right_on="code", how="left", maintain_order="left").select(
        "request_row", "code", malformed=pl.col("code_int").is_null(), person=pl.col("person")
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

"""The `codes` table as a sorted index (DESIGN "Lookups"): compaction rewrites it sorted by
(kind, code), one kind per file; a probe for many codes then merges its sorted keys with each
file's sorted codes in one linear pass, instead of hashing every one of the 250 M stored codes.

Files appended by ingest after the last compaction are unsorted and small; they are sorted when
read, then merged the same way. A request's keys are sorted once (`persons_of`). A probe for a few codes reads only the files and row groups whose code range holds
one of them (by the Delta statistics and the Parquet row-group statistics).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numba import njit

from engine import deltalog
from engine.schema import CODE_ENCODINGS, CODES_SCHEMA
from engine.store import APP_ID, Store

CODE_FILE_ROWS = 16 * 2**20  # rows per file of the sorted index
CODE_ROW_GROUP = 2**20  # rows per row group: a probe for one code reads one
PROBE_THREADS = 2
SORT_PASSES = 4  # code ranges per kind sorted one at a time


def sort_codes(store: Store) -> None:
    """Rewrite `codes` sorted by (kind, code), a range of codes at a time, as one
    commit that replaces every file; the batch the table reflects and its metadata carry over.
    Run under the writer lock."""
    path = store.table_path("codes")
    table = store.delta("codes")
    old = pl.DataFrame(table.get_add_actions(flatten=True))
    meta = deltalog.juki_metadata(table)
    adds = []
    for kind, width in ((1, 11), (2, 12)):
        # in code ranges, so memory holds a quarter of a kind (a sorted table prunes to it)
        edges = np.linspace(0, 10**width, SORT_PASSES + 1, dtype=np.int64)
        for low, high in pairwise(edges):
            last = high == edges[-1]
            rows = (
                pl.scan_delta(str(path))
                .filter((pl.col("kind") == kind) & (pl.col("code") >= low)
                        & ((pl.col("code") < high) | pl.lit(last)))
                .select(CODES_SCHEMA.names)
                .collect()
                .sort("code")
            )  # fmt: skip
            for start in range(0, rows.height, CODE_FILE_ROWS):
                part = rows.slice(start, CODE_FILE_ROWS).to_arrow().cast(CODES_SCHEMA)
                adds.append(deltalog.write_file(path, part, row_group_size=CODE_ROW_GROUP,
                                                encodings=CODE_ENCODINGS))
            del rows
    removes = old["path"].to_list() if old.height else []
    deltalog.commit(path, table.version() + 1, adds, meta,
                    app_transaction=(APP_ID, store.reflected_batch("codes")), removes=removes)  # fmt: skip


def owners(
    store: Store, keys: dict[int, np.ndarray], *, upto_batch: int | None = None
) -> pl.DataFrame:
    """(kind, code, person) of every stored code of kind k among `keys[k]` (int64), issued up to
    the batch bound (None: any); one row per code (codes are never reissued)."""
    found = []
    for kind, k in keys.items():
        wanted = distinct(np.asarray(k, dtype=np.int64))
        person = owners_sorted(store, kind, wanted, upto_batch=upto_batch)
        hit = person >= 0
        if hit.any():
            found.append(pl.DataFrame({"kind": pl.Series(np.full(int(hit.sum()), kind, np.int8)),
                                       "code": wanted[hit], "person": person[hit]}))  # fmt: skip
    return pl.concat(found) if found else _EMPTY


def persons_of(
    store: Store, kind: int, keys: np.ndarray, *, upto_batch: int | None = None
) -> np.ndarray:
    """Per key (int64, in any order, repeats allowed; negative: no code) the person who holds or
    ever held that code, else -1. One sort of the keys (Polars' parallel arg_sort), one merge of
    them with each sorted file: a 10 M-key request needs no hash table of 250 M codes."""
    keys = np.asarray(keys, dtype=np.int64)
    out = np.full(len(keys), -1, np.int64)
    order = pl.Series(keys).arg_sort().to_numpy()
    ordered = keys[order]
    first = int(np.searchsorted(ordered, 0))
    order, ordered = order[first:], ordered[first:]
    if len(ordered) == 0:
        return out
    new = np.empty(len(ordered), np.bool_)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    person = owners_sorted(store, kind, ordered[new], upto_batch=upto_batch)
    out[order] = person[np.cumsum(new) - 1]
    return out


def owners_sorted(
    store: Store, kind: int, keys: np.ndarray, *, upto_batch: int | None = None
) -> np.ndarray:
    """Per key of the ascending distinct `keys` the person of that stored code of the kind
    (issued up to the bound), else -1; each file the keys' range touches is merged with them."""
    found = np.full(len(keys), -1, np.int64)
    if len(keys) == 0:
        return found
    path = store.table_path("codes")
    files = pl.DataFrame(store.delta("codes").get_add_actions(flatten=True))
    if files.is_empty():
        return found
    jobs = []
    for f in files.iter_rows(named=True):
        lo_kind, hi_kind = f.get("min.kind"), f.get("max.kind")
        lo, hi = f.get("min.code"), f.get("max.code")
        one_kind = lo_kind is not None and lo_kind == hi_kind
        # (a file without statistics may hold anything)
        if lo_kind is not None and hi_kind is not None and not lo_kind <= kind <= hi_kind:
            continue
        if lo is not None and hi is not None and not _any_between(keys, lo, hi):
            continue
        jobs.append((path / f["path"], one_kind, lo, hi))

    def probe(job: tuple[Path, bool, int | None, int | None]) -> None:
        file, one_kind, lo, hi = job
        # the keys within the file's code range: a sorted file merges with these alone
        start = 0 if lo is None else int(np.searchsorted(keys, lo))
        stop = len(keys) if hi is None else int(np.searchsorted(keys, hi, side="right"))
        part = keys[start:stop]
        codes, persons = _read_file(file, kind, part, upto_batch, one_kind)
        if len(codes) and not _is_sorted(codes):  # a file appended by ingest since compaction
            order = np.argsort(codes, kind="stable")
            codes, persons = codes[order], persons[order]
        # files cover disjoint or equal-owner codes: concurrent writes agree
        _assign_sorted(codes, persons, part, found[start:stop])

    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        list(pool.map(probe, jobs))
    return found


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: NumPy's hash-based unique took 3 s for 3 M codes)."""
    values = pl.Series(values, dtype=pl.Int64).sort().to_numpy()
    if len(values) == 0:
        return values
    keep = np.empty(len(values), np.bool_)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _any_between(sorted_keys: np.ndarray, lo: int, hi: int) -> bool:
    return bool(np.searchsorted(sorted_keys, hi, side="right") > np.searchsorted(sorted_keys, lo))


def _read_file(
    file: Path, kind: int, keys: np.ndarray, upto_batch: int | None, one_kind: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(code, person) of one file's rows of `kind` issued up to the bound; for a few keys only
    the row groups whose code range holds one of them."""
    columns = ["code", "person", *([] if one_kind else ["kind"]),
               *([] if upto_batch is None else ["batch"])]  # fmt: skip
    if len(keys) > FEW_KEYS:
        frame = pl.read_parquet(file, columns=columns)
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(file)
        groups = _row_groups(parquet, keys)
        if not groups:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        frame = pl.DataFrame(pl.from_arrow(parquet.read_row_groups(groups, columns=columns)))
    if not one_kind:
        frame = frame.filter(pl.col("kind") == kind)
    if upto_batch is not None:
        frame = frame.filter(pl.col("batch") <= upto_batch)
    return frame["code"].to_numpy(), frame["person"].to_numpy()


_EMPTY = pl.DataFrame(schema={"kind": pl.Int8, "code": pl.Int64, "person": pl.Int64})
FEW_KEYS = 1024  # up to this many keys a file is read by row groups, pruned by statistics


def _row_groups(parquet: Any, keys: np.ndarray) -> list[int]:
    """Row groups whose code statistics may hold one of the keys (all, without statistics)."""
    meta = parquet.metadata
    column = parquet.schema_arrow.get_field_index("code")
    groups = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max or _any_between(keys, stats.min, stats.max):
            groups.append(i)
    return groups


@njit(cache=True, nogil=True)
def _is_sorted(values: np.ndarray) -> bool:
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            return False
    return True


@njit(cache=True, nogil=True)
def _assign_sorted(codes: np.ndarray, persons: np.ndarray, keys: np.ndarray,
                   out: np.ndarray) -> None:
    """For ascending `codes` (with their `persons`) and ascending distinct `keys`: out[i] = the
    person of the code equal to keys[i], where there is one (one merge pass over both)."""
    j = 0
    n = len(codes)
    for i in range(len(keys)):
        k = keys[i]
        while j < n and codes[j] < k:
            j += 1
        if j == n:
            break
        if codes[j] == k:
            out[i] = persons[j]

"""Which int64 codes are duplicated, shared by several owners, or missing from a set.

Codes are non-negative and below 10**12, so their top bits are all zero: partitioning on the
code's own high bits would fill a fraction of the buckets. Rows are partitioned on a
multiplicative hash, `(code * 0x9E3779B97F4A7C15) >> (64 - b)` (DESIGN.md, "Uniqueness"), into
buckets of about `BUCKET_ROWS` rows, few enough for the scatter to stay TLB-friendly, and each
bucket's open-addressing table (indexed by the next hash bits) stays in cache; the buckets are
worked on in parallel (`prange` over workers, each with its own scratch table). Every function
returns the offending codes themselves (sorted, distinct), not only how many there are.
"""

from __future__ import annotations

import mmap

import numpy as np
from numba import get_num_threads, njit, prange

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
BUCKET_ROWS = 1 << 17  # ~1 k buckets for 100 M rows; a bucket's table is 2-4 MiB at most
EMPTY = -1  # a free slot (codes are >= 0)
TOLD = np.int64(1) << np.int64(62)  # flag bit on a slot whose duplicate was reported


def bucket_bits(n: int) -> int:
    """log2 of the bucket count for n rows (0: one bucket)."""
    return max(0, int(np.ceil(np.log2(max(n, 1) / BUCKET_ROWS))))


@njit(inline="always")
def _bucket(code, shift):  # type: ignore[no-untyped-def]
    return np.int64((np.uint64(code) * GOLDEN) >> np.uint64(shift))


@njit(inline="always")
def _slot(code, bits, tbits):  # type: ignore[no-untyped-def]
    """Table slot from the tbits of the hash right below the bucket bits."""
    h = (np.uint64(code) * GOLDEN) << np.uint64(bits)
    return np.int64(h >> np.uint64(64 - tbits))


@njit(inline="always")
def _table_bits(rows):  # type: ignore[no-untyped-def]
    bits = 4
    while (1 << bits) < 2 * rows:
        bits += 1
    return bits


def scratch(n: int, dtype: type = np.int64) -> np.ndarray:
    """An int64 (or `dtype`) buffer for a partition, on transparent huge pages where the kernel allows it:
    first-touching a fresh national-size buffer in 4 KiB pages costs more than the scatter
    itself (measured here: 0.5-0.7 s of page faults per GiB against 0.15 s of scatter)."""
    size = max(n, 1) * np.dtype(dtype).itemsize
    try:
        buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buffer.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError, ValueError):  # no THP here: ordinary pages
        return np.empty(n, dtype)
    return np.frombuffer(buffer, dtype, count=n)


def _partition(codes: np.ndarray, owners: np.ndarray, bits: int,
               chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Scatter codes (and owners, when given) into hash buckets; returns them and bucket starts."""
    out_codes = scratch(len(codes))
    out_owners = scratch(len(codes)) if len(owners) else np.zeros(0, np.int64)
    starts = _scatter(codes, owners, bits, chunks, out_codes, out_owners)
    return out_codes, out_owners, starts


@njit(cache=True, nogil=True, parallel=True)
def _scatter(codes, owners, bits, chunks, out_codes, out_owners):  # type: ignore[no-untyped-def]
    n = codes.shape[0]
    nb = 1 << bits
    shift = 64 - bits
    with_owners = owners.shape[0] > 0
    counts = np.zeros((chunks, nb), np.int64)
    out_of_range = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        local = np.zeros(nb, np.int64)  # per chunk: no false sharing between threads
        bad = 0
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            code = codes[i]
            bad += code < 0 or code >= TOLD
            local[_bucket(code, shift) if bits > 0 else 0] += 1
        counts[c] = local
        out_of_range[c] = bad
    if out_of_range.sum() > 0:
        raise ValueError("codes must be in [0, 2**62): drop nulls before calling")
    offsets = np.empty((chunks, nb), np.int64)
    starts = np.empty(nb + 1, np.int64)
    total = 0
    for b in range(nb):
        starts[b] = total
        for c in range(chunks):
            offsets[c, b] = total
            total += counts[c, b]
    starts[nb] = total
    for c in prange(chunks):  # first touch in parallel, sequentially: page faults stay cheap
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            out_codes[i] = 0
        if with_owners:
            for i in range(c * n // chunks, (c + 1) * n // chunks):
                out_owners[i] = 0
    for c in prange(chunks):
        pos = offsets[c].copy()
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            b = _bucket(codes[i], shift) if bits > 0 else 0
            out_codes[pos[b]] = codes[i]
            if with_owners:
                out_owners[pos[b]] = owners[i]
            pos[b] += 1
    return starts


@njit(cache=True, nogil=True, parallel=True)
def _duplicates(codes, starts, bits, workers):  # type: ignore[no-untyped-def]
    """Per bucket, codes seen more than once (each reported once, flagged with TOLD)."""
    nb = starts.shape[0] - 1
    found = np.empty(codes.shape[0], np.int64)
    found_n = np.zeros(nb, np.int64)
    largest = 0
    for b in range(nb):
        largest = max(largest, starts[b + 1] - starts[b])
    for w in prange(workers):
        keys = np.empty(1 << _table_bits(largest), np.int64)
        for b in range(w, nb, workers):
            lo, hi = starts[b], starts[b + 1]
            tbits = _table_bits(hi - lo)
            mask = (1 << tbits) - 1
            keys[: 1 << tbits] = EMPTY
            k = 0
            for i in range(lo, hi):
                code = codes[i]
                s = _slot(code, bits, tbits)
                key = keys[s]
                while key != EMPTY and (key & ~TOLD) != code:
                    s = (s + 1) & mask
                    key = keys[s]
                if key == EMPTY:
                    keys[s] = code
                elif key == code:  # second sighting: report it once
                    keys[s] = code | TOLD
                    found[lo + k] = code
                    k += 1
            found_n[b] = k
    return found, found_n


@njit(cache=True, nogil=True, parallel=True)
def _several_owners(codes, owners, starts, bits, workers):  # type: ignore[no-untyped-def]
    """Per bucket, codes seen with two different owners (each reported once)."""
    nb = starts.shape[0] - 1
    found = np.empty(codes.shape[0], np.int64)
    found_n = np.zeros(nb, np.int64)
    largest = 0
    for b in range(nb):
        largest = max(largest, starts[b + 1] - starts[b])
    for w in prange(workers):
        keys = np.empty(1 << _table_bits(largest), np.int64)
        first = np.empty(1 << _table_bits(largest), np.int64)
        for b in range(w, nb, workers):
            lo, hi = starts[b], starts[b + 1]
            tbits = _table_bits(hi - lo)
            mask = (1 << tbits) - 1
            keys[: 1 << tbits] = EMPTY
            k = 0
            for i in range(lo, hi):
                code = codes[i]
                s = _slot(code, bits, tbits)
                key = keys[s]
                while key != EMPTY and (key & ~TOLD) != code:
                    s = (s + 1) & mask
                    key = keys[s]
                if key == EMPTY:
                    keys[s] = code
                    first[s] = owners[i]
                elif key == code and first[s] != owners[i]:
                    keys[s] = code | TOLD
                    found[lo + k] = code
                    k += 1
            found_n[b] = k
    return found, found_n


@njit(cache=True, nogil=True, parallel=True)
def _missing(values, vstarts, universe, ustarts, bits, workers):  # type: ignore[no-untyped-def]
    """Per bucket, values absent from the universe's same bucket (each reported once)."""
    nb = vstarts.shape[0] - 1
    found = np.empty(values.shape[0], np.int64)
    found_n = np.zeros(nb, np.int64)
    largest = 0
    for b in range(nb):
        largest = max(largest, ustarts[b + 1] - ustarts[b] + vstarts[b + 1] - vstarts[b])
    for w in prange(workers):
        keys = np.empty(1 << _table_bits(largest), np.int64)
        for b in range(w, nb, workers):
            tbits = _table_bits(ustarts[b + 1] - ustarts[b] + vstarts[b + 1] - vstarts[b])
            mask = (1 << tbits) - 1
            keys[: 1 << tbits] = EMPTY
            for i in range(ustarts[b], ustarts[b + 1]):
                code = universe[i]
                s = _slot(code, bits, tbits)
                while keys[s] != EMPTY and keys[s] != code:
                    s = (s + 1) & mask
                keys[s] = code
            k = 0
            lo = vstarts[b]
            for i in range(lo, vstarts[b + 1]):
                code = values[i]
                s = _slot(code, bits, tbits)
                while keys[s] != EMPTY and (keys[s] & ~TOLD) != code:
                    s = (s + 1) & mask
                if keys[s] == EMPTY:  # first sighting of a missing value: report, remember
                    keys[s] = code | TOLD
                    found[lo + k] = code
                    k += 1
            found_n[b] = k
    return found, found_n


@njit(cache=True, nogil=True)
def _gather(found, found_n, starts):  # type: ignore[no-untyped-def]
    out = np.empty(found_n.sum(), np.int64)
    k = 0
    for b in range(found_n.shape[0]):
        for j in range(found_n[b]):
            out[k] = found[starts[b] + j]
            k += 1
    return out


def _workers() -> int:
    return max(1, get_num_threads())


def _codes(a: np.ndarray) -> np.ndarray:
    """Contiguous int64 (the partition rejects codes outside [0, 2**62): nulls, flags)."""
    return np.ascontiguousarray(a, dtype=np.int64)


def duplicated_codes(codes: np.ndarray) -> np.ndarray:
    """Sorted distinct codes that occur more than once."""
    codes = _codes(codes)
    bits = bucket_bits(len(codes))
    parts, _, starts = _partition(codes, np.zeros(0, np.int64), bits, _workers())
    found, found_n = _duplicates(parts, starts, bits, _workers())
    return np.sort(_gather(found, found_n, starts))


def shared_codes(codes: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Sorted distinct codes that occur with at least two different owners."""
    codes = _codes(codes)
    owners = np.ascontiguousarray(owners, np.int64)
    if len(owners) != len(codes):
        raise ValueError("codes and owners differ in length")
    bits = bucket_bits(len(codes))
    parts, part_owners, starts = _partition(codes, owners, bits, _workers())
    found, found_n = _several_owners(parts, part_owners, starts, bits, _workers())
    return np.sort(_gather(found, found_n, starts))


def missing_codes(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Sorted distinct values that are not in `universe`."""
    values, universe = _codes(values), _codes(universe)
    bits = bucket_bits(len(values) + len(universe))
    empty = np.zeros(0, np.int64)
    v, _, vstarts = _partition(values, empty, bits, _workers())
    u, _, ustarts = _partition(universe, empty, bits, _workers())
    found, found_n = _missing(v, vstarts, u, ustarts, bits, _workers())
    return np.sort(_gather(found, found_n, vstarts))


@njit(cache=True, nogil=True)
def _split_counts(codes, parts):  # type: ignore[no-untyped-def]
    starts = np.zeros(parts + 1, np.int64)
    for i in range(codes.shape[0]):
        starts[codes[i] % parts + 1] += 1
    for p in range(parts):
        starts[p + 1] += starts[p]
    return starts


@njit(cache=True, nogil=True)
def _split_scatter(codes, owners, starts, out_codes, out_owners):  # type: ignore[no-untyped-def]
    pos = starts[:-1].copy()
    parts = pos.shape[0]
    for i in range(codes.shape[0]):
        p = codes[i] % parts
        out_codes[pos[p]] = codes[i]
        out_owners[pos[p]] = owners[i]
        pos[p] += 1


def split_by_residue(codes: np.ndarray, owners: np.ndarray,
                     parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(codes, owners, starts) grouped by `code % parts` (stable): slice p is
    `starts[p]:starts[p + 1]`. Lets a national-size check run in slices without copying a
    masked array per slice. Owners stay int32 when given so (person keys: half the memory)."""
    owners = np.ascontiguousarray(owners, np.int32 if owners.dtype == np.int32 else np.int64)
    codes = _codes(codes)
    starts = _split_counts(codes, parts)
    out_codes, out_owners = scratch(len(codes)), scratch(len(codes), owners.dtype.type)
    _split_scatter(codes, owners, starts, out_codes, out_owners)
    return out_codes, out_owners, starts


def split_by_residue_reference(codes: np.ndarray, owners: np.ndarray,
                               parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    order = np.argsort(np.asarray(codes) % parts, kind="stable")
    counts = np.bincount(np.asarray(codes) % parts, minlength=parts)
    return (np.asarray(codes)[order], np.asarray(owners)[order],
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))  # fmt: skip


# -- reference twins (plain NumPy) -------------------------------------------------------------
def duplicated_codes_reference(codes: np.ndarray) -> np.ndarray:
    values, counts = np.unique(np.asarray(codes, np.int64), return_counts=True)
    return values[counts > 1]


def shared_codes_reference(codes: np.ndarray, owners: np.ndarray) -> np.ndarray:
    pairs = np.unique(np.stack([np.asarray(codes, np.int64), np.asarray(owners, np.int64)],
                               axis=1), axis=0)  # fmt: skip
    values, counts = np.unique(pairs[:, 0], return_counts=True)
    return values[counts > 1]


def missing_codes_reference(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.asarray(values, np.int64), np.asarray(universe, np.int64))


# -- membership: new codes against every code ever issued -----------------------------------
@njit(cache=True, nogil=True, parallel=True)
def _members(values, positions, vstarts, universe, ustarts, bits, workers):  # type: ignore[no-untyped-def]
    """Per bucket, a table of the values (small), probed by the universe's same bucket."""
    nb = vstarts.shape[0] - 1
    out = np.zeros(values.shape[0], np.bool_)
    largest = 0
    for b in range(nb):
        largest = max(largest, vstarts[b + 1] - vstarts[b])
    for w in prange(workers):
        keys = np.empty(1 << _table_bits(largest), np.int64)
        hit = np.empty(1 << _table_bits(largest), np.bool_)
        for b in range(w, nb, workers):
            lo, hi = vstarts[b], vstarts[b + 1]
            if lo == hi:
                continue
            tbits = _table_bits(hi - lo)
            mask = (1 << tbits) - 1
            keys[: 1 << tbits] = EMPTY
            hit[: 1 << tbits] = False
            for i in range(lo, hi):
                s = _slot(values[i], bits, tbits)
                while keys[s] != EMPTY and keys[s] != values[i]:
                    s = (s + 1) & mask
                keys[s] = values[i]
            for i in range(ustarts[b], ustarts[b + 1]):
                code = universe[i]
                s = _slot(code, bits, tbits)
                while keys[s] != EMPTY:
                    if keys[s] == code:
                        hit[s] = True
                        break
                    s = (s + 1) & mask
            for i in range(lo, hi):
                s = _slot(values[i], bits, tbits)
                while keys[s] != values[i]:
                    s = (s + 1) & mask
                out[positions[i]] = hit[s]
    return out


def member_mask(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Mask over `values`: the value occurs in `universe` (new codes against every code issued)."""
    values, universe = _codes(values), _codes(universe)
    bits = bucket_bits(len(universe) + len(values))
    v, positions, vstarts = _partition(values, np.arange(len(values), dtype=np.int64), bits,
                                       _workers())  # fmt: skip
    u, _, ustarts = _partition(universe, np.zeros(0, np.int64), bits, _workers())
    return _members(v, positions, vstarts, u, ustarts, bits, _workers())


def member_mask_reference(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    return np.isin(np.asarray(values, np.int64), np.asarray(universe, np.int64))

"""Which int64 codes are duplicated, shared by several owners, or missing from a set.

Codes are non-negative and below 10**12, so their top bits are all zero: partitioning on the
code's own high bits would fill a fraction of the buckets. Rows are partitioned on a
multiplicative hash, `(code * 0x9E3779B97F4A7C15) >> (64 - b)` (DESIGN.md, "Uniqueness"), into
buckets of about `BUCKET_ROWS` rows, so each bucket's open-addressing table stays in L2; then the
buckets are worked on in parallel (`prange` over workers, each with its own scratch table).
Every function returns the offending codes themselves (sorted, distinct), not only their number.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
BUCKET_ROWS = 1 << 14  # rows per bucket: a table of 2**15 slots × (8 + 8 + 1) bytes ≈ 560 KiB
EMPTY = -1  # free slot (codes are >= 0)


def bucket_bits(n: int) -> int:
    """log2 of the bucket count for n rows (0: one bucket)."""
    return max(0, int(np.ceil(np.log2(max(n, 1) / BUCKET_ROWS))))


@njit(inline="always")
def _hash(code: np.int64) -> np.uint64:
    return np.uint64(code) * GOLDEN


@njit(cache=True, nogil=True, parallel=True)
def _partition(codes, owners, bits, chunks):  # type: ignore[no-untyped-def]
    """Scatter codes (and owners, when given) into hash buckets; returns them and bucket starts."""
    n = codes.shape[0]
    nb = 1 << bits
    shift = np.uint64(64 - bits)
    with_owners = owners.shape[0] > 0
    counts = np.zeros((chunks, nb), np.int64)
    for c in prange(chunks):
        lo, hi = c * n // chunks, (c + 1) * n // chunks
        for i in range(lo, hi):
            b = 0 if bits == 0 else np.int64(_hash(codes[i]) >> shift)
            counts[c, b] += 1
    offsets = np.empty((chunks, nb), np.int64)
    starts = np.empty(nb + 1, np.int64)
    total = 0
    for b in range(nb):
        starts[b] = total
        for c in range(chunks):
            offsets[c, b] = total
            total += counts[c, b]
    starts[nb] = total
    out_codes = np.empty(n, np.int64)
    out_owners = np.empty(n if with_owners else 0, np.int64)
    for c in prange(chunks):
        lo, hi = c * n // chunks, (c + 1) * n // chunks
        pos = offsets[c].copy()
        for i in range(lo, hi):
            b = 0 if bits == 0 else np.int64(_hash(codes[i]) >> shift)
            out_codes[pos[b]] = codes[i]
            if with_owners:
                out_owners[pos[b]] = owners[i]
            pos[b] += 1
    return out_codes, out_owners, starts


@njit(inline="always")
def _table_size(rows: np.int64) -> np.int64:
    size = 16
    while size < 2 * rows:
        size *= 2
    return size


@njit(cache=True, nogil=True, parallel=True)
def _several_owners(codes, owners, starts, bits, workers):  # type: ignore[no-untyped-def]
    """Per bucket, codes seen with two different owners (row positions when owners is empty)."""
    nb = starts.shape[0] - 1
    with_owners = owners.shape[0] > 0
    found = np.empty(codes.shape[0], np.int64)
    found_n = np.zeros(nb, np.int64)
    largest = 0
    for b in range(nb):
        largest = max(largest, starts[b + 1] - starts[b])
    cap = _table_size(largest)
    up = np.uint64(bits)
    for w in prange(workers):
        keys = np.empty(cap, np.int64)
        first = np.empty(cap, np.int64)
        told = np.empty(cap, np.bool_)
        for b in range(w, nb, workers):
            lo, hi = starts[b], starts[b + 1]
            size = _table_size(hi - lo)
            mask = np.uint64(size - 1)
            keys[:size] = EMPTY
            k = 0
            for i in range(lo, hi):
                code = codes[i]
                owner = owners[i] if with_owners else i
                s = np.int64(((_hash(code) << up) >> np.uint64(40)) & mask)
                while True:
                    if keys[s] == EMPTY:
                        keys[s] = code
                        first[s] = owner
                        told[s] = False
                        break
                    if keys[s] == code:
                        if not told[s] and first[s] != owner:
                            told[s] = True
                            found[lo + k] = code
                            k += 1
                        break
                    s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
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
    cap = _table_size(largest)
    up = np.uint64(bits)
    for w in prange(workers):
        keys = np.empty(cap, np.int64)
        for b in range(w, nb, workers):
            size = _table_size(ustarts[b + 1] - ustarts[b] + vstarts[b + 1] - vstarts[b])
            mask = np.uint64(size - 1)
            keys[:size] = EMPTY
            for i in range(ustarts[b], ustarts[b + 1]):
                code = universe[i]
                s = np.int64(((_hash(code) << up) >> np.uint64(40)) & mask)
                while keys[s] != EMPTY and keys[s] != code:
                    s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
                keys[s] = code
            k = 0
            lo = vstarts[b]
            for i in range(lo, vstarts[b + 1]):
                code = values[i]
                s = np.int64(((_hash(code) << up) >> np.uint64(40)) & mask)
                while keys[s] != EMPTY and keys[s] != code:
                    s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
                if keys[s] == EMPTY:  # first sighting of a missing value: report, remember
                    keys[s] = code
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
    a = np.ascontiguousarray(a, dtype=np.int64)
    if len(a) and a.min() < 0:
        raise ValueError("codes must be >= 0 (drop nulls before calling)")
    return a


def shared_codes(codes: np.ndarray, owners: np.ndarray | None = None) -> np.ndarray:
    """Sorted distinct codes that occur with at least two different owners.

    Without `owners`, every row is its own owner: the codes that occur more than once.
    """
    codes = _codes(codes)
    own = np.zeros(0, np.int64) if owners is None else np.ascontiguousarray(owners, np.int64)
    if owners is not None and len(own) != len(codes):
        raise ValueError("codes and owners differ in length")
    bits = bucket_bits(len(codes))
    parts, part_owners, starts = _partition(codes, own, bits, 4 * _workers())
    found, found_n = _several_owners(parts, part_owners, starts, bits, _workers())
    return np.sort(_gather(found, found_n, starts))


def duplicated_codes(codes: np.ndarray) -> np.ndarray:
    """Sorted distinct codes that occur more than once."""
    return shared_codes(codes)


def missing_codes(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Sorted distinct values that are not in `universe`."""
    values, universe = _codes(values), _codes(universe)
    bits = bucket_bits(len(values) + len(universe))
    empty = np.zeros(0, np.int64)
    v, _, vstarts = _partition(values, empty, bits, 4 * _workers())
    u, _, ustarts = _partition(universe, empty, bits, 4 * _workers())
    found, found_n = _missing(v, vstarts, u, ustarts, bits, _workers())
    return np.sort(_gather(found, found_n, vstarts))


# -- reference twins (plain NumPy) -------------------------------------------------------------
def shared_codes_reference(codes: np.ndarray, owners: np.ndarray | None = None) -> np.ndarray:
    codes = np.asarray(codes, np.int64)
    if owners is None:
        values, counts = np.unique(codes, return_counts=True)
        return values[counts > 1]
    pairs = np.unique(np.stack([codes, np.asarray(owners, np.int64)], axis=1), axis=0)
    values, counts = np.unique(pairs[:, 0], return_counts=True)
    return values[counts > 1]


def duplicated_codes_reference(codes: np.ndarray) -> np.ndarray:
    return shared_codes_reference(codes)


def missing_codes_reference(values: np.ndarray, universe: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.asarray(values, np.int64), np.asarray(universe, np.int64))

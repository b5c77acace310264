"""Parsing code text to int64 at request-file scale (100 M targets): a numba kernel over the
16-byte Arrow string views of Polars' own strings (which hold strings of up to 12 bytes inline:
every well-formed code), and its plain NumPy reference twin (tests compare the two).

A code is well formed when its text has exactly `width` ASCII digits and its last digit is the
check digit of the others under SPEC §2.1/§2.2: r = Σ wi·di mod 11, check = 0 if r ≤ 1 else
11 − r. Malformed rows get `ok = False` (their value is meaningless).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.codes import digits_text as format_codes_reference  # noqa: F401 (its twin)

VIEW = 16  # bytes per Arrow string view: int32 length, then up to 12 bytes inline
INLINE = 12


def parse_views(views: np.ndarray, width: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) of each Arrow string view (`views`: the view buffer as bytes). A string of
    `width` ≤ 12 bytes is inline in its view, so longer ones are malformed without reading them."""
    n = len(views) // VIEW
    values = np.empty(n, dtype=np.int64)
    ok = np.empty(n, dtype=np.bool_)
    parse_views_into(views, width, weights, values, ok)
    return values, ok


@njit(cache=True, nogil=True)
def parse_views_into(
    views: np.ndarray, width: int, weights: np.ndarray, values: np.ndarray, ok: np.ndarray
) -> None:
    """`parse_views` into caller-owned `values`/`ok` (len(views) // VIEW each): a request file's
    chunks are parsed into slices of one array by a thread each (the kernel releases the GIL),
    with no concatenation after and no per-call start of a parallel region."""
    n = len(views) // VIEW
    for row in range(n):
        values[row] = 0
        ok[row] = False
        at = row * VIEW
        length = (np.int64(views[at]) | (np.int64(views[at + 1]) << 8)
                  | (np.int64(views[at + 2]) << 16) | (np.int64(views[at + 3]) << 24))  # fmt: skip
        if length != width:
            continue
        value = 0
        total = 0
        good = True
        for i in range(width):
            d = np.int64(views[at + 4 + i]) - 48
            if d < 0 or d > 9:
                good = False
                break
            value = value * 10 + d
            if i < width - 1:
                total += weights[i] * d
        if good:
            r = total % 11
            check = 0 if r <= 1 else 11 - r
            ok[row] = check == value % 10
            values[row] = value


def parse_views_numpy(
    views: np.ndarray, width: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reference twin of `parse_views` in plain NumPy."""
    rows = views.reshape(-1, VIEW)
    n = len(rows)
    values = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=np.bool_)
    length = rows[:, :4].copy().view("<i4").ravel()
    sized = np.flatnonzero(length == width)
    if len(sized) == 0:
        return values, ok
    digits = rows[sized, 4 : 4 + width].astype(np.int64) - 48
    good = ((digits >= 0) & (digits <= 9)).all(axis=1)
    value = digits @ (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))
    r = (digits[:, :-1] @ np.asarray(weights, dtype=np.int64)) % 11
    check = np.where(r <= 1, 0, 11 - r)
    values[sized] = np.where(good, value, 0)
    ok[sized] = good & (check == digits[:, -1])
    return values, ok


@njit(cache=True, nogil=True)
def format_codes(values: np.ndarray, width: int) -> np.ndarray:
    """The zero-padded decimal text of each value (non-negative), `width` ASCII bytes per value,
    end to end (the data buffer of an Arrow string array whose offsets step by `width`).
    Two digits per unsigned division (a national extract's 125 M records: 11 signed divisions
    each took ~40 ns a code)."""
    out = np.empty(len(values) * width, dtype=np.uint8)
    pairs = np.empty(200, dtype=np.uint8)  # "00", "01", … "99"
    for i in range(100):
        pairs[2 * i], pairs[2 * i + 1] = 48 + i // 10, 48 + i % 10
    hundred = np.uint64(100)
    for row in range(len(values)):
        v = np.uint64(values[row])
        end = row * width + width
        start = row * width
        while end - start >= 2:
            q = v // hundred
            r = 2 * (v - q * hundred)
            out[end - 1] = pairs[r + 1]
            out[end - 2] = pairs[r]
            v = q
            end -= 2
        if end > start:
            out[start] = np.uint8(48) + np.uint8(v % np.uint64(10))
    return out



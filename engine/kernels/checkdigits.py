"""Check digits of whole code columns (SPEC §2) in one parallel pass over int64 buffers.

The rules themselves live in `engine.codes` (one replaceable function per kind); this kernel is
their hot-path form for `juki check`, which checks every code of the whole history. Nulls are
`NULL` (skipped); codes that are not a string of the code's width in digits are `MALFORMED`
(always bad).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from engine.codes import (
    MUNICIPALITY_WEIGHTS,
    MY_NUMBER_WEIGHTS,
    RESIDENT_CODE_WEIGHTS,
    CodeKind,
    check_digits_valid,
)

NULL = -1
MALFORMED = -2
_WEIGHTS: dict[str, np.ndarray] = {
    "resident_code": np.array(RESIDENT_CODE_WEIGHTS, np.int64),
    "my_number": np.array(MY_NUMBER_WEIGHTS, np.int64),
    "municipality_code": np.array(MUNICIPALITY_WEIGHTS, np.int64),
}


@njit(cache=True, nogil=True, parallel=True)
def _bad(codes, weights, municipality):  # type: ignore[no-untyped-def]
    n = codes.shape[0]
    m = weights.shape[0]
    out = np.empty(n, np.bool_)
    for i in prange(n):
        code = codes[i]
        if code < 0:
            out[i] = code != NULL
            continue
        body = code // 10
        total = 0
        for j in range(m - 1, -1, -1):  # integer digit extraction, least significant first
            total += (body % 10) * weights[j]
            body //= 10
        if municipality:
            expected = (11 - total % 11) % 10  # SPEC §2.3
        else:
            r = total % 11  # SPEC §2.1, §2.2: modulus 11
            expected = 0 if r <= 1 else 11 - r
        out[i] = code % 10 != expected
    return out


def bad_check_digits(codes: np.ndarray, kind: CodeKind) -> np.ndarray:
    """Mask of codes whose check digit is wrong or that are MALFORMED (NULL is never bad)."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    return _bad(codes, _WEIGHTS[kind], kind == "municipality_code")


def bad_check_digits_reference(codes: np.ndarray, kind: CodeKind) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    present = codes >= 0
    bad = codes == MALFORMED
    bad[present] = ~check_digits_valid(codes[present], kind)
    return bad

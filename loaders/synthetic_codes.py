"""Unique random-looking codes for the synthetic population, and their zero-padded text forms.

A code is never issued twice in a run (SPEC §2.4). Instead of remembering every issued code (a
hash set of 250 M codes), the n-th code of a kind is a keyed permutation of n: a bijection on the
body space [0, 10^k), so distinct counters give distinct bodies with no bookkeeping beyond two
counters. The permutation is a few rounds of odd-multiply/add/xorshift on a power-of-two domain
made to fit [0, 10^k) by cycle walking (re-apply until the value falls inside).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.codes import CodeKind, with_check_digit

_BODY = {"resident_code": (10, 34), "my_number": (11, 37)}  # (body digits, domain bits)
_ROUNDS = 4


class CodeIssuer:
    """Hands out fresh codes of each kind from running counters (deterministic for a seed)."""

    def __init__(self, seed: int) -> None:
        keys = np.random.SeedSequence([seed, 0x636F6465]).generate_state(4 * _ROUNDS, np.uint64)
        self._mul = keys[: 2 * _ROUNDS] | np.uint64(1)  # odd multipliers are bijective mod 2^k
        self._add = keys[2 * _ROUNDS :]
        self.issued = {"resident_code": 0, "my_number": 0}

    def reserve(self, kind: CodeKind, count: int) -> np.ndarray:
        """The next `count` counters of `kind` (to be turned into codes now or by a worker)."""
        start = self.issued[kind]
        self.issued[kind] = start + count
        return np.arange(start, start + count, dtype=np.int64)

    def issue(self, kind: CodeKind, count: int) -> np.ndarray:
        """`count` fresh full codes (int64, check digit included)."""
        return self.codes(kind, self.reserve(kind, count))

    def codes(self, kind: CodeKind, counters: np.ndarray) -> np.ndarray:
        """Full codes for the given counters: permuted body, then the SPEC §2 check digit."""
        digits, bits = _BODY[kind]
        limit = np.uint64(10**digits)
        offset = 0 if kind == "resident_code" else _ROUNDS
        x = self._permute(counters.astype(np.uint64), bits, offset)
        outside = np.flatnonzero(x >= limit)
        while len(outside):  # cycle walking keeps the map a bijection on [0, limit)
            y = self._permute(x[outside], bits, offset)
            x[outside] = y
            outside = outside[y >= limit]
        return with_check_digit(x.astype(np.int64), kind)

    def _permute(self, x: np.ndarray, bits: int, offset: int) -> np.ndarray:
        mask = np.uint64((1 << bits) - 1)
        shift = np.uint64(bits // 2 + 1)
        for r in range(offset, offset + _ROUNDS):
            x = (x * self._mul[r] + self._add[r]) & mask
            x ^= x >> shift
        return x


def code_text(codes: np.ndarray, width: int, valid: np.ndarray | None = None) -> pa.StringArray:
    """Zero-padded decimal text of int64 codes as an Arrow string array, built from raw buffers.

    Every value has the same width, so the offsets are an arithmetic progression and the digits
    are one (n, width) uint8 matrix: no per-value formatting. The digits come from two int32
    halves (int32 division is about twice as fast as int64). `valid` marks non-null values.
    """
    n = len(codes)
    digits = np.empty((n, width), dtype=np.uint8)
    rest = np.where(codes < 0, 0, codes).astype(np.int64)
    halves = (
        ((rest // 1_000_000).astype(np.int32), 0, width - 6),
        ((rest % 1_000_000).astype(np.int32), width - 6, width),
    )
    for part, lo, hi in halves:
        for k in range(hi - 1, lo - 1, -1):
            quotient = part // 10
            digits[:, k] = part - quotient * 10 + 48
            part = quotient
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    bitmap = None
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits), bitmap)

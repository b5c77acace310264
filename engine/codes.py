"""Codes and their check digits (SPEC §2): My Number, resident-record code, local government code.

Each rule lives in one replaceable function per kind; the vectorised forms work on int64 buffers
(codes are below 10**12, so they fit) and are what ingest and the checks call on hot paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import polars as pl

CodeKind = Literal["resident_code", "my_number", "municipality_code"]

# SPEC §2.1 (総務省令 平成26年第85号 第5条): left-to-right weights of the 11-digit body.
MY_NUMBER_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
# SPEC §2.2: juki's modulus-11 scheme over the 10-digit body of the resident-record code.
RESIDENT_CODE_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
# SPEC §2.3: 全国地方公共団体コード, weights of the 5-digit body.
MUNICIPALITY_WEIGHTS = (6, 5, 4, 3, 2)

WIDTH: dict[str, int] = {"resident_code": 11, "my_number": 12, "municipality_code": 6}
KIND_ID: dict[str, int] = {"resident_code": 1, "my_number": 2}


def _weighted_sum(body: np.ndarray, weights: tuple[int, ...]) -> np.ndarray:
    """Σ wi·di over the digits of `body`, most significant digit first."""
    body = np.asarray(body, dtype=np.int64)
    total = np.zeros(body.shape, dtype=np.int64)
    rest = body.copy()
    for w in reversed(weights):
        total += (rest % 10) * w
        rest //= 10
    return total


def _mod11_check(body: np.ndarray, weights: tuple[int, ...]) -> np.ndarray:
    r = _weighted_sum(body, weights) % 11
    return np.where(r <= 1, 0, 11 - r)


def my_number_check_digits(body: np.ndarray) -> np.ndarray:
    """Check digit of each 11-digit My Number body (SPEC §2.1)."""
    return _mod11_check(body, MY_NUMBER_WEIGHTS)


def resident_code_check_digits(body: np.ndarray) -> np.ndarray:
    """Check digit of each 10-digit resident-code body (SPEC §2.2)."""
    return _mod11_check(body, RESIDENT_CODE_WEIGHTS)


def municipality_check_digits(body: np.ndarray) -> np.ndarray:
    """Check digit of each 5-digit local government code body (SPEC §2.3)."""
    s = _weighted_sum(body, MUNICIPALITY_WEIGHTS)
    return (11 - s % 11) % 10


_CHECKERS = {
    "resident_code": resident_code_check_digits,
    "my_number": my_number_check_digits,
    "municipality_code": municipality_check_digits,
}


def expected_check_digits(codes: np.ndarray, kind: CodeKind) -> np.ndarray:
    """The check digit each full code (as int64) should end with."""
    return _CHECKERS[kind](np.asarray(codes, dtype=np.int64) // 10)


def check_digits_valid(codes: np.ndarray, kind: CodeKind) -> np.ndarray:
    """Boolean mask: the full code's last digit is its check digit."""
    codes = np.asarray(codes, dtype=np.int64)
    return codes % 10 == expected_check_digits(codes, kind)


def with_check_digit(body: np.ndarray, kind: CodeKind) -> np.ndarray:
    """Full codes (int64) from their bodies."""
    body = np.asarray(body, dtype=np.int64)
    return body * 10 + _CHECKERS[kind](body)


def is_prefecture_code(text: str) -> bool:
    """Two ASCII digits 01–47 (SPEC §2.3: a local government code's first two digits)."""
    return len(text) == 2 and text.isascii() and text.isdigit() and 1 <= int(text) <= 47


def is_valid(code: str, kind: CodeKind) -> bool:
    """Scalar check of one code as text: right width, digits only, check digit valid."""
    if len(code) != WIDTH[kind] or not code.isascii() or not code.isdigit():
        return False
    if kind == "municipality_code" and not is_prefecture_code(code[:2]):
        return False
    return bool(check_digits_valid(np.array([int(code)]), kind)[0])


def check_digit_of(code: str, kind: CodeKind) -> int:
    """The check digit the full code `code` should end with (for messages)."""
    return int(expected_check_digits(np.array([int(code)]), kind)[0])


def format_codes(codes: np.ndarray, kind: CodeKind) -> list[str]:
    """Zero-padded text forms of int64 codes (small arrays; hot paths pad in Polars)."""
    w = WIDTH[kind]
    return [f"{int(c):0{w}d}" for c in codes]


def digits_text(values: np.ndarray, width: int) -> np.ndarray:
    """The zero-padded decimal text of each value, `width` ASCII bytes per value, end to end
    (NumPy; `engine.code_kernels.format_codes` is its numba twin for large arrays)."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers[None, :]) % 10 + 48).astype(np.uint8).ravel()


def check_digit_expr(code: pl.Expr, kind: CodeKind) -> pl.Expr:
    """Polars expression: the check digit an int64 full code should end with (SPEC §2)."""
    import polars as pl

    weights = {
        "resident_code": RESIDENT_CODE_WEIGHTS,
        "my_number": MY_NUMBER_WEIGHTS,
        "municipality_code": MUNICIPALITY_WEIGHTS,
    }[kind]
    body = code // 10
    n = len(weights)
    total = pl.sum_horizontal(
        [((body // 10 ** (n - 1 - i)) % 10) * w for i, w in enumerate(weights)]
    )
    if kind == "municipality_code":
        return (11 - total % 11) % 10
    r = total % 11
    return pl.when(r <= 1).then(0).otherwise(11 - r)

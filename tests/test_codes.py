"""Check digits of SPEC §2: the SPEC's valid examples, and a changed check digit is always invalid."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.jp import in_ as stdnum_my_number

from engine.codes import (
    check_digit_expr,
    check_digits_valid,
    expected_check_digits,
    is_prefecture_code,
    is_valid,
    with_check_digit,
)


def test_spec_examples_are_valid() -> None:
    for code in ("123456789018", "023456789013", "983205673214"):
        assert is_valid(code, "my_number")
    assert is_valid("24727059608", "resident_code")
    for code in ("131016", "131130", "011002", "472018"):
        assert is_valid(code, "municipality_code")


def test_wrong_width_letters_and_prefecture_are_invalid() -> None:
    assert not is_valid("12345678901", "my_number")
    assert not is_valid("1234567890a8", "my_number")
    assert not is_valid("２４７２７０５９６０８", "resident_code")  # full-width digits
    assert not is_valid(f"48123{int(with_check_digit(np.array([48123]), 'municipality_code')[0]) % 10}", "municipality_code")


@given(st.integers(0, 10**11 - 1), st.integers(1, 9))
def test_changed_my_number_check_digit_is_invalid(body: int, delta: int) -> None:
    full = int(with_check_digit(np.array([body]), "my_number")[0])
    assert check_digits_valid(np.array([full]), "my_number")[0]
    changed = body * 10 + (full % 10 + delta) % 10
    assert not check_digits_valid(np.array([changed]), "my_number")[0]


@given(st.integers(0, 10**10 - 1), st.integers(1, 9))
def test_changed_resident_code_check_digit_is_invalid(body: int, delta: int) -> None:
    full = int(with_check_digit(np.array([body]), "resident_code")[0])
    changed = body * 10 + (full % 10 + delta) % 10
    assert not check_digits_valid(np.array([changed]), "resident_code")[0]


@given(st.integers(1000, 47999), st.integers(1, 9))
def test_changed_municipality_check_digit_is_invalid(body: int, delta: int) -> None:
    full = int(with_check_digit(np.array([body]), "municipality_code")[0])
    changed = body * 10 + (full % 10 + delta) % 10
    assert not check_digits_valid(np.array([changed]), "municipality_code")[0]


@given(st.lists(st.integers(0, 10**11 - 1), min_size=1, max_size=50))
def test_my_number_agrees_with_python_stdnum(bodies: list[int]) -> None:
    """An oracle nobody here wrote: python-stdnum's jp.in_ (個人番号)."""
    full = with_check_digit(np.array(bodies), "my_number")
    for code in full:
        assert stdnum_my_number.is_valid(f"{int(code):012d}")


@given(st.lists(st.integers(0, 10**12 - 1), min_size=1, max_size=50))
def test_polars_expression_matches_numpy(codes: list[int]) -> None:
    for kind, top in (("my_number", 10**12), ("resident_code", 10**11),
                      ("municipality_code", 10**6)):  # fmt: skip
        arr = np.array([c % top for c in codes], dtype=np.int64)
        expr = pl.DataFrame({"c": arr}).select(check_digit_expr(pl.col("c"), kind))  # type: ignore[arg-type]
        assert expr.to_series().to_list() == expected_check_digits(arr, kind).tolist()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "valid"),
    [("01", True), ("13", True), ("47", True), ("00", False), ("48", False), ("1", False),
     ("013", False), ("１３", False), ("1a", False)],
)  # fmt: skip
def test_a_prefecture_code_is_two_ascii_digits_01_to_47(text: str, valid: bool) -> None:
    assert is_prefecture_code(text) is valid

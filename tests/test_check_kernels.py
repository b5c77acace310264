"""Every numba kernel of `juki check` and issuance agrees with its plain reference twin."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codes import expected_check_digits as numpy_expected_check_digits
from engine.kernels.checkdigits import (
    MALFORMED,
    NULL,
    bad_check_digits,
    bad_check_digits_reference,
    expected_check_digits,
)
from engine.kernels.history import (
    held_codes,
    held_codes_reference,
    remember_current,
    remember_current_reference,
    walk_histories,
    walk_histories_reference,
)
from engine.kernels.unique import (
    BUCKET_ROWS,
    duplicated_codes,
    duplicated_codes_reference,
    member_mask,
    member_mask_reference,
    missing_codes,
    missing_codes_reference,
    shared_codes,
    shared_codes_reference,
    split_by_residue,
    split_by_residue_reference,
)

SETTINGS = settings(max_examples=60, deadline=None)
codes_small = st.lists(st.integers(0, 60), max_size=200)  # many repeats
codes_wide = st.lists(st.integers(0, 10**12 - 1), max_size=200)
codes = st.one_of(codes_small, codes_wide)


def arr(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@SETTINGS
@given(codes)
def test_duplicated_codes_match_the_reference(values: list[int]) -> None:
    assert np.array_equal(duplicated_codes(arr(values)), duplicated_codes_reference(arr(values)))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=200))
def test_shared_codes_match_the_reference(pairs: list[tuple[int, int]]) -> None:
    c = arr([p[0] for p in pairs])
    o = arr([p[1] for p in pairs])
    assert np.array_equal(shared_codes(c, o), shared_codes_reference(c, o))


@SETTINGS
@given(codes, codes)
def test_missing_codes_match_the_reference(values: list[int], universe: list[int]) -> None:
    assert np.array_equal(missing_codes(arr(values), arr(universe)),
                          missing_codes_reference(arr(values), arr(universe)))  # fmt: skip


@SETTINGS
@given(codes, codes)
def test_member_mask_matches_the_reference(values: list[int], universe: list[int]) -> None:
    assert np.array_equal(member_mask(arr(values), arr(universe)),
                          member_mask_reference(arr(values), arr(universe)))  # fmt: skip


def test_kernels_agree_with_their_twins_over_many_buckets() -> None:
    """Enough rows for hundreds of hash buckets, with planted duplicates and owners."""
    rng = np.random.default_rng(4)
    n = 5 * BUCKET_ROWS
    values = rng.integers(0, 10**12, n)
    values[rng.integers(0, n, 300)] = values[rng.integers(0, n, 300)]
    owners = rng.integers(0, 2, n)
    universe = np.concatenate([values[: n // 2], rng.integers(0, 10**12, n // 3)])
    assert np.array_equal(duplicated_codes(values), duplicated_codes_reference(values))
    assert np.array_equal(shared_codes(values, owners), shared_codes_reference(values, owners))
    assert np.array_equal(missing_codes(values, universe), missing_codes_reference(values, universe))
    assert np.array_equal(member_mask(values[:1000], universe),
                          member_mask_reference(values[:1000], universe))  # fmt: skip
    for kind in ("resident_code", "my_number", "municipality_code"):
        assert np.array_equal(bad_check_digits(values, kind), bad_check_digits_reference(values, kind))


def test_kernels_refuse_nulls() -> None:
    with pytest.raises(ValueError, match="drop nulls"):
        duplicated_codes(arr([1, -1]))


@SETTINGS
@given(st.lists(st.one_of(st.integers(0, 10**12 - 1), st.sampled_from([NULL, MALFORMED])),
                max_size=200),
       st.sampled_from(["resident_code", "my_number", "municipality_code"]))  # fmt: skip
def test_check_digits_match_the_reference(values: list[int], kind: str) -> None:
    top = {"resident_code": 10**11, "my_number": 10**12, "municipality_code": 10**6}[kind]
    a = arr([v % top if v >= 0 else v for v in values])
    assert np.array_equal(bad_check_digits(a, kind), bad_check_digits_reference(a, kind))  # type: ignore[arg-type]


@SETTINGS
@given(st.lists(st.integers(0, 10**12 - 1), max_size=200),
       st.sampled_from(["resident_code", "my_number", "municipality_code"]))  # fmt: skip
def test_expected_check_digits_match_the_numpy_rules(values: list[int], kind: str) -> None:
    top = {"resident_code": 10**11, "my_number": 10**12, "municipality_code": 10**6}[kind]
    a = arr([v % top for v in values])
    assert np.array_equal(expected_check_digits(a, kind),  # type: ignore[arg-type]
                          numpy_expected_check_digits(a, kind))  # type: ignore[arg-type]  # fmt: skip


REASON_IDS = [0, 1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24, 25, 26, 27, 31]
version_row = st.tuples(
    st.integers(0, 5),  # person
    st.integers(0, 5),  # version
    st.integers(0, 4),  # recorded_at
    st.sampled_from(REASON_IDS),
    st.sampled_from([0, 1, 2, 9]),  # status
    st.integers(0, 60),  # change_date (days)
    st.integers(0, 4),  # notification
)


@SETTINGS
@given(st.lists(version_row, max_size=60), st.integers(0, 90))
def test_history_walk_matches_the_reference(rows: list[tuple[int, ...]], today: int) -> None:
    rows = sorted(rows, key=lambda r: r[0])  # grouped by person; order inside kept
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
    args = (
        np.array(cols[0], np.int64), np.array(cols[1], np.int32), np.array(cols[2], np.int64),
        np.array(cols[3], np.int8), np.array(cols[4], np.int8), np.array(cols[5], np.int32),
        np.array(cols[6], np.int64),
    )  # fmt: skip
    assert np.array_equal(walk_histories(*args, today), walk_histories_reference(*args, today))


@SETTINGS
@given(st.lists(version_row, max_size=60), st.integers(0, 90),
       st.lists(st.integers(0, 99), min_size=60, max_size=60))  # fmt: skip
def test_current_codes_match_the_reference(rows: list[tuple[int, ...]], today: int,
                                           codes: list[int]) -> None:  # fmt: skip
    rows = sorted(rows, key=lambda r: r[0])
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
    person, version = np.array(cols[0], np.int64), np.array(cols[1], np.int32)
    reason = np.array(cols[3], np.int8)
    flags = walk_histories(person, version, np.array(cols[2], np.int64), reason,
                           np.array(cols[4], np.int8), np.array(cols[5], np.int32),
                           np.array(cols[6], np.int64), today)  # fmt: skip
    rc = np.array(codes[: len(rows)], np.int64)
    mn = rc + 1000
    ours = [np.full(6, -1, np.int64) for _ in range(3)] + [np.full(6, -1, np.int32)]
    remember_current(person, reason, flags, rc, mn, version, *ours)
    theirs = remember_current_reference(person, reason, flags, rc, mn, version, 6)
    for a, b in zip(ours, theirs, strict=True):
        assert np.array_equal(a, b)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from(REASON_IDS), st.integers(-2, 6)),
                max_size=80))  # fmt: skip
def test_held_codes_match_the_reference(rows: list[tuple[int, int, int]]) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    person = np.array([r[0] for r in rows], np.int64)
    reason = np.array([r[1] for r in rows], np.int8)
    code = np.array([r[2] for r in rows], np.int64)
    ours, theirs = held_codes(person, reason, code), held_codes_reference(person, reason, code)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 9)), max_size=100),
       st.integers(1, 7))  # fmt: skip
def test_splitting_by_residue_matches_the_reference(pairs: list[tuple[int, int]], parts: int) -> None:
    codes, owners = arr([p[0] for p in pairs]), arr([p[1] for p in pairs])
    ours = split_by_residue(codes, owners, parts)
    theirs = split_by_residue_reference(codes, owners, parts)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))

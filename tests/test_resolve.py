"""Parsing request codes (SPEC §5 "malformed"): the numba kernel, its NumPy twin and the oracle's
string rules agree on any text, including sliced and null-bearing columns."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from builders import my_number, resident_code
from hypothesis import example, given, settings
from hypothesis import strategies as st
from read_oracle import well_formed

from engine.code_kernels import (
    VIEW,
    format_codes,
    format_codes_reference,
    parse_views,
    parse_views_numpy,
)
from engine.resolve import CHECK_WEIGHTS, parse_code_series

KINDS = st.sampled_from(["my_number", "resident_code"])


def near_codes(kind: str) -> st.SearchStrategy[str | None]:
    good = st.integers(0, 10_000).map(my_number if kind == "my_number" else resident_code)
    return st.one_of(
        good,
        good.map(lambda c: c[:-1] + str((int(c[-1]) + 1) % 10)),
        good.map(lambda c: c[1:]),
        good.map(lambda c: c + "0"),
        good.map(lambda c: " " + c[1:]),
        good.map(lambda c: "+" + c[1:]),
        st.text(alphabet="0123456789０１٣ -x", max_size=13),
        st.none(),
    )


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data(), kind=KINDS, skip=st.integers(0, 3))
def test_parsing_agrees_with_the_spec_rules(data: st.DataObject, kind: str, skip: int) -> None:
    codes = data.draw(st.lists(near_codes(kind), max_size=30))
    series = pl.Series("code", codes, dtype=pl.String).slice(skip)
    got = parse_code_series(series, kind).to_list()  # type: ignore[arg-type]
    expected = [int(c) if well_formed(kind, c) else None for c in codes[skip:]]
    assert got == expected


@settings(max_examples=100, deadline=None, database=None)
@given(data=st.data(), kind=KINDS)
def test_the_kernel_and_its_numpy_twin_agree(data: st.DataObject, kind: str) -> None:
    codes = data.draw(st.lists(near_codes(kind).map(lambda c: c or ""), min_size=1, max_size=30))
    arrow = pa.array(codes, pa.string_view())
    views = np.frombuffer(arrow.buffers()[1], dtype=np.uint8)[: len(arrow) * VIEW]
    weights = np.array(CHECK_WEIGHTS[kind], dtype=np.int64)
    width = 12 if kind == "my_number" else 11
    fast = parse_views(views, width, weights)
    slow = parse_views_numpy(views, width, weights)
    assert fast[1].tolist() == slow[1].tolist()
    assert fast[0][fast[1]].tolist() == slow[0][slow[1]].tolist()


@settings(max_examples=50, deadline=None, database=None)
@given(data=st.data(), kind=KINDS, cut=st.integers(0, 30))
def test_a_series_of_several_chunks_parses_like_one(data: st.DataObject, kind: str,
                                                    cut: int) -> None:  # fmt: skip
    codes = data.draw(st.lists(near_codes(kind), max_size=30))
    whole = pl.Series("code", codes, dtype=pl.String)
    chunked = pl.concat([whole.slice(0, cut), whole.slice(cut)], rechunk=False)
    got = parse_code_series(chunked, kind).to_list()  # type: ignore[arg-type]
    assert got == [int(c) if well_formed(kind, c) else None for c in codes]


@settings(deadline=None)  # the first example loads (or compiles) the numba kernel
@given(st.lists(st.integers(0, 10**11 - 1), max_size=200), st.sampled_from([11, 12]))
@example([0, 7, 10**11 - 1], 11)
@example([10**12 - 1, 10**11, 1], 12)
def test_formatting_codes_is_zero_padded_text_and_agrees_with_its_twin(
    values: list[int], width: int
) -> None:
    array = np.array(values, dtype=np.int64)
    text = format_codes(array, width)
    assert text.tobytes() == format_codes_reference(array, width).tobytes()
    assert text.tobytes().decode("ascii") == "".join(f"{v:0{width}d}" for v in values)

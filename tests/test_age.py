"""Ages (SPEC §5 "Age"): the SPEC's examples, and the integer arithmetic, its vectorised twin and
the oracle's anniversary counting agree on any dates."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from read_oracle import age_on as oracle_age_on
from read_oracle import reached_on as oracle_reached_on

from engine.age import age_expr, age_on, reached_on, reached_on_expr

DATES = st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))
LEAP_BIRTHS = st.integers(1900, 2096).filter(lambda y: y % 4 == 0 and y != 1900).map(
    lambda y: dt.date(y, 2, 29)
)


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        ("2000-04-02", "2006-04-01", 6),  # SPEC: gains the year at the end of the day before
        ("2000-04-02", "2006-03-31", 5),
        ("2000-02-29", "2001-02-28", 1),  # SPEC: 29 February's anniversary is 1 March
        ("2000-02-29", "2001-02-27", 0),
        ("2000-02-29", "2004-02-28", 4),
        ("2000-02-29", "2004-02-27", 3),
        ("2000-01-01", "2000-01-01", 0),
        ("2000-01-02", "2000-12-31", 0),
        ("2000-01-02", "2001-01-01", 1),
    ],
)
def test_the_spec_examples_of_age(birth: str, day: str, age: int) -> None:
    b, d = dt.date.fromisoformat(birth), dt.date.fromisoformat(day)
    assert age_on(b, d) == age
    frame = pl.DataFrame({"birth": [b]}).select(age=age_expr(pl.col("birth"), d))
    assert frame["age"].to_list() == [age]


@pytest.mark.parametrize(
    ("birth", "age", "reached"),
    [
        ("2006-12-01", 20, "2026-11-30"),  # SPEC
        ("2004-02-29", 20, "2024-02-28"),  # SPEC: a leap year, so the anniversary is 29 Feb
        ("2004-02-29", 21, "2025-02-28"),  # common year: anniversary 1 March, reached 28 Feb
        ("2000-03-01", 20, "2020-02-29"),
        ("2001-01-01", 20, "2020-12-31"),
    ],
)
def test_the_spec_examples_of_reached_on(birth: str, age: int, reached: str) -> None:
    b = dt.date.fromisoformat(birth)
    assert reached_on(b, age) == dt.date.fromisoformat(reached)
    frame = pl.DataFrame({"birth": [b]}).select(r=reached_on_expr(pl.col("birth"), age))
    assert frame["r"].to_list() == [dt.date.fromisoformat(reached)]


@settings(max_examples=300, deadline=None, database=None)
@given(birth=st.one_of(DATES, LEAP_BIRTHS), span=st.integers(0, 45_000))
def test_age_agrees_with_counting_anniversaries(birth: dt.date, span: int) -> None:
    day = birth + dt.timedelta(days=span)
    if day.year > 2199:
        return
    assert age_on(birth, day) == oracle_age_on(birth, day)


@settings(max_examples=100, deadline=None, database=None)
@given(births=st.lists(st.one_of(DATES, LEAP_BIRTHS), min_size=1, max_size=50), day=DATES,
       age=st.integers(0, 120))  # fmt: skip
def test_the_vectorised_twins_agree_with_the_scalar_rules(
    births: list[dt.date], day: dt.date, age: int
) -> None:
    frame = pl.DataFrame({"birth": births}).select(
        age=age_expr(pl.col("birth"), day), reached=reached_on_expr(pl.col("birth"), age)
    )
    assert frame["age"].to_list() == [age_on(b, day) for b in births]
    assert frame["reached"].to_list() == [reached_on(b, age) for b in births]
    assert all(age_on(b, reached_on(b, age)) == age for b in births)
    assert all(oracle_reached_on(b, age) == reached_on(b, age) for b in births)

"""Ages (SPEC §5 "Age"): 年齢計算ニ関スル法律 and 民法143条, in integer arithmetic.

A person gains a year at the end of the day before the birthday, so age(D) is the number of
completed years from `birth_date` to D + 1 day, where the anniversary of 29 February falls on
1 March in common years. `reached_on(a)` (年齢到達日) is the day before the a-th anniversary.

The scalar functions are the reference; the Polars expressions are their vectorised twins
(month·100 + day comparisons on the calendar fields, no per-row Python).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

LEAP_DAY = 229  # month * 100 + day of 29 February
MARCH_FIRST = 301


def is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _anniversary_md(birth_md: int, year: int) -> int:
    """month·100+day of the birthday in `year` (29 February → 1 March in a common year)."""
    return MARCH_FIRST if birth_md == LEAP_DAY and not is_leap(year) else birth_md


def age_on(birth: dt.date, day: dt.date) -> int:
    """Age on `day`: completed years from birth to day + 1 (the year is gained at the end of
    the day before the birthday)."""
    after = day + dt.timedelta(days=1)
    birth_md = birth.month * 100 + birth.day
    passed = after.month * 100 + after.day >= _anniversary_md(birth_md, after.year)
    return after.year - birth.year - (0 if passed else 1)


def reached_on(birth: dt.date, age: int) -> dt.date:
    """The day a person reaches `age`: the day before the age-th anniversary."""
    year = birth.year + age
    md = _anniversary_md(birth.month * 100 + birth.day, year)
    return dt.date(year, md // 100, md % 100) - dt.timedelta(days=1)


# -- vectorised twins ------------------------------------------------------------------------------
def _is_leap_expr(year: pl.Expr) -> pl.Expr:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def _anniversary_md_expr(birth_md: pl.Expr, year: pl.Expr) -> pl.Expr:
    return (
        pl.when((birth_md == LEAP_DAY) & ~_is_leap_expr(year))
        .then(pl.lit(MARCH_FIRST))
        .otherwise(birth_md)
    )


def age_expr(birth: pl.Expr, day: dt.date) -> pl.Expr:
    """Age on `day` of each `birth` date (Int32)."""
    after = day + dt.timedelta(days=1)
    birth_md = birth.dt.month().cast(pl.Int32) * 100 + birth.dt.day().cast(pl.Int32)
    anniversary = _anniversary_md_expr(birth_md, pl.lit(after.year, pl.Int32))
    passed = pl.lit(after.month * 100 + after.day, pl.Int32) >= anniversary
    return (after.year - birth.dt.year().cast(pl.Int32) - (~passed).cast(pl.Int32)).cast(pl.Int32)


def reached_on_expr(birth: pl.Expr, age: int) -> pl.Expr:
    """The day each `birth` date reaches `age` (Date)."""
    year = birth.dt.year().cast(pl.Int32) + age
    birth_md = birth.dt.month().cast(pl.Int32) * 100 + birth.dt.day().cast(pl.Int32)
    md = _anniversary_md_expr(birth_md, year)
    anniversary = pl.date(year, md // 100, md % 100)
    return anniversary - pl.duration(days=1)

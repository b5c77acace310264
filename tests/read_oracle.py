"""An independent oracle of the read services (SPEC §1, §5, Age): plain Python over the
journal's applied rows, one person at a time, written from the SPEC text alone.

It never looks at `current`, `codes` or any fast path: a history row is a dict; the version in
effect on D as known at T is found by reading the SPEC's sentence literally.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from deltalake import DeltaTable
from oracle import my_number_valid, resident_code_valid

from engine.store import Store

JST = dt.timezone(dt.timedelta(hours=9))
RECORD = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
          "given_name_kana", "former_surname", "former_surname_kana", "alias", "birth_date", "sex",
          "municipality_code", "prefecture_code", "address", "resident_kind", "status",
          "protected"]  # fmt: skip
ADDRESS = ("municipality_code", "prefecture_code", "address")
Row = dict[str, Any]


class History:
    """Every applied notification, grouped per person in application order."""

    def __init__(self, store: Store) -> None:
        rows = DeltaTable(str(store.table_path("journal"))).to_pyarrow_table().to_pylist()
        applied = [r for r in rows if r["outcome"] in ("applied", "released")]
        self.persons: dict[int, list[Row]] = defaultdict(list)
        for r in sorted(applied, key=lambda r: (r["recorded_at"], r["apply_order"])):
            self.persons[r["person"]].append(r)
        self.stamps = sorted({r["recorded_at"] for r in rows})

    def known(self, person: int, at: dt.datetime | None) -> list[Row]:
        return [r for r in self.persons[person] if at is None or r["recorded_at"] <= at]

    def version_on(self, person: int, day: dt.date, at: dt.datetime | None) -> Row | None:
        """SPEC §1: the last version in application order with change_date ≤ D, counting
        neither X1 versions nor versions cancelled by an X1 the read knows."""
        rows = self.known(person, at)
        cancelled = {(r["cancels_municipality_code"], r["cancels_seq"]) for r in rows
                     if r["reason"] == "X1"}  # fmt: skip
        chosen = None
        for r in rows:
            if r["reason"] == "X1" or (r["municipality_code"], r["seq"]) in cancelled:
                continue
            if r["change_date"] <= day:
                chosen = r
        return chosen

    def person_of(self, kind: str, code: str, at: dt.datetime | None) -> int | None:
        """The person who holds or ever held the code, as known at the bound."""
        columns = ("my_number",) if kind == "my_number" else ("resident_code", "previous_resident_code")
        for p, rows in self.persons.items():
            for r in rows:
                if (at is None or r["recorded_at"] <= at) and code in [r[c] for c in columns]:
                    return p
        return None


def well_formed(kind: str, code: str | None) -> bool:
    width = 12 if kind == "my_number" else 11
    if code is None or len(code) != width or not (code.isascii() and code.isdigit()):
        return False
    return my_number_valid(code) if kind == "my_number" else resident_code_valid(code)


def shown(version: Row, columns: list[str], protected_access: bool) -> Row:
    """The record columns handed over: address columns withheld from protected persons."""
    hide = bool(version["protected"]) and not protected_access
    out = {c: (None if hide and c in ADDRESS else version[c]) for c in columns}
    out["protected"] = bool(version["protected"])
    return out


def lookup(history: History, kind: str, codes: list[str | None], *, day: dt.date,
           at: dt.datetime | None, columns: list[str], prefecture: str | None,
           protected_access: bool) -> list[Row]:  # fmt: skip
    out = []
    for i, code in enumerate(codes, 1):
        blank = {c: None for c in [*columns, "protected"]}
        row: Row = {"request_row": i, "found": False, "miss": None, **blank}
        p = history.person_of(kind, code, at) if well_formed(kind, code) else None
        v = history.version_on(p, day, at) if p is not None else None
        if not well_formed(kind, code):
            row["miss"] = "malformed"
        elif p is None:
            row["miss"] = "unknown"
        elif v is None:
            row["miss"] = "no version on date"
        elif prefecture is not None and v["prefecture_code"] != prefecture:
            row["miss"] = "out of scope"
        else:
            row.update(found=True, **shown(v, columns, protected_access))
        out.append(row)
    return out


def japan_date(t: dt.datetime) -> dt.date:
    return t.astimezone(JST).date()


def changes(history: History, kind: str, codes: list[str | None], *, since: dt.datetime,
            until: dt.datetime, columns: list[str], prefecture: str | None,
            protected_access: bool) -> list[Row]:  # fmt: skip
    """SPEC §5 `juki changes`, one target at a time."""
    out = []
    for i, code in enumerate(codes, 1):
        # SPEC §5: codes are matched as known now (changes has no --known-at)
        p = history.person_of(kind, code, None) if well_formed(kind, code) else None
        if p is None:
            continue
        window = [r for r in history.persons[p] if since < r["recorded_at"] <= until]
        if not window:
            continue
        now = history.version_on(p, japan_date(until), until)
        if prefecture is not None and (now is None or now["prefecture_code"] != prefecture):
            continue
        before = history.version_on(p, japan_date(since), since)
        row: Row = {"request_row": i}
        if now is None:
            row.update({c: None for c in [*columns, "protected"]})
        else:
            row.update(shown(now, columns, protected_access))
        row["reasons"] = [r["reason"] for r in window]
        row["first_change_date"] = min(r["change_date"] for r in window)
        row["last_change_date"] = max(r["change_date"] for r in window)
        hide = row["protected"] is True and not protected_access
        for c in ("surname", "given_name", "address", "municipality_code"):
            if c in columns:
                value = None if before is None else before[c]
                row[f"previous_{c}"] = None if hide and c in ADDRESS else value
        out.append(row)
    return out


# -- Age (SPEC §5 "Age"), counted the long way --------------------------------------------------
def anniversary(birth: dt.date, years: int) -> dt.date:
    """The `years`-th anniversary; that of 29 February falls on 1 March in common years."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return dt.date(birth.year + years, 3, 1)


def reached_on(birth: dt.date, age: int) -> dt.date:
    """年齢計算ニ関スル法律: the age is reached at the end of the day before the anniversary."""
    return anniversary(birth, age) - dt.timedelta(days=1)


def age_on(birth: dt.date, day: dt.date) -> int:
    """How many anniversaries-minus-a-day have passed by the end of `day`."""
    years = 0
    while reached_on(birth, years + 1) <= day:
        years += 1
    return years


def registered(history: History, day: dt.date, at: dt.datetime | None) -> list[Row]:
    """Every person's version in effect on the day, for those registered (status 1)."""
    out = []
    for p in history.persons:
        v = history.version_on(p, day, at)
        if v is not None and v["status"] == 1:
            out.append(v)
    return out


def extract(history: History, *, day: dt.date, at: dt.datetime | None, columns: list[str],
            prefecture: str | None, protected_access: bool, prefectures: tuple[str, ...] = (),
            municipalities: tuple[str, ...] = (), ages: tuple[int, int] | None = None,
            month: tuple[dt.date, dt.date] | None = None,
            milestones: tuple[int, ...] = ()) -> list[Row]:  # fmt: skip
    """base-date (neither `ages` nor `month`), region-age (`ages`), milestone (`month`)."""
    out = []
    read_day = month[1] if month else day
    for v in registered(history, read_day, at):
        if (prefectures or municipalities) and not (
            v["prefecture_code"] in prefectures or v["municipality_code"] in municipalities
        ):
            continue
        if prefecture is not None and v["prefecture_code"] != prefecture:
            continue
        row = shown(v, columns, protected_access)
        if ages is not None:
            row["age"] = age_on(v["birth_date"], day)
            if not ages[0] <= row["age"] <= ages[1]:
                continue
        if month is not None:
            hit = [(a, reached_on(v["birth_date"], a)) for a in milestones
                   if month[0] <= reached_on(v["birth_date"], a) <= month[1]]  # fmt: skip
            if not hit:
                continue
            row["age"], row["reached_on"] = hit[0]
        out.append(row)
    return sorted(out, key=lambda r: r["resident_code"])


def age5(age: int) -> str:
    return "100+" if age >= 100 else f"{age // 5 * 5}-{age // 5 * 5 + 4}"

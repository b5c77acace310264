"""Property tests: `ingest_files` agrees with the row-by-row oracle of SPEC §3/§4 (tests/oracle.py).

Random streams of notification rows over a handful of persons and three municipalities (valid
rows, rows with wrong targets or codes, stateless breaks, seq gaps, duplicate seqs, repeated
files) are split into files, ingested into a fresh store, and compared with the oracle: per file
the counts, the rule of every rejected row, and the current state of every person.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from builders import (
    CHIYODA,
    SAPPORO,
    SHIBUYA,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)
from hypothesis import HealthCheck, given, settings
from oracle import REASONS, FileResult, Oracle, Person, my_number_valid, resident_code_valid

from engine.current import scan_current
from engine.store import Store
from loaders.ingest import ingest_files

RECORD_KEYS = list(person(0).keys())
SURNAMES = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("Smith", "スミス")]
CORRUPTIONS = [None] * 8 + [
    "other-my-number",  # another person's My Number
    "old-resident-code",  # a resident code the person held before (M5) or another person's
    "unknown-code",  # a resident code never issued
    "check-digit-resident",
    "check-digit-my-number",
    "kana",
    "birth-after-change",
    "sex",
    "alias-japanese",
    "unknown-reason",
]
CURRENT_COLUMNS = ["resident_code", "my_number", "status", "surname", "municipality_code",
                   "version", "last_version"]  # fmt: skip
PROPERTY = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _bad_check_digit(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


class StreamBuilder:
    """Writes a plausible stream of notifications, as senders that mostly know the store would.

    A model oracle applies each row in the order written (no gaps), so the builder can aim rows
    at persons' current codes and latest notifications; hypothesis then picks wrong ones too.
    """

    def __init__(self, draw: st.DrawFn, municipalities: int) -> None:
        self._draw = draw
        self.model = Oracle()
        self.senders = [Municipality(c) for c in (CHIYODA, SHIBUYA, SAPPORO)[:municipalities]]
        self.fresh = itertools.count(1)
        self.rows: list[dict[str, Any]] = []

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self._draw(strategy)

    def sender_for(self, code: str | None, right: bool) -> Municipality:
        same = [s for s in self.senders if s.code == code]
        other = [s for s in self.senders if s.code != code]
        pool = (same if right else other) or self.senders
        return self.draw(st.sampled_from(pool))

    def latest_record(self, p: Person) -> dict[str, Any]:
        v = p.effective() or next(v for v in reversed(p.versions) if v.record is not None)
        assert v.record is not None
        return {k: v.record.get(k) for k in RECORD_KEYS}

    def held_codes(self, kind: str) -> list[str]:
        return sorted(code for k, code in self.model.issued if k == kind)

    def emit(self, sender: Municipality, reason: str, record: dict[str, Any], **extra: Any) -> None:
        change_date = self.draw(st.dates(min_value=_date(2020, 1, 1), max_value=_date(2024, 12, 31)))
        r = row(sender, reason, change_date.isoformat(), record, seq=sender.next(), **extra)
        self.rows.append(r)
        self.model.process(r)

    def new_person(self, reason: str) -> None:
        n = next(self.fresh)
        foreign = self.draw(st.integers(0, 4)) == 0
        sender = self.draw(st.sampled_from(self.senders))
        record = person(n, municipality_code=sender.code)
        if foreign:
            record.update(surname="Smith", surname_kana="スミス", given_name="John",
                          given_name_kana="ジョン", resident_kind="2")  # fmt: skip
        self.corrupt(record, reason)
        self.emit(sender, reason, record)

    def corrupt(self, record: dict[str, Any], reason: str) -> str:
        """Maybe break one thing in the row; returns the reason to send (maybe unknown)."""
        how = self.draw(st.sampled_from(CORRUPTIONS))
        if how == "other-my-number":
            record["my_number"] = self.draw(st.sampled_from(self.held_codes("my_number") or [my_number(0)]))
        elif how == "old-resident-code":
            record["resident_code"] = self.draw(
                st.sampled_from(self.held_codes("resident_code") or [resident_code(0)])
            )
        elif how == "unknown-code":
            record["resident_code"] = resident_code(next(self.fresh))
        elif how == "check-digit-resident":
            record["resident_code"] = _bad_check_digit(record["resident_code"])
        elif how == "check-digit-my-number":
            record["my_number"] = _bad_check_digit(record["my_number"])
        elif how == "kana":
            record["surname_kana"] = "やまだ"
        elif how == "birth-after-change":
            record["birth_date"] = "2030-01-01"
        elif how == "sex":
            record["sex"] = "3"
        elif how == "alias-japanese" and record.get("resident_kind") == "1":
            record["alias"] = "通称"
        elif how == "unknown-reason":
            return "Z9"
        return reason

    def change(self, reason: str) -> None:
        """A notification about an existing person (or, now and then, about nobody known)."""
        people = list(self.model.persons.values())
        if not people:
            return self.new_person("A4")
        p = self.draw(st.sampled_from(people))
        record = self.latest_record(p)
        current = p.effective()
        here = record["municipality_code"]
        right = self.draw(st.integers(0, 3)) > 0
        extra: dict[str, Any] = {}
        if reason == "X1":
            sender = self.sender_for(here, True)
            record = {"resident_code": record["resident_code"], "my_number": record["my_number"]}
            target = self.draw(st.sampled_from(["top", "top", "top", "earlier", "any"]))
            if target == "top" and current is not None:
                extra = dict(cancels_municipality_code=current.municipality_code, cancels_seq=current.seq)
            elif target == "earlier" and len(p.versions) > 1:
                v = self.draw(st.sampled_from(p.versions[:-1]))
                extra = dict(cancels_municipality_code=v.municipality_code, cancels_seq=v.seq)
            else:
                s = self.draw(st.sampled_from(self.senders))
                extra = dict(cancels_municipality_code=s.code, cancels_seq=self.draw(st.integers(1, s.seq + 1)))
        else:
            sender = self.sender_for(here, right if reason != "A2" else not right)
            k = next(self.fresh)
            if reason in ("A2", "M1", "D1"):
                record["address"] = f"住所{k}"
            elif reason == "M2":
                record["surname"], record["surname_kana"] = self.draw(st.sampled_from(SURNAMES))
            elif reason == "M3":
                record["given_name"] = f"花子{k}"
            elif reason == "M4":
                record["my_number"] = my_number(k) if right else self.draw(
                    st.sampled_from(self.held_codes("my_number")))
            elif reason == "M5":
                extra["previous_resident_code"] = record["resident_code"]
                record["resident_code"] = resident_code(k) if right else self.draw(
                    st.sampled_from(self.held_codes("resident_code")))
            elif reason == "M6" and record["resident_kind"] == "1":
                if record["former_surname"] is None:
                    record["former_surname"], record["former_surname_kana"] = "旧姓", "キュウセイ"
                else:
                    record["former_surname"] = record["former_surname_kana"] = None
            elif reason == "M7" and record["resident_kind"] == "2":
                record["alias"] = None if record["alias"] else "山本"
        reason = self.corrupt(record, reason)
        self.emit(sender, reason, record, **extra)

    def step(self) -> None:
        reason = self.draw(st.sampled_from(REASONS))
        if reason in ("A1", "A3", "A4") and self.draw(st.integers(0, 2)) > 0:
            self.new_person(reason)
        else:
            self.change(reason)


def _date(y: int, m: int, d: int):  # noqa: ANN202
    import datetime

    return datetime.date(y, m, d)


def perturb(draw: st.DrawFn, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reorder (seq gaps, held rows released later), repeat (duplicate seqs) or drop rows."""
    rows = list(rows)
    ops = draw(
        st.lists(
            st.tuples(st.sampled_from(["swap", "swap", "move", "repeat", "resend", "drop"]),
                      st.integers(0, 10_000), st.integers(0, 10_000)),  # fmt: skip
            max_size=4,
        )
    )
    for op, a, b in ops:
        if not rows:
            break
        i, j = a % len(rows), b % (len(rows) + 1)
        if op == "swap":
            j %= len(rows)
            rows[i], rows[j] = rows[j], rows[i]
        elif op == "move":
            rows.insert(j, rows.pop(i))
        elif op == "repeat":
            rows.insert(j, dict(rows[i]))
        elif op == "resend":  # the same (municipality_code, seq) with other contents
            rows.insert(j, dict(rows[i], reason="M3", given_name="別人"))
        elif op == "drop" and draw(st.integers(0, 3)) == 0:
            rows.pop(i)
    return rows


@st.composite
def streams(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Files (lists of rows) in the order they are given to ingest; a file may be repeated."""
    builder = StreamBuilder(draw, draw(st.integers(2, 3)))
    for _ in range(draw(st.integers(1, 3))):
        builder.new_person("A4")
    for _ in range(draw(st.integers(3, 18))):
        builder.step()
    rows = perturb(draw, builder.rows)
    n_files = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), min_size=n_files - 1, max_size=n_files - 1)))
    bounds = [0, *cuts, len(rows)]
    files = [rows[a:b] for a, b in itertools.pairwise(bounds)]
    if draw(st.integers(0, 3)) == 0:
        files.append(files[draw(st.integers(0, len(files) - 1))])  # the same file given twice
    return files


def write_files(directory: Path, files: list[list[dict[str, Any]]]) -> list[str]:
    paths: list[str] = []
    written: dict[int, str] = {}
    for i, rows in enumerate(files):
        if id(rows) not in written:
            written[id(rows)] = str(write_csv(directory / f"batch{i + 1}.csv", rows))
        paths.append(written[id(rows)])
    return paths


def oracle_run(oracle: Oracle, paths: list[str], files: list[list[dict[str, Any]]]) -> list[FileResult]:
    return [oracle.ingest_file(p, rows) for p, rows in zip(paths, files, strict=True)]


def store_current(store: Store) -> dict[str, dict[str, Any]]:
    frame = scan_current(store).collect().select(CURRENT_COLUMNS)
    out = {}
    for r in frame.iter_rows(named=True):
        r["status"] = int(r["status"])
        assert r["resident_code"] not in out, f"two current persons hold {r['resident_code']}"
        out[r["resident_code"]] = r
    return out


def describe(paths: list[str], files: list[list[dict[str, Any]]]) -> str:
    keys = ["municipality_code", "seq", "reason", "change_date", "resident_code", "my_number",
            "previous_resident_code", "cancels_municipality_code", "cancels_seq", "surname",
            "surname_kana", "birth_date", "sex", "alias", "resident_kind"]  # fmt: skip
    lines = []
    for p, rows in zip(paths, files, strict=True):
        lines.append(f"--- {Path(p).name}")
        for i, r in enumerate(rows, 1):
            lines.append(f"{i:3d} " + " ".join(f"{k}={r[k]}" for k in keys if r.get(k) not in (None, "")))
    return "\n".join(lines)


def check_against_oracle(store: Store, report: Any, expected: list[FileResult], story: str) -> None:
    assert len(report.files) == len(expected)
    for got, want in zip(report.files, expected, strict=True):
        assert not hasattr(got, "error"), f"{got}\n{story}"
        counts = {k: getattr(got, k) for k in ("applied", "rejected", "duplicate", "held", "released")}
        assert counts == want.counts(), f"{Path(want.file).name}: {counts} != {want.counts()}\n{story}"
        rejects = {}
        if got.rejects is not None:
            for r in got.rejects.iter_rows(named=True):
                rejects[(r["file"], int(r["row"]))] = r["rule"]
        assert rejects == want.rejects, f"{Path(want.file).name}: rejects differ\n{story}"


@PROPERTY
@given(files=streams())
def test_ingest_agrees_with_the_oracle_row_by_row(files: list[list[dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), files)
        story = describe(paths, files)
        oracle = Oracle()
        expected = oracle_run(oracle, paths, files)
        store = Store(Path(tmp) / "store")
        report = ingest_files(store, paths, rejects_dir=Path(tmp) / "rejects")
        check_against_oracle(store, report, expected, story)
        assert store_current(store) == oracle.current(), f"current state differs\n{story}"


@PROPERTY
@given(files=streams())
def test_ingesting_the_same_files_again_changes_nothing(files: list[list[dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), files)
        story = describe(paths, files)
        store = Store(Path(tmp) / "store")
        ingest_files(store, paths)
        before = store_current(store)
        again = ingest_files(store, paths)
        for f, rows in zip(again.files, files, strict=True):
            assert (f.applied, f.rejected, f.held, f.released) == (0, 0, 0, 0), f"{f}\n{story}"
            assert f.duplicate == len(rows), f"{f}\n{story}"
        assert store_current(store) == before, story


def test_the_oracle_check_digits_follow_the_spec_examples() -> None:
    assert all(my_number_valid(c) for c in ("123456789018", "023456789013", "983205673214"))
    assert resident_code_valid("24727059608")
    assert all(resident_code_valid(resident_code(n)) for n in range(50))
    assert all(my_number_valid(my_number(n)) for n in range(50))


@pytest.mark.parametrize("municipality", [CHIYODA, SHIBUYA, SAPPORO])
def test_the_builders_municipality_codes_are_valid(municipality: str) -> None:
    from oracle import municipality_code_valid

    assert municipality_code_valid(municipality)

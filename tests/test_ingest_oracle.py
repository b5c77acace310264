"""Property tests: `ingest_files` agrees with the row-by-row oracle of SPEC §3/§4 (oracle.py).

Random streams of notification rows over a handful of persons and three municipalities (valid
rows, rows with wrong targets or codes, stateless breaks, seq gaps, duplicate seqs, repeated
files) are split into files, ingested into a fresh store, and compared with the oracle: per file
the counts, the rule of every rejected row, and the current state of every person.
"""

from __future__ import annotations

import datetime
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

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
from hypothesis import HealthCheck, Phase, given, settings
from oracle import REASONS, FileResult, Oracle, Person, my_number_valid, resident_code_valid

from engine import validate
from engine.current import scan_current
from engine.store import Store
from loaders.ingest import ingest_files

RECORD_KEYS = list(person(0).keys())
SURNAMES = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("Smith", "スミス")]
CORRUPTIONS = [
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
STEPS = (3, 18)  # notifications written per stream, before perturbation
CURRENT_COLUMNS = ["resident_code", "my_number", "status", "surname", "municipality_code",
                   "version", "last_version"]  # fmt: skip
# Each example ingests into a fresh Delta store (~0.3 s). Shrinking a failure takes minutes, so
# it runs only with JUKI_SHRINK=1; the unshrunk stream is printed as a story either way.
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate]
    + ([Phase.shrink] if os.environ.get("JUKI_SHRINK") else []),
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
        self.unissued: list[tuple[str, str]] = []

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

    def issued_codes(self, kind: str) -> list[str]:
        return sorted(code for k, code in self.model.issued if k == kind)

    def emit(self, sender: Municipality, reason: str, record: dict[str, Any], **extra: Any) -> None:
        change_date = self.draw(
            st.dates(min_value=datetime.date(2020, 1, 1), max_value=datetime.date(2024, 12, 31))
        )
        r = row(sender, reason, change_date.isoformat(), record, seq=sender.next(), **extra)
        self.rows.append(r)
        if self.model.process(r) is not None and reason in ("A1", "A3", "A4"):
            self.unissued.append((record["resident_code"], record["my_number"]))

    def new_person(self, reason: str) -> None:
        n = next(self.fresh)
        foreign = self.draw(st.integers(0, 4)) == 0
        sender = self.draw(st.sampled_from(self.senders))
        record = person(n, municipality_code=sender.code)
        if foreign:
            record.update(surname="Smith", surname_kana="スミス", given_name="John",
                          given_name_kana="ジョン", resident_kind="2")  # fmt: skip
        if self.unissued and self.draw(st.integers(0, 2)) == 0:
            # the codes of a rejected new-person row: a rejected row issues nothing (SPEC §4)
            record["resident_code"], record["my_number"] = self.draw(st.sampled_from(self.unissued))
        reason = self.corrupt(record, reason)
        self.emit(sender, reason, record)

    def corrupt(self, record: dict[str, Any], reason: str, p: Person | None = None) -> str:
        """Maybe break one thing in the row; returns the reason to send (maybe unknown)."""
        if self.draw(st.integers(0, 3)) > 0:
            return reason
        how = self.draw(st.sampled_from(CORRUPTIONS))
        if how == "other-my-number":
            record["my_number"] = self.draw(
                st.sampled_from(self.issued_codes("my_number") or [my_number(0)])
            )
        elif how == "old-resident-code":
            # the person's own codes first (a code retired by M5, or issued by a cancelled M5)
            own = sorted({v.record["resident_code"] for v in (p.versions if p else []) if v.record})
            own = [c for c in own if c != record["resident_code"]]
            record["resident_code"] = self.draw(
                st.sampled_from(own or self.issued_codes("resident_code") or [resident_code(0)])
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

    @staticmethod
    def fits(p: Person, reason: str) -> bool:
        """Whether SPEC §3 lets `reason` follow the person's current version (to aim most rows)."""
        v = p.effective()
        if v is None or (v.reason == "D3" and reason != "X1"):
            return False
        wanted = {"A2": {2}, "A3": {9}, "A4": {9}, "D1": {1}, "M1": {1}}.get(reason, {1, 2})
        return reason == "X1" or v.status in wanted

    def change(self, reason: str) -> None:
        """A notification about an existing person (or, now and then, about nobody known)."""
        people = list(self.model.persons.values())
        if not people:
            return self.new_person("A4")
        fits = [p for p in people if self.fits(p, reason)]
        p = self.draw(
            st.sampled_from(fits if fits and self.draw(st.integers(0, 3)) > 0 else people)
        )
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
                extra = {
                    "cancels_municipality_code": current.municipality_code,
                    "cancels_seq": current.seq,
                }
            elif target == "earlier" and len(p.versions) > 1:
                v = self.draw(st.sampled_from(p.versions[:-1]))
                extra = {"cancels_municipality_code": v.municipality_code, "cancels_seq": v.seq}
            else:
                s = self.draw(st.sampled_from(self.senders))
                extra = {
                    "cancels_municipality_code": s.code,
                    "cancels_seq": self.draw(st.integers(1, s.seq + 1)),
                }
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
                record["my_number"] = (
                    my_number(k)
                    if right
                    else self.draw(st.sampled_from(self.issued_codes("my_number")))
                )
            elif reason == "M5":
                extra["previous_resident_code"] = record["resident_code"]
                record["resident_code"] = (
                    resident_code(k)
                    if right
                    else self.draw(st.sampled_from(self.issued_codes("resident_code")))
                )
            elif reason == "M6" and record["resident_kind"] == "1":
                if record["former_surname"] is None:
                    record["former_surname"], record["former_surname_kana"] = "旧姓", "キュウセイ"
                else:
                    record["former_surname"] = record["former_surname_kana"] = None
            elif reason == "M7" and record["resident_kind"] == "2":
                record["alias"] = None if record["alias"] else "山本"
        if reason == "M5" and extra["previous_resident_code"] and self.draw(st.integers(0, 5)) == 0:
            own = sorted({v.record["resident_code"] for v in p.versions if v.record})
            extra["previous_resident_code"] = self.draw(st.sampled_from(own))
        reason = self.corrupt(record, reason, p)
        self.emit(sender, reason, record, **extra)

    def step(self) -> None:
        reason = self.draw(st.sampled_from(REASONS))
        if reason in ("A1", "A3", "A4") and self.draw(st.integers(0, 2)) > 0:
            self.new_person(reason)
        else:
            self.change(reason)


def perturb(draw: st.DrawFn, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reorder (seq gaps, held rows released later), repeat (duplicate seqs) or drop rows."""
    rows = list(rows)
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["swap", "swap", "move", "repeat", "resend", "drop"]),
                st.integers(0, 10_000),
                st.integers(0, 10_000),
            ),
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
def streams(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """Files (lists of rows) in the order they are given to ingest (a file may be repeated), and
    how many files each `ingest_files` call takes."""
    builder = StreamBuilder(draw, draw(st.integers(2, 3)))
    for _ in range(draw(st.integers(1, 3))):
        builder.new_person("A4")
    for _ in range(draw(st.integers(*STEPS))):
        builder.step()
    rows = perturb(draw, builder.rows)
    n_files = draw(st.integers(1, 4))
    cuts = sorted(
        draw(st.lists(st.integers(0, len(rows)), min_size=n_files - 1, max_size=n_files - 1))
    )
    bounds = [0, *cuts, len(rows)]
    files = [rows[a:b] for a, b in itertools.pairwise(bounds)]
    if draw(st.integers(0, 3)) == 0:
        files.append(files[draw(st.integers(0, len(files) - 1))])  # the same file given twice
    calls, left = [], len(files)
    while left:
        calls.append(draw(st.integers(1, left)))
        left -= calls[-1]
    return files, calls


def write_files(directory: Path, files: list[list[dict[str, Any]]]) -> list[str]:
    paths: list[str] = []
    written: dict[int, str] = {}
    for i, rows in enumerate(files):
        if id(rows) not in written:
            written[id(rows)] = str(write_csv(directory / f"batch{i + 1}.csv", rows))
        paths.append(written[id(rows)])
    return paths


def oracle_run(
    oracle: Oracle, paths: list[str], files: list[list[dict[str, Any]]]
) -> list[FileResult]:
    return [oracle.ingest_file(p, rows) for p, rows in zip(paths, files, strict=True)]


def store_current(store: Store) -> dict[str, dict[str, Any]]:
    frame = scan_current(store).collect().select(CURRENT_COLUMNS)
    out = {}
    for r in frame.iter_rows(named=True):
        r["status"] = int(r["status"])
        assert r["resident_code"] not in out, f"two current persons hold {r['resident_code']}"
        out[r["resident_code"]] = r
    return out


def describe(paths: list[str], files: list[list[dict[str, Any]]], calls: list[int]) -> str:
    """The stream as a story: each call, its files and their rows (a repeated file shown once)."""
    keys = ["municipality_code", "seq", "reason", "change_date", "resident_code", "my_number",
            "previous_resident_code", "cancels_municipality_code", "cancels_seq", "surname",
            "surname_kana", "birth_date", "sex", "alias", "resident_kind"]  # fmt: skip
    lines, shown, ends = [], set(), set(itertools.accumulate(calls))
    for n, (p, rows) in enumerate(zip(paths, files, strict=True), 1):
        lines.append(f"--- {Path(p).name}" + (" (again)" if p in shown else ""))
        if p not in shown:
            for i, r in enumerate(rows, 1):
                lines.append(
                    f"{i:3d} " + " ".join(f"{k}={r[k]}" for k in keys if r.get(k) not in (None, ""))
                )
        shown.add(p)
        if n in ends and n < len(paths):
            lines.append("=== next ingest_files call")
    return "\n".join(lines)


def ingest_in_calls(store: Store, paths: list[str], calls: list[int], rejects: Path) -> list[Any]:
    out: list[Any] = []
    for a, b in itertools.pairwise([0, *itertools.accumulate(calls)]):
        out += ingest_files(store, paths[a:b], rejects_dir=rejects).files
    return out


def check_against_oracle(got_files: list[Any], expected: list[FileResult], story: str) -> None:
    assert len(got_files) == len(expected)
    for got, want in zip(got_files, expected, strict=True):
        name = Path(want.file).name
        assert not hasattr(got, "error"), f"{got}\n{story}"
        counts = {
            k: getattr(got, k) for k in ("applied", "rejected", "duplicate", "held", "released")
        }
        assert counts == want.counts(), (
            f"{name}: counts {counts} != oracle {want.counts()}\n{story}"
        )
        rejects = {}
        if got.rejects is not None:
            for r in got.rejects.iter_rows(named=True):
                rejects[(r["file"], int(r["row"]))] = r["rule"]
        if rejects != want.rejects:
            diff = {
                (Path(f).name, r): (rejects.get((f, r)), want.rejects.get((f, r)))
                for f, r in set(rejects) | set(want.rejects)
                if rejects.get((f, r)) != want.rejects.get((f, r))
            }
            raise AssertionError(f"{name}: rejects (file, row): (ingest, oracle) {diff}\n{story}")


def check_rejects_files(
    paths: list[str], expected: list[FileResult], directory: Path, story: str
) -> None:
    """SPEC §4: DIR/<stem>.rejects.csv holds a file's rejects, written only when it has any (the
    streams repeat a file only where its second reading is all duplicates)."""
    import csv

    first: dict[str, FileResult] = {}
    for p, want in zip(paths, expected, strict=True):
        first.setdefault(p, want)
    for p, want in first.items():
        target = directory / f"{Path(p).stem}.rejects.csv"
        if not want.rejects:
            assert not target.exists(), f"{target.name} written for a file without rejects\n{story}"
            continue
        with open(target, encoding="utf-8", newline="") as f:
            lines = list(csv.DictReader(f))
        assert list(lines[0]) == [
            "file",
            "row",
            "municipality_code",
            "seq",
            "column",
            "rule",
            "message",
        ]
        got = {(r["file"], int(r["row"])): r["rule"] for r in lines}
        assert got == want.rejects, f"{target.name}: {got} != {want.rejects}\n{story}"


def check_current(store: Store, oracle: Oracle, story: str) -> None:
    got, want = store_current(store), oracle.current()
    diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
    assert not diff, f"current (ingest, oracle): {diff}\n{story}"


@PROPERTY
@given(stream=streams())
def test_ingest_agrees_with_the_oracle_row_by_row(
    stream: tuple[list[list[dict[str, Any]]], list[int]],
) -> None:
    files, calls = stream
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), files)
        story = describe(paths, files, calls)
        oracle = Oracle()
        expected = oracle_run(oracle, paths, files)
        store = Store(Path(tmp) / "store")
        got = ingest_in_calls(store, paths, calls, Path(tmp) / "rejects")
        check_against_oracle(got, expected, story)
        check_rejects_files(paths, expected, Path(tmp) / "rejects", story)
        check_current(store, oracle, story)


@settings(PROPERTY, max_examples=8)
@given(stream=streams())
def test_the_row_rules_agree_with_the_oracle_when_check_digits_run_in_the_kernel(
    stream: tuple[list[list[dict[str, Any]]], list[int]],
) -> None:
    """Large groups check digits in the numba kernel (validate.KERNEL_ROWS); here every group
    does, and the rejects (check-digit ones included) are still the oracle's."""
    files, calls = stream
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(validate, "KERNEL_ROWS", 0):
        paths = write_files(Path(tmp), files)
        story = describe(paths, files, calls)
        expected = oracle_run(Oracle(), paths, files)
        got = ingest_in_calls(Store(Path(tmp) / "store"), paths, calls, Path(tmp) / "rejects")
        check_against_oracle(got, expected, story)


@PROPERTY
@given(stream=streams())
def test_ingesting_the_same_files_again_changes_nothing(
    stream: tuple[list[list[dict[str, Any]]], list[int]],
) -> None:
    files, calls = stream
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), files)
        story = describe(paths, files, calls)
        store = Store(Path(tmp) / "store")
        ingest_in_calls(store, paths, calls, Path(tmp) / "rejects")
        before = store_current(store)
        again = ingest_files(store, paths).files
        for f, rows in zip(again, files, strict=True):
            counts = (f.applied, f.rejected, f.duplicate, f.held, f.released)
            assert counts == (0, 0, len(rows), 0, 0), f"{f}\n{story}"
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


# --- stories: cases the properties found or that the SPEC names, with the outcome spelled out --


def ingest_story(
    tmp_path: Path, files: list[list[dict[str, Any]]], calls: list[int] | None = None
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Ingest `files` (a list object given twice is the same path twice) and check the oracle
    agrees; returns (per-file results, current by resident_code) for the story's own asserts."""
    calls = calls or [len(files)]
    paths = write_files(tmp_path, files)
    story = describe(paths, files, calls)
    oracle = Oracle()
    expected = oracle_run(oracle, paths, files)
    store = Store(tmp_path / "store")
    got = ingest_in_calls(store, paths, calls, tmp_path / "rejects")
    check_against_oracle(got, expected, story)
    check_rejects_files(paths, expected, tmp_path / "rejects", story)
    check_current(store, oracle, story)
    return got, store_current(store)


def _rules(result: Any) -> dict[tuple[str, int], str]:
    return {
        (Path(r["file"]).name, r["row"]): r["rule"] for r in result.rejects.iter_rows(named=True)
    }


def test_a_row_held_and_released_in_one_file_counts_as_held_and_released(tmp_path: Path) -> None:
    chiyoda = Municipality(CHIYODA)
    first = row(chiyoda, "A4", "2024-01-01", person(1), seq=1)
    second = row(chiyoda, "A4", "2024-01-01", person(2), seq=2)
    batch = [second, first]
    got, _ = ingest_story(tmp_path, [batch, batch])  # the same file given twice
    assert got[0].to_json()["applied"] == 1 and (got[0].held, got[0].released) == (1, 1)
    assert got[1].duplicate == 2


def test_a_held_row_rejected_on_release_goes_to_the_releasing_files_rejects(tmp_path: Path) -> None:
    chiyoda = Municipality(CHIYODA)
    early = [
        row(chiyoda, "M2", "2024-02-01", person(9, surname="佐藤", surname_kana="サトウ"), seq=2)
    ]
    late = [row(chiyoda, "A4", "2024-01-01", person(1), seq=1)]
    got, _ = ingest_story(tmp_path, [early, late], calls=[1, 1])
    assert (got[0].held, got[1].applied, got[1].rejected, got[1].released) == (1, 1, 1, 0)
    assert _rules(got[1]) == {("batch1.csv", 1): "unknown-person"}


def test_cancelling_an_m5_brings_the_old_code_back_and_keeps_the_new_one_issued(
    tmp_path: Path,
) -> None:
    chiyoda = Municipality(CHIYODA)
    old, new = resident_code(1), resident_code(2)
    rows = [
        row(chiyoda, "A4", "2024-01-01", person(1)),
        row(chiyoda, "M5", "2024-02-01", person(1, resident_code=new), previous_resident_code=old),
        row(
            chiyoda,
            "X1",
            "2024-03-01",
            {"resident_code": new, "my_number": my_number(1)},
            cancels_municipality_code=CHIYODA,
            cancels_seq=2,
        ),
        row(chiyoda, "M3", "2024-04-01", person(1, given_name="一郎")),  # by the old code again
        row(chiyoda, "A4", "2024-05-01", person(3)),
        row(
            chiyoda,
            "M5",
            "2024-05-02",
            person(3, resident_code=new),  # the new code stays issued
            previous_resident_code=resident_code(3),
        ),
        row(chiyoda, "M2", "2024-06-01", person(1, resident_code=new)),  # no longer current
    ]
    got, current = ingest_story(tmp_path, [rows])
    assert _rules(got[0]) == {("batch1.csv", 6): "code-issued", ("batch1.csv", 7): "code-mismatch"}
    assert {k: v["version"] for k, v in current.items()} == {old: 4, resident_code(3): 1}
    assert current[old]["last_version"] == 4


def test_a_person_whose_every_version_is_cancelled_is_unknown_and_keeps_its_codes(
    tmp_path: Path,
) -> None:
    chiyoda = Municipality(CHIYODA)
    codes = {"resident_code": resident_code(1), "my_number": my_number(1)}
    rows = [
        row(chiyoda, "A1", "2024-01-01", person(1, birth_date="2024-01-01")),
        row(chiyoda, "X1", "2024-01-02", codes, cancels_municipality_code=CHIYODA, cancels_seq=1),
        row(chiyoda, "M2", "2024-01-03", person(1, surname="佐藤", surname_kana="サトウ")),
        row(chiyoda, "X1", "2024-01-04", codes, cancels_municipality_code=CHIYODA, cancels_seq=1),
        row(chiyoda, "A1", "2024-01-05", person(1, birth_date="2024-01-01")),
        row(chiyoda, "A3", "2024-01-05", person(1)),
    ]
    got, current = ingest_story(tmp_path, [rows])
    assert _rules(got[0]) == {
        ("batch1.csv", 3): "unknown-person",
        ("batch1.csv", 4): "unknown-person",
        ("batch1.csv", 5): "code-issued",
        ("batch1.csv", 6): "code-issued",
    }
    assert current == {}


def test_a_death_admits_only_x1_and_its_cancellation_revives_the_person(tmp_path: Path) -> None:
    chiyoda, shibuya = Municipality(CHIYODA), Municipality(SHIBUYA)
    codes = {"resident_code": resident_code(1), "my_number": my_number(1)}
    rows = [
        row(chiyoda, "A4", "2024-01-01", person(1)),
        row(chiyoda, "D3", "2024-02-01", person(1)),
        row(chiyoda, "A3", "2024-03-01", person(1)),
        row(chiyoda, "X1", "2024-03-02", codes, cancels_municipality_code=CHIYODA, cancels_seq=2),
        row(chiyoda, "D1", "2024-04-01", person(1)),
        row(shibuya, "A2", "2024-04-02", person(1, municipality_code=SHIBUYA)),
    ]
    got, current = ingest_story(tmp_path, [rows])
    assert _rules(got[0]) == {("batch1.csv", 3): "after-death"}
    person1 = current[resident_code(1)]
    assert (person1["status"], person1["municipality_code"], person1["version"]) == (1, SHIBUYA, 5)


def test_a_row_of_unknown_reason_without_names_is_missing_a_field(tmp_path: Path) -> None:
    """Choice left open by the SPEC: the implementation checks required fields first."""
    chiyoda = Municipality(CHIYODA)
    rows = [
        row(chiyoda, "A4", "2024-01-01", person(1)),
        row(
            chiyoda,
            "Z9",
            "2024-01-02",
            {"resident_code": resident_code(1), "my_number": my_number(1)},
        ),
        row(chiyoda, "Z9", "2024-01-02", person(1)),
    ]
    got, _ = ingest_story(tmp_path, [rows])
    assert _rules(got[0]) == {
        ("batch1.csv", 2): "missing-field",
        ("batch1.csv", 3): "unknown-reason",
    }


FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize("column", ["resident_code", "my_number", "municipality_code"])
def test_full_width_digits_in_a_code_are_a_code_format_reject(tmp_path: Path, column: str) -> None:
    """SPEC §2, §4: codes are ASCII digits. Full-width digits are digits to Unicode-aware
    regexes and to str.isdigit (and such a row was once applied with codes that parse to
    nothing, after which every ingest into the store failed)."""
    chiyoda = Municipality(CHIYODA)
    own_sequence = column == "municipality_code"  # (the odd row's is then a sequence of its own)
    odd = row(chiyoda, "A4", "2024-01-01", person(2), seq=1 if own_sequence else 2)
    odd[column] = odd[column].translate(FULL_WIDTH)
    first = [row(chiyoda, "A4", "2024-01-01", person(1), seq=1), odd]
    later = [row(chiyoda, "A4", "2024-01-02", person(3), seq=2 if own_sequence else 3)]
    got, _ = ingest_story(tmp_path, [first, later], calls=[1, 1])
    assert _rules(got[0]) == {("batch1.csv", 2): "code-format"}
    assert (got[0].applied, got[1].applied, got[1].rejected) == (1, 1, 0)

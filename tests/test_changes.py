"""`juki changes` (SPEC §5): per target with notifications in the window, the reasons (cancelled
ones and the X1 included), first/last change dates, the record as known at `until`, the previous
name and address as known at `since` — against the oracle, and in stories spelled out."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
from agency import NOW, load, requester, run_juki, write_request
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
from hypothesis import given
from read_oracle import History
from read_oracle import changes as oracle_changes
from stories import Story, ingest_at, ingest_story, property_settings, stories
from test_lookup import GRANTS, junk, story_codes

from engine.access import authorize
from engine.changes import changes
from engine.store import Store
from loaders.services import run_changes

SECOND = dt.timedelta(seconds=1)


@property_settings(10)
@given(story=stories(), data=st.data())
def test_changes_agree_with_the_oracle(story: Story, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        # bases compacted part-way (none, one or several): a history starts from the newest one
        # before the window (an older one kept on disk, unless vacuumed) and the chosen versions
        # are read from the bases when they hold them, else from the journal (fetch_rows)
        compacted = data.draw(st.sets(st.integers(1, len(story.batches)), max_size=3))
        vacuumed = data.draw(st.booleans())
        ingest_story(store, story, Path(tmp) / "files", compact_after=compacted, vacuum=vacuumed)
        load(store, Path(tmp))
        history = History(store)
        instants = sorted({*story.stamps, *(s - SECOND for s in story.stamps),
                           story.stamps[-1] + SECOND})  # fmt: skip
        for _ in range(3):
            agency, affair = data.draw(st.sampled_from(GRANTS))
            grant = authorize(store, agency=agency, affair=affair, function="changes",
                              columns=None, parameters={}, now=NOW)  # fmt: skip
            kind = data.draw(st.sampled_from(["my_number", "resident_code"]))
            codes = data.draw(st.lists(st.sampled_from(story_codes(story, kind) + junk(kind)),
                                       min_size=1, max_size=12))  # fmt: skip
            since, until = sorted(data.draw(st.lists(st.sampled_from(instants), min_size=2,
                                                     max_size=2, unique=True)))  # fmt: skip
            targets = pl.DataFrame({"request_row": range(1, len(codes) + 1), "code": codes},
                                   schema={"request_row": pl.Int64, "code": pl.String})  # fmt: skip
            got, provided = changes(store, targets, kind, grant, since=since, until=until)
            expected = oracle_changes(history, kind, codes, since=since, until=until,
                                      columns=list(grant.columns), prefecture=grant.prefecture,
                                      protected_access=grant.protected_access)  # fmt: skip
            context = (f"{agency}/{affair} {kind} ({since}, {until}] compacted after "
                       f"{sorted(compacted)}, vacuumed {vacuumed}\n{story.describe()}")  # fmt: skip
            assert got.to_dicts() == expected, context
            assert provided.height == len(expected), context


T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


@pytest.fixture()
def month(tmp_path: Path) -> Store:
    """Before the window: persons 1, 2 (protected), 3 (Sapporo). In the window (T0, T2]: person 1
    moves within Chiyoda then has the move cancelled and changes name; person 2 moves to Shibuya;
    person 4 is born; person 5 (Sapporo) changes name."""
    chiyoda, shibuya, sapporo = (Municipality(c) for c in (CHIYODA, SHIBUYA, SAPPORO))
    store = Store(tmp_path / "store")
    p3 = {"municipality_code": SAPPORO, "address": "北海道札幌市1"}
    before = [row(chiyoda, "A4", "2023-04-01", person(1)),
              row(chiyoda, "A4", "2023-04-01", person(2, protected="true")),
              row(sapporo, "A4", "2023-04-01", person(3, **p3)),
              row(sapporo, "A4", "2023-04-01", person(5, **p3))]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "a.csv", before), T0)
    codes1 = {"resident_code": resident_code(1), "my_number": my_number(1)}
    first = [
        row(chiyoda, "M1", "2024-01-10", person(1, address="東京都千代田区2")),
        row(chiyoda, "X1", "2024-01-15", codes1, cancels_municipality_code=CHIYODA, cancels_seq=3),
        row(chiyoda, "D1", "2024-01-20", person(2, protected="true")),
        row(chiyoda, "A1", "2024-01-05", person(4, birth_date="2024-01-05")),
        row(sapporo, "M2", "2024-01-07", person(5, **p3, surname="佐藤", surname_kana="サトウ")),
    ]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "b.csv", first), T1)
    second = [
        row(shibuya, "A2", "2024-01-21", person(2, protected="true", municipality_code=SHIBUYA,
                                                address="東京都渋谷区3")),
        row(chiyoda, "M2", "2023-12-28", person(1, surname="鈴木", surname_kana="スズキ")),
    ]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "c.csv", second), T2)
    load(store, tmp_path)
    return store


def run(store: Store, tmp_path: Path, codes: list[str], agency: str = "JPS",
        affair: str = "pension-change", **kw: object) -> pl.DataFrame:  # fmt: skip
    targets = write_request(tmp_path / "targets.csv", "my_number", codes)
    out = tmp_path / "changes.parquet"
    run_changes(store, targets, requester(agency, affair, out), since=T0, until=T2, **kw)  # type: ignore[arg-type]
    return pl.read_parquet(out)


def test_the_reasons_include_the_cancelled_move_and_the_x1(month: Store, tmp_path: Path) -> None:
    got = run(month, tmp_path, [my_number(3), my_number(1), my_number(9), my_number(1)])
    assert got["request_row"].to_list() == [2, 4]  # person 3 had no changes; 9 is unknown
    first = got.row(0, named=True)
    assert first["reasons"] == ["M1", "X1", "M2"]
    assert (first["first_change_date"], first["last_change_date"]) == (
        dt.date(2023, 12, 28), dt.date(2024, 1, 15))
    assert (first["surname"], first["address"]) == ("鈴木", "東京都千代田区千代田1-1")
    assert (first["previous_surname"], first["previous_address"]) == ("山田", "東京都千代田区千代田1-1")


def test_a_person_born_in_the_window_has_no_previous_values(month: Store, tmp_path: Path) -> None:
    got = run(month, tmp_path, [my_number(4)]).row(0, named=True)
    assert got["reasons"] == ["A1"]
    assert got["previous_surname"] is None and got["previous_municipality_code"] is None
    assert got["surname"] == "山田"


def test_a_protected_persons_previous_address_is_withheld_too(month: Store, tmp_path: Path) -> None:
    got = run(month, tmp_path, [my_number(2)]).row(0, named=True)
    assert got["reasons"] == ["D1", "A2"] and got["protected"] is True
    assert (got["address"], got["municipality_code"]) == (None, None)
    assert (got["previous_address"], got["previous_municipality_code"]) == (None, None)
    assert got["previous_surname"] == "山田"


def test_a_prefecture_scoped_agency_gets_only_its_residents(month: Store, tmp_path: Path) -> None:
    got = run(month, tmp_path, [my_number(5), my_number(4)], agency="TOKYO")
    assert got["request_row"].to_list() == [2]


def test_previous_columns_follow_the_columns_provided(month: Store, tmp_path: Path) -> None:
    targets = write_request(tmp_path / "targets.csv", "my_number", [my_number(5)])
    out = tmp_path / "changes.parquet"
    who = requester("JPS", "pension-change", out, columns=["surname", "status"])
    run_changes(month, targets, who, since=T0, until=T2)
    got = pl.read_parquet(out)
    assert got.columns == ["request_row", "surname", "status", "protected", "reasons",
                           "first_change_date", "last_change_date", "previous_surname"]  # fmt: skip
    assert got.row(0) == (1, "佐藤", 1, False, ["M2"], dt.date(2024, 1, 7), dt.date(2024, 1, 7), "山田")


def test_a_window_ending_before_a_batch_does_not_see_it(month: Store, tmp_path: Path) -> None:
    targets = write_request(tmp_path / "targets.csv", "my_number", [my_number(1), my_number(2)])
    out = tmp_path / "changes.parquet"
    run_changes(month, targets, requester("JPS", "pension-change", out), since=T0, until=T2 - SECOND)
    got = pl.read_parquet(out)
    assert got["reasons"].to_list() == [["M1", "X1"], ["D1"]]
    assert got["status"].to_list() == [1, 2]


def test_changes_through_the_cli_in_cp932_csv(month: Store, tmp_path: Path) -> None:
    write_request(tmp_path / "targets.csv", "my_number", [my_number(1)])
    result = run_juki("changes", "targets.csv", "--agency", "JPS", "--affair", "pension-change",
                      "--since", "2024-01-01T09:00:00", "--until", "2024-03-01T00:00:00Z",
                      "--format", "csv", "--encoding", "cp932", "--out", "c.csv",
                      "--store", "store", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "c.csv").read_bytes().decode("cp932").splitlines()
    assert text[1].split(",")[-8:] == ["false", "M1;X1;M2", "2023-12-28", "2024-01-15", "山田",
                                       "太郎1", "東京都千代田区千代田1-1", CHIYODA]  # fmt: skip


def _compacted_story(tmp_path: Path, first: list, second: list) -> Store:  # type: ignore[type-arg]
    from engine.derived import compact

    store = Store(tmp_path / "store")
    ingest_at(store, write_csv(tmp_path / "a.csv", first), T0)
    compact(store)  # the base reflects the batches before the window
    ingest_at(store, write_csv(tmp_path / "b.csv", second), T2)
    load(store, tmp_path)
    return store


def _run_after(store: Store, tmp_path: Path, code: str) -> dict[str, object]:
    targets = write_request(tmp_path / "targets.csv", "my_number", [code])
    out = tmp_path / "changes.parquet"
    run_changes(store, targets, requester("JPS", "pension-change", out), since=T1, until=T2)
    return pl.read_parquet(out).row(0, named=True)


def test_an_x1_cancelling_the_base_version_restores_the_one_before(tmp_path: Path) -> None:
    """The window's X1 cancels the version the compacted base holds: the record and the
    previous values come from the whole history, not from the base row."""
    chiyoda = Municipality(CHIYODA)
    first = [row(chiyoda, "A4", "2023-04-01", person(1)),
             row(chiyoda, "M1", "2023-06-01", person(1, address="東京都千代田区2"))]  # fmt: skip
    codes1 = {"resident_code": resident_code(1), "my_number": my_number(1)}
    second = [row(chiyoda, "X1", "2024-02-10", codes1, cancels_municipality_code=CHIYODA,
                  cancels_seq=2)]  # fmt: skip
    got = _run_after(_compacted_story(tmp_path, first, second), tmp_path, my_number(1))
    assert got["reasons"] == ["X1"]
    assert got["address"] == "東京都千代田区千代田1-1"  # the A4's, the move cancelled
    assert got["previous_address"] == "東京都千代田区2"  # as known before the window


def test_a_base_version_dated_after_since_is_not_the_previous_one(tmp_path: Path) -> None:
    """The base row is dated after the window's start: the previous values are the version in
    effect on that date, which only the history before the base holds."""
    chiyoda = Municipality(CHIYODA)
    first = [row(chiyoda, "A4", "2023-04-01", person(1)),
             row(chiyoda, "M2", "2024-02-20", person(1, surname="鈴木", surname_kana="スズキ"))]  # fmt: skip
    second = [row(chiyoda, "M1", "2024-02-25", person(1, surname="鈴木", surname_kana="スズキ",
                                                      address="東京都千代田区3"))]  # fmt: skip
    got = _run_after(_compacted_story(tmp_path, first, second), tmp_path, my_number(1))
    assert got["reasons"] == ["M1"]
    assert (got["surname"], got["address"]) == ("鈴木", "東京都千代田区3")
    assert got["previous_surname"] == "山田"  # on 2024-02-01 the M2 (dated 02-20) was not yet in effect

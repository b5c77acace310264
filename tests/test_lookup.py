"""`juki lookup` (SPEC §5): one row per request row in order, found/miss, retired codes, as-of
dates and bounds, protected persons, prefecture scope — against the oracle (read_oracle.py)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import polars as pl
import pyarrow.parquet as pq
import pytest
from agency import NOW, load, requester, write_request
from builders import (
    CHIYODA,
    SAPPORO,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)
from hypothesis import given
from read_oracle import History
from read_oracle import lookup as oracle_lookup
from stories import Story, ingest_at, ingest_story, property_settings, stories

import engine.lookup
from engine.access import authorize
from engine.lookup import lookup
from engine.resolve import known_batch
from engine.store import Store
from loaders.services import run_lookup

GRANTS = [("JPS", "pension-change"), ("TOKYO", "pension-change"), ("CITY", "dv-support"),
          ("TOKYO", "benefit")]  # fmt: skip
DAYS = st.dates(dt.date(2023, 5, 1), dt.date(2027, 8, 1))


def story_codes(story: Story, kind: str) -> list[str]:
    codes = {r[kind] for batch in story.batches for r in batch if r[kind]}
    if kind == "resident_code":
        codes |= {r["previous_resident_code"] for b in story.batches for r in b
                  if r["previous_resident_code"]}  # fmt: skip
    return sorted(codes)


def junk(kind: str) -> list[str | None]:
    good = my_number(999) if kind == "my_number" else resident_code(999)  # never issued
    return [good, good[:-1] + str((int(good[-1]) + 1) % 10), good[:-1], "x" * len(good), None]


def as_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


@property_settings(10)
@given(story=stories(), data=st.data())
def test_lookups_agree_with_the_oracle(story: Story, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        ingest_story(store, story, Path(tmp) / "files")
        load(store, Path(tmp))
        history = History(store)
        for _ in range(3):
            agency, affair = data.draw(st.sampled_from(GRANTS))
            grant = authorize(store, agency=agency, affair=affair, function="lookup",
                              columns=None, parameters={}, now=NOW)  # fmt: skip
            kind = data.draw(st.sampled_from(["my_number", "resident_code"]))
            pool = story_codes(story, kind) + junk(kind)
            codes = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=12))
            day = data.draw(DAYS)
            at = data.draw(st.sampled_from([None, *story.stamps,
                                            story.stamps[-1] - dt.timedelta(seconds=1)]))  # fmt: skip
            request = pl.DataFrame({"request_row": range(1, len(codes) + 1), "code": codes},
                                   schema={"request_row": pl.Int64, "code": pl.String})  # fmt: skip
            got, provided = lookup(store, request, kind, grant, date=day,
                                   upto_batch=known_batch(store, at))  # fmt: skip
            expected = oracle_lookup(history, kind, codes, day=day, at=at,
                                     columns=list(grant.columns), prefecture=grant.prefecture,
                                     protected_access=grant.protected_access)  # fmt: skip
            context = f"{agency}/{affair} {kind} D={day} T={at}\n{story.describe()}"
            assert as_rows(got) == expected, context
            # every found row is recorded under the resident code it showed (all these
            # affairs provide resident_code)
            found = [r["resident_code"] for r in expected if r["found"]]
            assert provided["resident_code"].to_list() == found, context


@pytest.fixture()
def two_persons(tmp_path: Path) -> Store:
    """Person 1 in Chiyoda (Tokyo), protected; person 2 in Sapporo who changed resident code."""
    chiyoda, sapporo = Municipality(CHIYODA), Municipality(SAPPORO)
    rows = [
        row(chiyoda, "A4", "2024-01-01", person(1, protected="true")),
        row(sapporo, "A4", "2024-01-01", person(2, municipality_code=SAPPORO,
                                                address="北海道札幌市中央区1")),
        row(sapporo, "M5", "2024-03-01", person(2, municipality_code=SAPPORO, resident_code=resident_code(20),
                                                address="北海道札幌市中央区1"),
            previous_resident_code=resident_code(2)),
    ]  # fmt: skip
    store = Store(tmp_path / "store")
    ingest_at(store, write_csv(tmp_path / "a.csv", rows), dt.datetime(2024, 3, 2, tzinfo=dt.UTC))
    load(store, tmp_path)
    return store


@pytest.mark.parametrize("part_rows", [None, 1, 3], ids=["one-part", "parts-of-1", "parts-of-3"])
def test_a_retired_code_finds_its_person_and_the_answer_keeps_request_order(
    two_persons: Store, tmp_path: Path, part_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if part_rows is not None:  # the answer assembled and written in parts of request rows
        monkeypatch.setattr(engine.lookup, "PART_ROWS", part_rows)
    request = write_request(tmp_path / "req.csv", "resident_code",
                            [resident_code(2), "123", resident_code(1), resident_code(2)])  # fmt: skip
    out = tmp_path / "out" / "answer.parquet"
    summary = run_lookup(two_persons, request, requester("JPS", "pension-change", out),
                         as_of=dt.date(2024, 6, 1))  # fmt: skip
    got = pl.read_parquet(out)
    assert got["request_row"].to_list() == [1, 2, 3, 4]
    assert got["found"].to_list() == [True, False, True, True]
    assert got["miss"].to_list() == [None, "malformed", None, None]
    assert got["resident_code"].to_list() == [resident_code(20), None, resident_code(1),
                                              resident_code(20)]  # fmt: skip
    assert summary.recorded == 3


def test_before_its_code_change_the_person_shows_the_old_code(two_persons: Store, tmp_path: Path) -> None:
    request = write_request(tmp_path / "req.csv", "resident_code", [resident_code(20)])
    out = tmp_path / "answer.parquet"
    run_lookup(two_persons, request, requester("JPS", "pension-change", out), as_of=dt.date(2024, 2, 1))
    assert pl.read_parquet(out)["resident_code"].to_list() == [resident_code(2)]


def test_before_registration_there_is_no_version_on_the_date(two_persons: Store, tmp_path: Path) -> None:
    request = write_request(tmp_path / "req.csv", "my_number", [my_number(1)])
    out = tmp_path / "answer.parquet"
    summary = run_lookup(two_persons, request, requester("JPS", "pension-change", out),
                         as_of=dt.date(2023, 12, 31))  # fmt: skip
    got = pl.read_parquet(out)
    assert (got["found"][0], got["miss"][0], summary.recorded) == (False, "no version on date", 0)


def test_protected_persons_address_is_withheld_unless_the_affair_has_protected_access(
    two_persons: Store, tmp_path: Path
) -> None:
    request = write_request(tmp_path / "req.csv", "my_number", [my_number(1)])
    plain, dv = tmp_path / "plain.parquet", tmp_path / "dv.parquet"
    run_lookup(two_persons, request, requester("JPS", "pension-change", plain), as_of=dt.date(2024, 6, 1))
    run_lookup(two_persons, request, requester("CITY", "dv-support", dv), as_of=dt.date(2024, 6, 1))
    hidden, seen = pl.read_parquet(plain).row(0, named=True), pl.read_parquet(dv).row(0, named=True)
    assert (hidden["address"], hidden["municipality_code"], hidden["protected"]) == (None, None, True)
    assert hidden["surname"] == "山田"
    assert (seen["address"], seen["municipality_code"], seen["prefecture_code"]) == (
        "東京都千代田区千代田1-1", CHIYODA, "13")


def test_a_prefecture_scoped_agency_sees_only_its_prefecture(two_persons: Store, tmp_path: Path) -> None:
    request = write_request(tmp_path / "req.csv", "my_number", [my_number(2), my_number(1)])
    out = tmp_path / "answer.parquet"
    summary = run_lookup(two_persons, request, requester("TOKYO", "pension-change", out),
                         as_of=dt.date(2024, 6, 1))  # fmt: skip
    got = pl.read_parquet(out)
    assert got["found"].to_list() == [False, True]
    assert got["miss"].to_list() == ["out of scope", None]
    assert got["surname"].to_list() == [None, "山田"]
    assert summary.recorded == 1


def test_my_number_wins_when_both_columns_are_present(two_persons: Store, tmp_path: Path) -> None:
    request = tmp_path / "req.csv"
    pl.DataFrame({"resident_code": [resident_code(1)], "my_number": [my_number(2)]}).write_csv(request)
    out = tmp_path / "answer.parquet"
    run_lookup(two_persons, request, requester("JPS", "pension-change", out), as_of=dt.date(2024, 6, 1))
    assert pl.read_parquet(out)["my_number"].to_list() == [my_number(2)]


def test_the_output_has_the_spec_columns_in_order_and_arrow_types(
    two_persons: Store, tmp_path: Path
) -> None:
    request = write_request(tmp_path / "req.csv", "my_number", [my_number(1)])
    out = tmp_path / "answer.parquet"
    columns = ["status", "birth_date", "surname", "prefecture_code"]  # any order asked
    run_lookup(two_persons, request, requester("TOKYO", "benefit", out, columns=columns),
               as_of=dt.date(2024, 6, 1))  # fmt: skip
    schema = pq.read_schema(out)
    assert schema.names == ["request_row", "found", "miss", "surname", "birth_date",
                            "prefecture_code", "status", "protected"]  # fmt: skip
    types = {f.name: str(f.type) for f in schema}
    assert types == {"request_row": "int64", "found": "bool", "miss": "string",
                     "surname": "string", "birth_date": "date32[day]", "prefecture_code": "string",
                     "status": "int8", "protected": "bool"}  # fmt: skip


@given(asked=st.lists(st.one_of(st.none(), st.integers(0, 30)), max_size=40),
       held=st.sets(st.integers(0, 30), max_size=25), data=st.data())  # fmt: skip
def test_versions_are_put_beside_their_requests_as_a_left_join_would(
    asked: list[int | None], held: set[int], data: st.DataObject
) -> None:
    from engine.lookup import _version_of

    persons = data.draw(st.permutations(sorted(held)))
    requests = pl.DataFrame({"request_row": range(len(asked)), "person": asked},
                            schema={"request_row": pl.Int64, "person": pl.Int64})  # fmt: skip
    versions = pl.DataFrame({"person": persons, "name": [f"n{p}" for p in persons]},
                            schema={"person": pl.Int64, "name": pl.String})  # fmt: skip
    expected = requests.join(versions, on="person", how="left", maintain_order="left")
    beside = versions.drop("person").select(pl.all().gather(_version_of(requests, versions)))
    assert pl.concat([requests, beside], how="horizontal").equals(expected)

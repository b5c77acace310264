"""`juki extract base-date|region-age|milestone` (SPEC §5): against the Python oracle on drawn
stories, against plain DuckDB SQL over the journal on a generated store, and `--known-at`
reproducing an earlier extract byte for byte."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import hypothesis.strategies as st
import polars as pl
import pytest
from agency import NOW, load, requester, run_juki
from builders import CHIYODA, SAPPORO, Municipality, person, resident_code, row, write_csv
from deltalake import DeltaTable
from hypothesis import given
from read_oracle import History, age_on
from read_oracle import extract as oracle_extract
from stories import NAHA, Story, ingest_at, ingest_story, property_settings, stories
from synthetic_store import synthetic_store

from engine import extract, slices
from engine.access import authorize
from engine.errors import UsageError
from engine.history import person_slices
from engine.resolve import known_batch
from engine.store import Store
from loaders.services import run_base_date, run_region_age

GRANTS = [("CITY", "benefit"), ("TOKYO", "benefit"), ("CITY", "dv-support")]
DAYS = st.dates(dt.date(2023, 5, 1), dt.date(2027, 8, 1))
REGIONS = st.sampled_from([extract.Region(), extract.Region(("13",)), extract.Region((), (NAHA,)),
                           extract.Region(("01",), (CHIYODA,))])  # fmt: skip


@property_settings(10)
@given(story=stories(), data=st.data())
def test_extracts_agree_with_the_oracle(story: Story, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        # bases compacted part-way (none, one or several): reads start from one of them and the
        # rows since (engine/slices.py), an older one for a date before the newest (unless
        # its files were vacuumed)
        compacted = data.draw(st.sets(st.integers(1, len(story.batches)), max_size=3))
        vacuumed = data.draw(st.booleans())
        ingest_story(store, story, Path(tmp) / "files", compact_after=compacted, vacuum=vacuumed)
        load(store, Path(tmp))
        history = History(store)
        for _ in range(3):
            agency, affair = data.draw(st.sampled_from(GRANTS))
            grant = authorize(store, agency=agency, affair=affair, function="extract",
                              columns=None, parameters={}, now=NOW)  # fmt: skip
            day, region = data.draw(DAYS), data.draw(REGIONS)
            at = data.draw(st.sampled_from([None, *story.stamps]))
            upto = known_batch(store, at)
            kind = data.draw(st.sampled_from(["base-date", "region-age", "milestone"]))
            # the extract streams by slices of person keys: any slicing gives the same rows;
            # persons to read from the journal are read once, or slice by slice past a limit
            sliced = data.draw(st.sampled_from([None, 1, 2, 5]))
            limit = data.draw(st.sampled_from([slices.GLOBAL_CORRECTIONS, 0]))
            common: dict[str, Any] = {
                "day": day, "at": at, "columns": list(grant.columns),
                "prefecture": grant.prefecture, "protected_access": grant.protected_access,
                "prefectures": region.prefectures, "municipalities": region.municipalities}  # fmt: skip
            slices.GLOBAL_CORRECTIONS, saved = limit, slices.GLOBAL_CORRECTIONS
            if kind == "base-date":
                got, provided = extract.base_date(store, grant, date=day, upto_batch=upto,
                                                  region=region, slice_persons=sliced)  # fmt: skip
                expected = oracle_extract(history, **common)
            elif kind == "region-age":
                low = data.draw(st.integers(0, 90))
                high = low + data.draw(st.integers(0, 40))
                got, provided = extract.region_age(store, grant, date=day, min_age=low,
                                                   max_age=high, upto_batch=upto, region=region,
                                                   slice_persons=sliced)  # fmt: skip
                expected = oracle_extract(history, **common, ages=(low, high))
            else:
                first = day.replace(day=1)
                last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
                ages = tuple(sorted(set(data.draw(st.lists(st.integers(0, 90), min_size=1,
                                                           max_size=4)))))  # fmt: skip
                got, provided = extract.milestone(store, grant, first=first, last=last,
                                                  ages=list(ages), upto_batch=upto, region=region,
                                                  slice_persons=sliced)  # fmt: skip
                expected = oracle_extract(history, **common, month=(first, last),
                                          milestones=ages)  # fmt: skip
            slices.GLOBAL_CORRECTIONS = saved
            context = (f"{kind} {agency}/{affair} D={day} T={at} {region} slices of {sliced}, "
                       f"compacted after batches {sorted(compacted)}, vacuumed {vacuumed}\n"
                       f"{story.describe()}")  # fmt: skip
            assert provided["resident_code"].to_list() == got["resident_code"].to_list(), context
            assert got.sort("resident_code").to_dicts() == expected, context


# -- a generated store, and DuckDB SQL written from SPEC §1 ------------------------------------------
SQL_REGISTERED = """
WITH h AS (
    SELECT * FROM journal
    WHERE outcome IN ('applied', 'released') AND ($bound IS NULL OR recorded_at <= $bound)
), cancelled AS (
    SELECT cancels_municipality_code AS mc, cancels_seq AS seq FROM h WHERE reason = 'X1'
), effective AS (
    SELECT h.*, row_number() OVER (PARTITION BY person ORDER BY recorded_at DESC,
                                   apply_order DESC) AS newest
    FROM h
    WHERE reason <> 'X1' AND change_date <= $day
      AND NOT EXISTS (SELECT 1 FROM cancelled c WHERE c.mc = h.municipality_code
                      AND c.seq = h.seq)
)
SELECT * FROM effective WHERE newest = 1 AND status = 1
"""


def sql_registered(store: Store, day: dt.date, bound: dt.datetime | None = None) -> pl.DataFrame:
    con = duckdb.connect()
    con.register("journal", DeltaTable(str(store.table_path("journal"))).to_pyarrow_table())
    frame = pl.from_arrow(con.sql(SQL_REGISTERED, params={"day": day, "bound": bound}).to_arrow_table())
    con.close()
    assert isinstance(frame, pl.DataFrame)
    return frame


@pytest.mark.parametrize("day", ["2024-01-01", "2024-01-31", "2024-02-15", "2024-03-31"])
def test_base_date_agrees_with_duckdb_sql_on_a_generated_store(day: str, tmp_path: Path) -> None:
    store = synthetic_store()
    d = dt.date.fromisoformat(day)
    out = tmp_path / "base.parquet"
    summary = run_base_date(store, requester("CITY", "benefit", out), date=d)
    got = pl.read_parquet(out)
    expected = sql_registered(store, d)
    assert sorted(got["resident_code"].to_list()) == sorted(expected["resident_code"].to_list())
    assert summary.recorded == got.height > 1000
    joined = got.join(expected, on="resident_code", suffix="_sql")
    for c in ("surname", "municipality_code", "address", "my_number", "birth_date"):
        shown = joined.filter(~pl.col("protected"))
        assert shown[c].to_list() == shown[f"{c}_sql"].to_list(), c


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_streamed_extract_is_the_same_extract_in_slices(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """National extracts stream slice by slice: the file holds the same rows, its manifest the
    file's hash, and every row has its record, committed once for the request."""
    from loaders.outputs import OutputOptions
    from loaders.services import Requester

    store = synthetic_store()
    d = dt.date(2024, 2, 1)

    def run(name: str) -> tuple[pl.DataFrame, Any]:
        out = tmp_path / f"{name}.{fmt}"
        who = Requester("CITY", "benefit", OutputOptions(out, fmt))  # type: ignore[arg-type]
        summary = run_base_date(store, who, date=d)
        manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        assert manifest["rows"] == summary.rows == summary.recorded
        frame = pl.read_parquet(out) if fmt == "parquet" else pl.read_csv(
            out, infer_schema=False)  # fmt: skip
        return frame, summary

    whole, _ = run("whole")
    monkeypatch.setattr(extract, "SLICE_PERSONS", 97)
    sliced, summary = run("sliced")
    assert len(person_slices(store, 97)) > 10
    assert sliced.sort("resident_code").equals(whole.sort("resident_code"))
    assert sliced.height > 1000
    table = DeltaTable(str(store.table_path("provisions")))
    records = pl.from_arrow(table.to_pyarrow_table()).filter(
        pl.col("request_id") == summary.request_id)  # fmt: skip
    assert isinstance(records, pl.DataFrame)
    assert sorted(records["resident_code"].to_list()) == sorted(whole["resident_code"].to_list())
    last = table.history(1)[0]
    assert last["operationMetrics"]["num_added_rows"] == sliced.height  # one commit
    mine = f"request_id = '{summary.request_id}'"
    for code in whole["resident_code"].sample(5, seed=1).to_list():  # found by bucket and stats
        files = table.file_uris(file_pruning_predicate=f"bucket = {int(code) % 256} AND {mine} "
                                f"AND resident_code = '{code}'")  # fmt: skip
        assert len(files) == 1, code
    # the files carry resident_code statistics: a code below every file's minimum prunes all
    assert table.file_uris(file_pruning_predicate=f"{mine} AND resident_code = '0'") == []


def test_region_age_agrees_with_duckdb_sql_on_a_generated_store(tmp_path: Path) -> None:
    store = synthetic_store()
    d = dt.date(2024, 2, 20)
    out = tmp_path / "band.parquet"
    region = extract.Region(("13", "27"))
    run_region_age(store, requester("CITY", "benefit", out), date=d, min_age=20,
                max_age=39, region=region)  # fmt: skip
    got = pl.read_parquet(out)
    registered = sql_registered(store, d).filter(pl.col("prefecture_code").is_in(["13", "27"]))
    band = registered.filter(
        pl.struct("birth_date").map_elements(lambda s: 20 <= age_on(s["birth_date"], d) <= 39,
                                             return_dtype=pl.Boolean))  # fmt: skip
    assert sorted(got["resident_code"].to_list()) == sorted(band["resident_code"].to_list())
    assert got.height > 50
    assert got.columns[-2:] == ["protected", "age"]


def test_known_at_reproduces_an_earlier_extract_byte_for_byte(tmp_path: Path) -> None:
    chiyoda, sapporo = Municipality(CHIYODA), Municipality(SAPPORO)
    store = Store(tmp_path / "store")
    t1, t2 = dt.datetime(2024, 2, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    first = [row(chiyoda, "A4", "2024-01-01", person(i)) for i in range(1, 6)]
    ingest_at(store, write_csv(tmp_path / "a.csv", first), t1)
    load(store, tmp_path)
    day = dt.date(2024, 1, 20)
    early = tmp_path / "early.parquet"
    run_base_date(store, requester("CITY", "benefit", early), date=day)
    # later notifications: a late correction back-dated before D, a death, a new person
    later = [row(chiyoda, "M3", "2024-01-10", person(2, given_name="訂正")),
             row(chiyoda, "D3", "2024-01-15", person(3)),
             row(sapporo, "A4", "2024-01-01", person(9, municipality_code=SAPPORO,
                                                     address="北海道札幌市"))]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "b.csv", later), t2)
    now = tmp_path / "now.parquet"
    run_base_date(store, requester("CITY", "benefit", now), date=day)
    again = tmp_path / "again.parquet"
    run_base_date(store, requester("CITY", "benefit", again), date=day,
                known_at=t1)  # fmt: skip
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (early, now, again)]
    assert digest[0] == digest[2] != digest[1]
    assert pl.read_parquet(now).height == 5  # one dead, one new


def test_through_the_cli_with_known_at_in_japan_time(tmp_path: Path) -> None:
    chiyoda = Municipality(CHIYODA)
    store = Store(tmp_path / "store")
    ingest_at(store, write_csv(tmp_path / "a.csv", [row(chiyoda, "A4", "2024-01-01", person(1))]),
              dt.datetime(2024, 2, 1, tzinfo=dt.UTC))  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "b.csv", [row(chiyoda, "A4", "2024-01-01", person(2))]),
              dt.datetime(2024, 3, 1, tzinfo=dt.UTC))  # fmt: skip
    load(store, tmp_path)
    args = ["extract", "base-date", "--date", "2024-01-02", "--agency", "CITY", "--affair",
            "benefit", "--store", "store"]  # fmt: skip
    bounded = run_juki(*args, "--known-at", "2024-02-01T09:00:00", "--out", "a.parquet", cwd=tmp_path)
    before = run_juki(*args, "--known-at", "2024-02-01T08:59:59", "--out", "b.parquet", cwd=tmp_path)
    assert bounded.returncode == before.returncode == 0, bounded.stderr + before.stderr
    assert pl.read_parquet(tmp_path / "a.parquet").height == 1
    assert pl.read_parquet(tmp_path / "b.parquet").height == 0
    assert "1 rows (1 provision records)" in bounded.stderr


def test_milestones_follow_the_spec_examples(tmp_path: Path) -> None:
    chiyoda = Municipality(CHIYODA)
    store = Store(tmp_path / "store")
    births = ["2006-12-01", "2004-02-29", "2005-02-28", "2005-03-01", "1992-11-15"]
    rows = [row(chiyoda, "A4", "2020-01-01", person(i, birth_date=b)) for i, b in enumerate(births)]
    ingest_at(store, write_csv(tmp_path / "a.csv", rows), dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    load(store, tmp_path)
    grant = authorize(store, agency="CITY", affair="benefit", function="extract", columns=None,
                      parameters={}, now=NOW)  # fmt: skip

    def reached(first: str, last: str) -> set[tuple[str, int, dt.date]]:
        got, _ = extract.milestone(store, grant, first=dt.date.fromisoformat(first),
                                   last=dt.date.fromisoformat(last), ages=[20, 21, 34])  # fmt: skip
        return {(str(r["birth_date"]), r["age"], r["reached_on"]) for r in got.to_dicts()}

    assert reached("2026-11-01", "2026-11-30") == {
        ("2006-12-01", 20, dt.date(2026, 11, 30)), ("1992-11-15", 34, dt.date(2026, 11, 14))}
    assert reached("2024-02-01", "2024-02-29") == {("2004-02-29", 20, dt.date(2024, 2, 28))}
    assert reached("2025-02-01", "2025-02-28") == {
        ("2004-02-29", 21, dt.date(2025, 2, 28)), ("2005-02-28", 20, dt.date(2025, 2, 27)),
        ("2005-03-01", 20, dt.date(2025, 2, 28))}  # fmt: skip
    assert reached("2025-03-01", "2025-03-31") == set()


@pytest.mark.parametrize(
    ("region", "message"),
    [(extract.Region(("48",)), "--prefecture '48'"),
     (extract.Region((), ("131017",)), "--municipality '131017'")],
)  # fmt: skip
def test_a_bad_region_is_a_usage_error(region: extract.Region, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        region.check()


@given(head=st.lists(st.integers(0, 50), max_size=30), tail=st.lists(st.integers(0, 50),
                                                                       max_size=10))  # fmt: skip
def test_person_order_sorts_a_sorted_head_and_any_tail(head: list[int], tail: list[int]) -> None:
    persons = sorted(head) + tail
    frame = pl.DataFrame({"person": persons, "row": list(range(len(persons)))},
                         schema={"person": pl.Int64, "row": pl.Int64})  # fmt: skip
    got = extract.in_person_order(frame)
    assert got["person"].to_list() == sorted(persons)
    assert sorted(got.rows()) == sorted(frame.rows())


@given(day=st.dates(dt.date(1900, 3, 1), dt.date(2100, 12, 31)), back=st.integers(0, 130 * 366),
       below=st.integers(0, 5), above=st.integers(0, 5))  # fmt: skip
def test_the_birth_window_holds_everyone_of_the_age_band(
    day: dt.date, back: int, below: int, above: int
) -> None:
    """The region/age extract drops rows early by a window of birth dates: it must hold every
    birth date whose age on the day (the oracle's, SPEC Age) is in the band."""
    born = day - dt.timedelta(days=back)
    age = age_on(born, day)
    low, high = max(age - below, 0), age + above
    earliest, latest = extract._births_within(day, low, high)
    assert earliest <= born <= latest
    if below == above == 0:  # the window is tight: a year's births, give or take days
        assert (latest - earliest).days <= 366 + 7


def test_a_date_before_the_newest_base_starts_from_an_older_base(tmp_path: Path) -> None:
    """Compacted after each month, read for a day of the last month: the newest base holds rows
    dated after the day, so the read starts from the base compacted before that month (its files
    left on disk) and the rows since; with the older files vacuumed, from the journal. Both
    agree with plain SQL over the journal."""
    from engine.derived import compact
    from loaders.demo import month_of
    from loaders.ingest import ingest_files
    from loaders.synthetic import generate

    summary = generate(tmp_path / "files", residents=800, months=2, seed=7)
    store = Store(tmp_path / "store")
    by_month: dict[str, list[str]] = {}
    for f in sorted(summary.files):
        by_month.setdefault(month_of(str(f))[:7], []).append(str(f))
    for month in sorted(by_month):
        assert ingest_files(store, by_month[month]).total("rejected") == 0
        compact(store)
    load(store, tmp_path)
    day = dt.date(2024, 2, 14)
    grant = authorize(store, agency="CITY", affair="benefit", function="extract", columns=None,
                      parameters={}, now=NOW)  # fmt: skip
    newest = next(slices.generations(store))
    assert newest.version == 3  # created, then three compactions (initial, Jan, Feb)
    picked = slices.pick_generation(store, upto_batch=None, date=day)
    assert picked.version == 2 and picked.latest() <= day < newest.latest()  # type: ignore[operator]
    expected = sorted(sql_registered(store, day)["resident_code"].to_list())
    got, _ = extract.base_date(store, grant, date=day)
    assert sorted(got["resident_code"].to_list()) == expected
    assert len(expected) > 700
    newest.table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    assert slices.pick_generation(store, upto_batch=None, date=day).batch == newest.batch
    again, _ = extract.base_date(store, grant, date=day)
    assert again.equals(got)


@pytest.mark.parametrize("corrections", [slices.GLOBAL_CORRECTIONS, 0])
@pytest.mark.parametrize("compacted_again", [False, True])
def test_an_x1_since_the_base_cancels_a_base_row(
    corrections: int, compacted_again: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compacted base holds person 1's move (M1) and person 2's rename (M2). After the
    compaction an X1 cancels the move, then both persons are renamed: their current rows are
    dated after the days asked, so the base rows would serve, but person 1's is cancelled. On
    any day the move reads as if it had never arrived (SPEC §3), unless known at a time before
    the X1. Compacted again, a day before the renames starts from the first base (its files
    still on disk) and reads the same."""
    from engine.derived import compact

    monkeypatch.setattr(slices, "GLOBAL_CORRECTIONS", corrections)
    chi = Municipality(CHIYODA)
    store = Store(tmp_path / "store")
    t1, t2 = dt.datetime(2024, 2, 10, tzinfo=dt.UTC), dt.datetime(2024, 3, 10, tzinfo=dt.UTC)
    first = [row(chi, "A4", "2024-01-01", person(i)) for i in range(1, 4)]  # (seq in order)
    moved_to = "東京都千代田区永田町1"
    moved = row(chi, "M1", "2024-02-01", person(1, address=moved_to))
    first += [moved, row(chi, "M2", "2024-02-02", person(2, surname="佐藤", surname_kana="サトウ"))]
    ingest_at(store, write_csv(tmp_path / "a.csv", first), t1)
    compact(store)
    x1 = row(chi, "X1", "2024-03-01", {"resident_code": resident_code(1),
                                       "my_number": person(1)["my_number"]},
             cancels_municipality_code=CHIYODA, cancels_seq=moved["seq"])  # fmt: skip
    renamed = [row(chi, "M2", "2024-03-05", person(n, surname="鈴木", surname_kana="スズキ"))
               for n in (1, 2)]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "b.csv", [x1, *renamed]), t2)
    outcomes = pl.read_delta(str(store.table_path("journal")))["outcome"].value_counts()
    assert dict(outcomes.iter_rows()) == {"applied": 8, "file": 2}
    if compacted_again:
        compact(store)
        picked = slices.pick_generation(store, upto_batch=None, date=dt.date(2024, 2, 15))
        assert picked.batch == 1 < store.reflected_batch("current_base")
    load(store, tmp_path)
    grant = authorize(store, agency="CITY", affair="benefit", function="extract", columns=None,
                      parameters={}, now=NOW)  # fmt: skip

    def on(day: str, at: dt.datetime | None = None) -> dict[str, tuple[str, str]]:
        got, _ = extract.base_date(store, grant, date=dt.date.fromisoformat(day),
                                   upto_batch=known_batch(store, at))  # fmt: skip
        return {r["resident_code"]: (r["address"], r["surname"]) for r in got.iter_rows(named=True)}

    home = person(1)["address"]
    assert on("2024-02-15")[resident_code(1)] == (home, "山田")  # not the cancelled move
    assert on("2024-03-02")[resident_code(1)] == (home, "山田")
    assert on("2024-04-01")[resident_code(1)] == (home, "鈴木")
    assert on("2024-02-15")[resident_code(2)] == (home, "佐藤")  # the base row serves
    assert on("2024-02-15", t1 + dt.timedelta(days=1))[resident_code(1)] == (moved_to, "山田")
    history = History(store)
    for day in ("2024-01-15", "2024-02-15", "2024-03-02", "2024-04-01"):
        expected = oracle_extract(history, day=dt.date.fromisoformat(day), at=None,
                                  columns=list(grant.columns), prefecture=grant.prefecture,
                                  protected_access=grant.protected_access)  # fmt: skip
        got, _ = extract.base_date(store, grant, date=dt.date.fromisoformat(day))
        assert got.sort("resident_code").to_dicts() == expected, day


@given(st.sets(st.integers(0, 10_000), max_size=300), st.data())
def test_the_few_rows_are_put_in_place_by_person(persons: set[int], data: st.DataObject) -> None:
    """`_in_order` gives the slice's base rows and the few others in person order, every row
    once, whatever the split (the output's order, on which byte-identical reruns rest)."""
    everyone = sorted(persons)
    few = data.draw(st.sets(st.sampled_from(everyone), max_size=len(everyone))) if everyone else set()
    frame = pl.DataFrame({"person": everyone, "surname": [f"名{p}" for p in everyone]},
                         schema={"person": pl.Int64, "surname": pl.String})  # fmt: skip
    base = frame.filter(~pl.col("person").is_in(list(few)))
    others = frame.filter(pl.col("person").is_in(list(few))).reverse()
    halves = [others.head(others.height // 2), others.tail(others.height - others.height // 2)]
    assert slices._in_order(base, halves, ordered=True).equals(frame)
    unordered = slices._in_order(base, halves, ordered=False)
    assert unordered.sort("person").equals(frame)
    # the base as read: a row for everyone (stale for the few), and some persons dropped
    # (no version on the date); `keep` leaves out the few's and the dropped persons' rows
    gone = data.draw(st.sets(st.sampled_from(everyone), max_size=3)) - few if everyone else set()
    read = frame.with_columns(pl.when(pl.col("person").is_in(list(few))).then(pl.lit("古"))
                              .otherwise(pl.col("surname")).alias("surname"))  # fmt: skip
    keep = ~pl.col("person").is_in(list(few | gone))
    expected = frame.filter(~pl.col("person").is_in(list(gone)))
    assert slices._in_order(read, halves, ordered=True, keep=keep).equals(expected)
    unordered = slices._in_order(read, halves, ordered=False, keep=keep)
    assert unordered.sort("person").equals(expected)

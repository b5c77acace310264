"""`juki stats` (SPEC §5): counts of persons registered on a date per group, sorted; no
provision recorded; a population pyramid picture."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections import Counter
from pathlib import Path

import duckdb
import hypothesis.strategies as st
import polars as pl
import pytest
from agency import NOW, load, requester, run_juki
from deltalake import DeltaTable
from hypothesis import given
from read_oracle import History, age5, age_on, registered
from stories import Story, ingest_story, property_settings, stories
from synthetic_store import synthetic_store
from test_extract import SQL_REGISTERED

from engine.access import authorize
from engine.errors import UsageError
from engine.resolve import known_batch
from engine.stats import counts, parse_by
from engine.store import Store
from loaders.services import run_stats

GROUP_ORDER = ["prefecture_code", "municipality_code", "age5", "sex"]
BANDS = [f"{5 * i}-{5 * i + 4}" for i in range(20)] + ["100+"]


def oracle_counts(history: History, day: dt.date, at: dt.datetime | None, by: list[str],
                  prefecture: str | None) -> list[dict[str, object]]:  # fmt: skip
    tally: Counter[tuple[object, ...]] = Counter()
    for v in registered(history, day, at):
        if prefecture is not None and v["prefecture_code"] != prefecture:
            continue
        values = {"prefecture_code": v["prefecture_code"], "municipality_code":
                  v["municipality_code"], "age5": age5(age_on(v["birth_date"], day)),
                  "sex": v["sex"]}  # fmt: skip
        tally[tuple(values[c] for c in by)] += 1

    def order(key: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(BANDS.index(k) if c == "age5" else k for c, k in zip(by, key, strict=True))

    if not by:
        return [{"count": sum(tally.values())}]
    return [{**dict(zip(by, k, strict=True)), "count": tally[k]} for k in sorted(tally, key=order)]


@property_settings(10)
@given(story=stories(), data=st.data())
def test_counts_agree_with_the_oracle(story: Story, data: st.DataObject) -> None:
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
            agency = data.draw(st.sampled_from(["JPS", "TOKYO"]))
            grant = authorize(store, agency=agency, affair="statistics", function="stats",
                              columns=None, parameters={}, now=NOW)  # fmt: skip
            by = [c for c in GROUP_ORDER if data.draw(st.booleans())]
            day = data.draw(st.dates(dt.date(2023, 5, 1), dt.date(2027, 8, 1)))
            at = data.draw(st.sampled_from([None, *story.stamps]))
            sliced = data.draw(st.sampled_from([None, 1, 3]))  # counted by slices of persons
            got = counts(store, grant, date=day, by=by, upto_batch=known_batch(store, at),
                         slice_persons=sliced)  # fmt: skip
            assert got.to_dicts() == oracle_counts(history, day, at, by, grant.prefecture), (
                f"{agency} {by} D={day} T={at} compacted after {sorted(compacted)}, "
                f"vacuumed {vacuumed}\n"
                f"{story.describe()}")  # fmt: skip


def test_counts_by_prefecture_and_sex_agree_with_duckdb_sql(tmp_path: Path) -> None:
    store = synthetic_store()
    day = dt.date(2024, 2, 29)
    summary = run_stats(store, requester("JPS", "statistics", tmp_path / "s.parquet"), date=day,
                        by=["prefecture_code", "sex"])  # fmt: skip
    got = pl.read_parquet(tmp_path / "s.parquet")
    con = duckdb.connect()
    con.register("journal", DeltaTable(str(store.table_path("journal"))).to_pyarrow_table())
    expected = con.sql(f"SELECT prefecture_code, sex, count(*) AS count FROM ({SQL_REGISTERED}) "
                       "GROUP BY ALL ORDER BY ALL", params={"day": day, "bound": None}).fetchall()  # fmt: skip
    con.close()
    assert got.rows() == expected
    assert summary.recorded == 0 and got.columns == ["prefecture_code", "sex", "count"]
    assert sum(r[2] for r in expected) > 1000


def test_age_bands_sort_by_age_and_the_oldest_band_is_open(tmp_path: Path) -> None:
    store = synthetic_store()
    grant = authorize(store, agency="JPS", affair="statistics", function="stats", columns=None,
                      parameters={}, now=NOW)  # fmt: skip
    got = counts(store, grant, date=dt.date(2024, 2, 1), by=["age5"])
    labels = got["age5"].to_list()
    assert labels == sorted(labels, key=BANDS.index)
    assert labels[:3] == ["0-4", "5-9", "10-14"] and set(labels) <= set(BANDS)


def test_stats_through_the_cli_prints_a_table_draws_a_pyramid_records_no_provision(
    tmp_path: Path,
) -> None:
    store = synthetic_store()
    args = ["stats", "--date", "2024-02-01", "--agency", "TOKYO", "--affair", "statistics",
            "--store", str(store.path)]  # fmt: skip
    shown = run_juki(*args, "--by", "sex,prefecture", "--plot", "p.png", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "prefecture_code" in shown.stdout and "count" in shown.stdout
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown.stderr.startswith("stats: 2 groups in ")  # Tokyo only: one row per sex
    written = run_juki(*args, "--by", "sex,prefecture", "--out", "s.csv", "--format", "csv",
                       cwd=tmp_path)  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    csv = (tmp_path / "s.csv").read_text().splitlines()
    assert csv[0] == "prefecture_code,sex,count"
    assert [line.split(",")[:2] for line in csv[1:]] == [["13", "1"], ["13", "2"]]
    manifest = json.loads((tmp_path / "s.csv.manifest.json").read_text())
    assert manifest["function"] == "stats" and manifest["columns"] == []
    refused = run_juki(*args[:-4], "--agency", "JPS", "--affair", "pension-change", "--store",
                       str(store.path), cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 3
    assert refused.stderr.strip() == (
        "refused: --affair 'pension-change': does not allow the function 'stats'")
    bad = run_juki(*args, "--by", "age", cwd=tmp_path)
    assert (bad.returncode, bad.stderr.strip()) == (
        2, "--by 'age': not one of prefecture, municipality, age5, sex")


@pytest.mark.parametrize(("text", "by"), [("sex,prefecture", ["prefecture_code", "sex"]),
                                          ("age5, municipality", ["municipality_code", "age5"]),
                                          ("", [])])  # fmt: skip
def test_groups_come_in_the_spec_order_whatever_the_order_asked(text: str, by: list[str]) -> None:
    assert parse_by(text) == by


def test_an_unknown_group_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_by("prefecture,town")

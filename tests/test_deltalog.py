"""The journal's constant-time appends (engine/deltalog.py) make commits Delta readers accept
(bare DuckDB over the log and Parquet: tests/test_open_format.py)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import given

from engine import deltalog

SCHEMA = pa.schema([
    pa.field("batch", pa.int64()),
    pa.field("name", pa.string()),
    pa.field("born", pa.date32()),
    pa.field("at", pa.timestamp("us", tz="UTC")),
])  # fmt: skip


def rows(batch: int, n: int) -> pa.Table:
    at = dt.datetime(2026, 11, 25, 3, 4, 5, 123456, tzinfo=dt.UTC)
    return pa.table({
        "batch": [batch] * n,
        "name": [f"n{i}" for i in range(n)],
        "born": [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(n)],
        "at": [at + dt.timedelta(microseconds=i) for i in range(n)],
    }, schema=SCHEMA)  # fmt: skip


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "t"
    write_deltalake(str(path), SCHEMA.empty_table(), mode="append")
    return path


def test_appended_commits_read_the_same_in_delta_rs_and_polars(table: Path) -> None:
    for batch in (1, 2, 3):
        deltalog.append(table, batch, rows(batch, 5), {"juki_batch": str(batch)})

    order = [("batch", "ascending"), ("name", "ascending")]
    expected = pa.concat_tables([rows(b, 5) for b in (1, 2, 3)]).sort_by(order)
    delta = DeltaTable(str(table))
    assert delta.version() == 3
    assert delta.history(1)[0]["juki_batch"] == "3"
    assert delta.to_pyarrow_table().sort_by(order).equals(expected)
    assert pl.read_delta(str(table)).sort("batch", "name").to_arrow().cast(SCHEMA).equals(expected)


def test_a_reader_filtering_on_a_column_skips_by_the_written_statistics(table: Path) -> None:
    for batch in (1, 2, 3):
        deltalog.append(table, batch, rows(batch, 4), {})

    assert pl.scan_delta(str(table)).filter(pl.col("batch") == 2).collect().height == 4
    actions = pa.table(DeltaTable(str(table)).get_add_actions(flatten=True)).to_pydict()
    assert sorted(actions["min.batch"]) == [1, 2, 3] and sorted(actions["max.batch"]) == [1, 2, 3]
    assert actions["num_records"] == [4, 4, 4]


def test_timestamp_statistics_are_widened_to_whole_milliseconds(table: Path) -> None:
    deltalog.append(table, 1, rows(1, 3), {})

    entry = (table / "_delta_log" / f"{1:020d}.json").read_text().splitlines()
    actions = [json.loads(x) for x in entry]
    stats = json.loads(next(a["add"]["stats"] for a in actions if "add" in a))
    assert stats["minValues"]["at"] == "2026-11-25T03:04:05.123000Z"  # .123456 floored
    assert stats["maxValues"]["at"] == "2026-11-25T03:04:05.124000Z"  # .123458 ceiled
    assert stats["minValues"]["born"] == "2000-01-01" and stats["nullCount"]["batch"] == 0
    assert "name" not in stats["minValues"]  # strings are not indexed


def test_an_existing_version_is_never_replaced(table: Path) -> None:
    deltalog.append(table, 1, rows(1, 2), {})
    before = (table / "_delta_log" / f"{1:020d}.json").read_bytes()

    with pytest.raises(FileExistsError):
        deltalog.append(table, 1, rows(9, 2), {})

    assert (table / "_delta_log" / f"{1:020d}.json").read_bytes() == before
    assert DeltaTable(str(table)).to_pyarrow_table()["batch"].to_pylist() == [1, 1]
    assert not [p for p in (table / "_delta_log").iterdir() if p.name.endswith(".tmp")]


def test_every_interval_th_version_is_checkpointed_and_reads_as_its_commits_do(
    table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deltalog, "CHECKPOINT_INTERVAL", 2)
    for batch in (1, 2, 3, 4, 5):
        deltalog.append(table, batch, rows(batch, 3), {})
    deltalog.commit(table, 6, [deltalog.write_file(table, rows(6, 2))], {}, checkpoint=False)
    log = table / "_delta_log"
    assert sorted(p.name for p in log.glob("*.checkpoint.parquet")) == [
        f"{v:020d}.checkpoint.parquet" for v in (2, 4)]  # fmt: skip
    # counted from the last checkpoint: one missed (a crash, an older juki) is made up next
    deltalog.commit(table, 7, [], {})

    assert sorted(p.name for p in log.glob("*.checkpoint.parquet")) == [
        f"{v:020d}.checkpoint.parquet" for v in (2, 4, 7)]  # fmt: skip
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == 7
    replayed = tmp_path / "replayed"  # the same table read from its commits alone
    shutil.copytree(table, replayed)
    for p in (replayed / "_delta_log").glob("*checkpoint*"):
        p.unlink()
    order = [("batch", "ascending"), ("name", "ascending")]
    read = [DeltaTable(str(t)).to_pyarrow_table().sort_by(order) for t in (table, replayed)]
    assert read[0].equals(read[1]) and read[0].num_rows == 5 * 3 + 2
    assert pl.read_delta(str(table)).height == 17


def test_an_ingest_leaves_every_table_it_commits_to_checkpointed_each_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current delta and the codes take a commit per ingest by juki's own writer: without a
    checkpoint from it, every open of them would replay the commits of all the years before.
    (Positions and held rows are committed by delta-rs, which checkpoints by its own interval.)"""
    from test_open_format import CALL, write_month

    from engine.store import Store
    from loaders.ingest import ingest_files

    monkeypatch.setattr(deltalog, "CHECKPOINT_INTERVAL", 2)
    write_month(tmp_path)
    store = Store(tmp_path / "store")
    for name in CALL:  # an ingest each: a commit of every table each
        ingest_files(store, [str(tmp_path / name)])

    for name in ("journal", "current_delta", "codes"):
        log = store.table_path(name) / "_delta_log"
        assert store.delta(name).version() >= 2, name  # (versions 0, 1, 2, …)
        assert json.loads((log / "_last_checkpoint").read_text())["version"] % 2 == 0, name


def test_the_newest_log_entry_answers_as_delta_rs_replaying_the_log_does(tmp_path: Path) -> None:
    """`reflected_batch` and `journal_head` read the newest log entry alone; after ingests, a
    compaction (delta-rs commits among juki's) and an ingest after it, they agree with delta-rs."""
    from test_open_format import CALL, write_month

    from engine import maintenance
    from engine.derived import CATCH_UP_TABLES
    from engine.store import APP_ID, SCHEMAS, Store
    from loaders.ingest import ingest_files

    write_month(tmp_path)
    store = Store(tmp_path / "store")
    seen = []
    for step, name in enumerate(CALL):
        ingest_files(store, [str(tmp_path / name)])
        if step == 1:
            maintenance.compact(store, keep_bases=2)
        for table in SCHEMAS:
            if table == "journal":
                continue
            replayed = DeltaTable(str(store.table_path(table))).transaction_version(APP_ID)
            assert store.reflected_batch(table) == (replayed or 0), (table, step)
            if table in CATCH_UP_TABLES:
                assert replayed == step + 1, (table, step)
        journal = DeltaTable(str(store.table_path("journal")))
        head, info = store.journal_head(), journal.history(1)[0]
        assert head.version == journal.version()
        assert head.batch == int(info["juki_batch"]) == step + 1
        assert head.next_person == int(info["juki_next_person"])
        assert head.recorded_at is not None
        assert head.recorded_at.isoformat() == info["juki_recorded_at"]
        seen.append(head.recorded_at)
    assert seen == sorted(seen)


def test_row_group_statistics_skip_the_free_text_columns_and_keep_the_keys(tmp_path: Path) -> None:
    data = pa.table({
        "person": pa.array([3, 1, 2], pa.int64()),
        "resident_code": ["00000000019", "00000000027", "00000000035"],
        "surname": ["山田", "佐藤", "鈴木"],
        "address": ["東京都千代田区1", "東京都千代田区2", "東京都千代田区3"],
    })  # fmt: skip
    add = deltalog.write_file(tmp_path, data)

    meta = pq.ParquetFile(tmp_path / add["path"]).metadata.row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).statistics for i in range(4)}
    assert stats["surname"] is None and stats["address"] is None
    assert (stats["person"].min, stats["person"].max) == (1, 3)
    assert stats["resident_code"].min == "00000000019"


@given(
    code=st.tuples(st.integers(0, 10**11 - 1), st.integers(0, 10**11 - 1)).map(sorted),
    text=st.tuples(st.text(max_size=40), st.text(max_size=40)).map(sorted),
    at=st.datetimes(timezones=st.just(dt.UTC)),
    born=st.dates(),
    batch=st.integers(-(2**62), 2**62),
)
def test_known_bounds_give_the_statistics_the_columns_would(
    code: list[int], text: list[str], at: dt.datetime, born: dt.date, batch: int
) -> None:
    """`bounds_stats` (what the provision records' writer knows) says what `file_stats`
    computes from the same minimum and maximum rows."""
    bounds = {"code": (f"{code[0]:011d}", f"{code[1]:011d}"), "name": (text[0], text[1]),
              "at": (at, at), "born": (born, born), "batch": (batch, batch)}  # fmt: skip
    table = pa.table({
        "code": [v for v in bounds["code"]], "name": list(bounds["name"]),
        "at": pa.array([at, at], pa.timestamp("us", tz="UTC")),
        "born": pa.array([born, born], pa.date32()), "batch": [batch, batch],
    })  # fmt: skip
    assert deltalog.bounds_stats(2, bounds) == deltalog.file_stats(table, strings=True)

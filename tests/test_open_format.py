"""The store is plain Delta + Parquet (DESIGN.md "Scale past one machine"): a reader that knows
nothing of juki, not even the Delta extension, gets the same history and current state as juki.

Here that reader is bare DuckDB: `read_json` over `<table>/_delta_log/*.json` gives the live
Parquet files (every `add` not later `remove`d), `read_parquet` reads them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from builders import (
    CHIYODA,
    SHIBUYA,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)

from engine.current import scan_current
from engine.schema import RECORD_COLUMNS
from engine.store import Store

_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]
CALL = ["registration.csv", "changes.csv", "moves.csv"]
CURRENT_COLUMNS = ["person", "version", *RECORD_COLUMNS, "seq", "reason", "change_date",
                   "notified_at", "recorded_at"]  # fmt: skip


def run_juki(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JUKI_STORE"}
    result = subprocess.run([*JUKI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def write_month(directory: Path) -> None:
    chi, shi = Municipality(CHIYODA), Municipality(SHIBUYA)
    registration = [row(chi, "A4", "2024-01-01", person(i)) for i in range(20)]
    registration.append(row(chi, "A4", "2024-01-01", person(20, sex="3")))  # rejected
    changes = [
        row(chi, "M1", "2024-02-01", person(0, address="東京都千代田区丸の内1")),
        row(chi, "D1", "2024-02-02", person(1)),
        row(chi, "M4", "2024-02-03", person(2, my_number=my_number(200))),
        row(chi, "M5", "2024-02-03", person(3, resident_code=resident_code(300)),
            previous_resident_code=resident_code(3)),
        row(chi, "M2", "2024-02-04", person(4, surname="佐藤", surname_kana="サトウ")),
    ]  # fmt: skip
    changes += [
        row(chi, "X1", "2024-02-05", {"resident_code": resident_code(4),
                                      "my_number": my_number(4)},
            cancels_municipality_code=CHIYODA, cancels_seq=changes[-1]["seq"]),
        row(chi, "M1", "2024-02-06", person(5, address="東京都千代田区永田町2")),  # seq 28
    ]  # fmt: skip
    chi.seq = 29  # seq 29 comes in the next file: seq 30 is held until then
    changes.append(row(chi, "M1", "2024-02-08", person(6, address="東京都千代田区麹町3")))
    chi.seq = 28
    moves = [
        row(shi, "A2", "2024-02-10", person(1, municipality_code=SHIBUYA, address="東京都渋谷区1")),
        row(chi, "M1", "2024-02-07", person(7, address="東京都千代田区霞が関4")),  # seq 29
        registration[0],  # re-sent: a duplicate
    ]  # fmt: skip
    chi.seq = 31  # seq 31 never comes: seq 32 stays held
    moves.append(row(chi, "M1", "2024-02-09", person(8, address="東京都千代田区神田5")))
    for name, rows in zip(CALL, [registration, changes, moves], strict=True):
        write_csv(directory / name, rows)


def live_files(con: duckdb.DuckDBPyConnection, table: Path) -> list[str]:
    """The table's Parquet files per its JSON log: added and not removed (no Delta reader)."""
    actions = con.sql(
        "select json_extract_string(\"add\", '$.path') as added, "
        "       json_extract_string(\"remove\", '$.path') as removed "
        "from read_json(?, format = 'newline_delimited', "
        "               columns = {'add': 'JSON', 'remove': 'JSON'})",
        params=[str(table / "_delta_log" / "*.json")],
    ).pl()
    added = set(actions["added"].drop_nulls().to_list())
    removed = set(actions["removed"].drop_nulls().to_list())
    return sorted(str(table / p) for p in added - removed)


def sql_list(files: list[str]) -> str:
    """File names as the items of a DuckDB list literal."""
    return ", ".join("'" + f.replace("'", "''") + "'" for f in files)


def encodings(con: duckdb.DuckDBPyConnection, table: Path, column: str) -> set[str]:
    """The Parquet encodings of a column over the table's live files, per DuckDB."""
    listed = sql_list(live_files(con, table))
    rows = con.sql(f"select encodings from parquet_metadata([{listed}]) "
                   f"where path_in_schema = '{column}'").fetchall()  # fmt: skip
    return {e.strip() for (text,) in rows for e in text.split(",")}


def compressions(con: duckdb.DuckDBPyConnection, table: Path) -> set[str]:
    """The Parquet codecs over the table's live files, per DuckDB."""
    listed = sql_list(live_files(con, table))
    rows = con.sql(f"select distinct compression from parquet_metadata([{listed}])").fetchall()
    return {c for (c,) in rows}


def read_table(
    con: duckdb.DuckDBPyConnection, table: Path, sql: str = "select * from t"
) -> pl.DataFrame:
    files = live_files(con, table)
    if not files:
        return pl.DataFrame()
    listed = sql_list(files)
    con.sql(f"create or replace temp view t as select * from read_parquet([{listed}])")
    frame = con.sql(sql).pl()
    # DuckDB names UTC 'Etc/UTC'; the instants are what matter
    return frame.with_columns(pl.col(pl.Datetime("us", "Etc/UTC")).dt.convert_time_zone("UTC"))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    directory = tmp_path_factory.mktemp("open")
    write_month(directory)
    result = run_juki("ingest", *CALL, "--json", "--store", "store", cwd=directory)
    return directory, [json.loads(line) for line in result.stdout.splitlines()]


def test_per_file_outcome_counts_read_by_plain_duckdb_equal_what_ingest_reported(
    ingested: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, lines = ingested
    con = duckdb.connect()
    counts = read_table(con, directory / "store" / "journal", """
        select f.file, count(*) filter (where j.outcome = 'applied') as applied,
               count(*) filter (where j.outcome = 'rejected') as rejected,
               count(*) filter (where j.outcome = 'duplicate') as duplicate,
               count(*) filter (where j.outcome = 'held') as held,
               count(*) filter (where j.outcome = 'released') as released
        from t as j join (select batch, file from t where outcome = 'file') as f using (batch)
        group by f.batch, f.file order by f.batch
    """)  # fmt: skip

    assert counts.to_dicts() == lines
    assert lines == [
        {"file": "registration.csv", "applied": 20, "rejected": 1, "duplicate": 0, "held": 0,
         "released": 0},
        {"file": "changes.csv", "applied": 7, "rejected": 0, "duplicate": 0, "held": 1,
         "released": 0},
        {"file": "moves.csv", "applied": 2, "rejected": 0, "duplicate": 1, "held": 1,
         "released": 1},
    ]  # fmt: skip


def test_current_state_derived_by_plain_duckdb_from_the_journal_equals_jukis_current(
    ingested: tuple[Path, list[dict[str, Any]]],
) -> None:
    """SPEC §1/§3: per person the last applied version that is neither an X1 nor cancelled."""
    directory, _ = ingested
    columns = ", ".join(CURRENT_COLUMNS)
    from_history = read_table(duckdb.connect(), directory / "store" / "journal", f"""
        with history as (select * from t where outcome in ('applied', 'released')),
        cancelled as (
            select h.batch, h.apply_order from history as h join history as x
              on x.reason = 'X1' and x.cancels_municipality_code = h.municipality_code
             and x.cancels_seq = h.seq
        ),
        effective as (
            select * from history
            where reason <> 'X1' and (batch, apply_order) not in (select * from cancelled)
        )
        select {columns} from effective
        qualify row_number() over (partition by person order by batch desc, apply_order desc) = 1
        order by person
    """)  # fmt: skip
    juki = scan_current(Store(directory / "store")).select(CURRENT_COLUMNS).sort("person").collect()

    assert from_history.equals(juki)
    assert from_history.height == 20
    by_code = dict(zip(from_history["resident_code"], from_history["surname"], strict=True))
    assert by_code[resident_code(4)] == "山田"  # the M2 was cancelled
    assert resident_code(300) in by_code and resident_code(3) not in by_code


def test_codes_in_the_history_read_by_plain_duckdb_equal_jukis_issued_codes(
    ingested: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = ingested
    con = duckdb.connect()
    history = read_table(con, directory / "store" / "journal", """
        select distinct kind, code from (
            select 1 as kind, cast(resident_code as bigint) as code from t
             where outcome in ('applied', 'released')
            union all
            select 2, cast(my_number as bigint) from t where outcome in ('applied', 'released')
        ) order by kind, code
    """)  # fmt: skip
    issued = read_table(
        con, directory / "store" / "codes", "select kind::integer as kind, code from t order by 1, 2"
    )

    expected = sorted(
        [(1, int(resident_code(i))) for i in [*range(20), 300]]
        + [(2, int(my_number(i))) for i in [*range(20), 200]]
    )
    assert list(history.iter_rows()) == expected
    assert list(issued.iter_rows()) == expected


def test_current_delta_and_held_read_by_plain_duckdb_equal_what_juki_shows(
    ingested: tuple[Path, list[dict[str, Any]]],
) -> None:
    directory, _ = ingested
    con = duckdb.connect()
    columns = ", ".join(CURRENT_COLUMNS)
    newest = read_table(con, directory / "store" / "current_delta", f"""
        select {columns} from t
        qualify row_number() over (partition by person
                                   order by written_batch desc, written_order desc) = 1
        order by person
    """)  # fmt: skip
    held = read_table(con, directory / "store" / "held",
                      "select municipality_code, seq, file, row from t order by 1, 2")  # fmt: skip
    shown = run_juki("held", "list", "--json", "--store", "store", cwd=directory)

    juki = scan_current(Store(directory / "store")).select(CURRENT_COLUMNS).sort("person").collect()
    assert newest.equals(juki)
    assert held.to_dicts() == [
        {k: r[k] for k in ("municipality_code", "seq", "file", "row")}
        for r in json.loads(shown.stdout)
    ]
    assert held.to_dicts() == [{"municipality_code": CHIYODA, "seq": 32, "file": "moves.csv",
                                "row": 4}]  # fmt: skip


def test_after_compaction_plain_duckdb_sees_the_removed_delta_files_gone_and_the_same_current(
    ingested: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    directory, _ = ingested
    store = tmp_path / "store"
    run_juki("ingest", *[str(directory / f) for f in CALL], "--store", str(store), cwd=tmp_path)
    before = scan_current(Store(store)).select(CURRENT_COLUMNS).sort("person").collect()
    con = duckdb.connect()
    codes_sql = "select kind::integer as kind, code, person from t order by 1, 2"
    codes_before = read_table(con, store / "codes", codes_sql)

    compacted = run_juki("store", "compact", "--store", str(store), cwd=tmp_path)
    assert "keeping the 31 newest bases" in compacted.stderr
    info = run_juki("store", "info", "--json", "--store", str(store), cwd=tmp_path)
    shown = run_juki("store", "info", "--store", str(store), cwd=tmp_path).stdout
    assert "compacted bases on disk: 1, the oldest as of journal batch" in " ".join(shown.split())

    # the rewritten files delta-encode their distinct columns, which DuckDB reads as Parquet
    assert encodings(con, store / "current_base", "person") >= {"DELTA_BINARY_PACKED"}
    assert encodings(con, store / "current_base", "my_number") >= {"DELTA_LENGTH_BYTE_ARRAY"}
    assert encodings(con, store / "codes", "code") >= {"DELTA_BINARY_PACKED"}
    assert encodings(con, store / "journal", "person") >= {"DELTA_BINARY_PACKED"}
    for table in ("current_base", "codes", "journal"):  # the codec readers must know
        assert compressions(con, store / table) == {"LZ4_RAW"}
    assert read_table(con, store / "codes", codes_sql).equals(codes_before)
    assert live_files(con, store / "current_delta") == []
    columns = ", ".join(CURRENT_COLUMNS)
    live = f"select {columns} from t where version is not null order by person"
    base = read_table(con, store / "current_base", live)
    assert base.equals(before)
    rows = {r["table"]: r["rows"] for r in json.loads(info.stdout)}
    for table, count in rows.items():
        found = read_table(con, store / table, "select count(*) as n from t")
        assert (found["n"][0] if found.height else 0) == count, table


def test_store_info_lists_every_table_and_only_derived_ones_reflect_the_journal(
    ingested: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from agency import load

    from engine.maintenance import store_info

    directory, _ = ingested
    store = Store(tmp_path / "store")
    shutil.copytree(directory / "store", store.path)
    load(store, tmp_path)

    info = {r["table"]: r for r in store_info(store)}

    assert list(info)[:6] == ["journal", "current_base", "current_delta", "codes", "positions",
                              "held"]  # fmt: skip
    assert info["registry"]["reflects"] is None and info["registry"]["rows"] > 0
    assert info["codes"]["reflects"] == info["journal"]["reflects"] == 3

"""Notification files in every form SPEC §4 accepts give the same store as plain UTF-8 CSV: CP932
CSV (detected, or forced with --encoding), UTF-8 with a BOM, Parquet typed as in §1, Parquet with
text columns. A `notified_at` without a zone is Japan time (+09:00).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import CHIYODA, SAPPORO, Municipality, person, row, write_csv

from engine.current import scan_current
from engine.schema import NOTIFICATION_COLUMNS
from engine.store import Store
from loaders.ingest import ingest_files

_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]
JST = dt.timezone(dt.timedelta(hours=9))
UTC = dt.UTC


def _check(body: str, weights: tuple[int, ...]) -> str:
    """SPEC §2.1/§2.2 modulus-11 check digit, written out independently of engine.codes."""
    r = sum(w * int(d) for w, d in zip(weights, body, strict=True)) % 11
    return body + str(0 if r <= 1 else 11 - r)


def rc(body: str) -> str:
    return _check(body, (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))


def mn(body: str) -> str:
    return _check(body, (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2))


def month() -> dict[str, list[dict[str, Any]]]:
    """Two files of notifications with the values that formats disagree on most easily: leading
    zeros, CP932-only kanji, kana with ・, nulls, booleans, zoned and zoneless timestamps."""
    chi, sap = Municipality(CHIYODA), Municipality(SAPPORO)
    zero = {"resident_code": rc("0012345678"), "my_number": mn("02345678901")}
    assert zero["my_number"] == "023456789013"  # SPEC §2.1's own example
    foreign = {"resident_code": rc("2000000001"), "my_number": mn("20000000001")}
    former = {"resident_code": rc("3000000001"), "my_number": mn("30000000001")}
    sapporo = {"resident_code": rc("4000000001"), "my_number": mn("40000000001")}
    registration = [
        row(chi, "A4", "2024-01-01", person(0, **zero, surname="髙橋", surname_kana="タカハシ",
                                           address="東京都千代田区千代田１－１～２"),
            notified_at="2024-01-05T09:30:00"),
        row(chi, "A4", "2024-01-01", person(1, **foreign, surname="SMITH", given_name="JOHN",
                                           surname_kana="スミス", given_name_kana="ジョン・ポール",
                                           alias="鈴木太郎", resident_kind="2", sex="1"),
            notified_at="2024-01-05T10:00:00.250000+09:00"),
        row(chi, "A4", "2024-01-01", person(2, **former, surname="佐藤", given_name="花子",
                                           surname_kana="サトウ", given_name_kana="ハナコ",
                                           former_surname="山田", former_surname_kana="ヤマダ",
                                           sex="2", birth_date="1990-02-28", protected="true"),
            notified_at="2024-01-05T01:00:00Z"),
        row(chi, "A4", "2024-01-01", person(3, surname_kana="やまだ")),  # rejected: kana
    ]
    sap.seq = 1  # Sapporo's seq 2 arrives first: held, released by the next file
    registration.append(
        row(sap, "A4", "2024-01-02", person(4, **sapporo, address="北海道札幌市中央区北１条西２丁目",
                                           protected="false"),
            notified_at="2024-01-06T08:00:00")
    )  # fmt: skip
    sap.seq = 0
    changes = [
        row(sap, "A4", "2024-01-02", person(5, address="北海道札幌市北区")),
        row(chi, "M1", "2024-02-01", person(2, **former, surname="佐藤", given_name="花子",
                                           surname_kana="サトウ", given_name_kana="ハナコ",
                                           former_surname="山田", former_surname_kana="ヤマダ",
                                           sex="2", birth_date="1990-02-28", protected="false",
                                           address="東京都千代田区永田町２")),
        row(chi, "M2", "2024-02-02", person(0, **zero, surname="髙田", surname_kana="タカダ",
                                           address="東京都千代田区千代田１－１～２")),
        row(chi, "X1", "2024-02-03", dict(zero), cancels_municipality_code=CHIYODA,
            cancels_seq=6),
        row(chi, "M7", "2024-02-04", person(1, **foreign, surname="SMITH", given_name="JOHN",
                                           surname_kana="スミス", given_name_kana="ジョン・ポール",
                                           alias=None, resident_kind="2", sex="1"),
            notified_at="2024-02-04T23:59:59.999999"),
    ]  # fmt: skip
    return {"registration": registration, "changes": changes}


# -- writing one month in each form ---------------------------------------------------------------
TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(), "change_date": pa.date32(), "birth_date": pa.date32(), "sex": pa.int8(),
    "resident_kind": pa.int8(), "protected": pa.bool_(), "cancels_seq": pa.int64(),
    "notified_at": pa.timestamp("us", tz="UTC"),
}  # fmt: skip


def _typed(column: str, text: str | None) -> Any:
    if text is None:
        return None
    kind = TYPES.get(column)
    if kind is None:
        return text
    if kind == pa.date32():
        return dt.date.fromisoformat(text)
    if kind == pa.bool_():
        return {"true": True, "false": False}[text]
    if isinstance(kind, pa.TimestampType):
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=JST)).astimezone(UTC)
    return int(text)


def write_parquet(path: Path, rows: list[dict[str, Any]], *, typed: bool) -> Path:
    columns = {}
    for c in NOTIFICATION_COLUMNS:
        kind = TYPES.get(c, pa.string()) if typed else pa.string()
        values = [_typed(c, r[c]) if typed else r[c] for r in rows]
        columns[c] = pa.array(values, kind)
    pq.write_table(pa.table(columns), path)
    return path


WRITERS: dict[str, Callable[[Path, list[dict[str, Any]]], Path]] = {
    "utf-8": lambda p, rows: write_csv(p.with_suffix(".csv"), rows),
    "cp932": lambda p, rows: write_csv(p.with_suffix(".csv"), rows, encoding="cp932"),
    "utf-8-bom": lambda p, rows: write_csv(p.with_suffix(".csv"), rows, encoding="utf-8-sig"),
    "parquet-typed": lambda p, rows: write_parquet(p.with_suffix(".parquet"), rows, typed=True),
    "parquet-text": lambda p, rows: write_parquet(p.with_suffix(".parquet"), rows, typed=False),
}


def write_month(directory: Path, form: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [WRITERS[form](directory / name, rows) for name, rows in month().items()]


# -- what a store holds ----------------------------------------------------------------------------
def snapshot(path: Path) -> dict[str, pl.DataFrame]:
    """Store contents that must not depend on the input form (file names reduced to their stem)."""
    stem = pl.col("file").str.extract(r"([^/]+)\.[^.]+$")
    current = (
        scan_current(Store(path)).collect()
        .drop("written_batch", "written_order", "recorded_at").sort("person")
    )  # fmt: skip
    journal = (
        pl.read_delta(str(path / "journal"))
        .filter(pl.col("outcome") != "file")
        .with_columns(file=stem)
        .drop("batch", "recorded_at", "raw", "message")
        .sort("file", "row", "outcome")
    )
    held = pl.read_delta(str(path / "held")).with_columns(file=stem).drop("batch", "raw")
    return {
        "current": current,
        "journal": journal,
        "codes": pl.read_delta(str(path / "codes")).drop("batch").sort("kind", "code"),
        "positions": pl.read_delta(str(path / "positions")).sort("municipality_code"),
        "held": held.sort("municipality_code", "seq"),
    }


def assert_same_store(path: Path, expected: dict[str, pl.DataFrame]) -> None:
    actual = snapshot(path)
    for name, frame in expected.items():
        assert actual[name].equals(frame), (
            f"{name} differs:\n{actual[name]}\nexpected:\n{frame}"
        )


def ingest_in_process(directory: Path, files: list[Path], **options: Any) -> list[dict[str, Any]]:
    cwd = Path.cwd()
    os.chdir(directory)  # the journal names files as given: relative, like an operator's call
    try:
        report = ingest_files(Store("store"), [f.name for f in files], **options)
    finally:
        os.chdir(cwd)
    return [f.to_json() for f in report.files]


@pytest.fixture(scope="module")
def utf8_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pl.DataFrame], list]:
    directory = tmp_path_factory.mktemp("utf8")
    lines = ingest_in_process(directory, write_month(directory, "utf-8"))
    return snapshot(directory / "store"), lines


EXPECTED_LINES = [
    {"file": "registration", "applied": 3, "rejected": 1, "duplicate": 0, "held": 1,
     "released": 0},
    {"file": "changes", "applied": 5, "rejected": 0, "duplicate": 0, "held": 0, "released": 1},
]  # fmt: skip


def test_the_utf8_csv_month_applies_as_intended(utf8_store: tuple[Any, list]) -> None:
    state, lines = utf8_store
    assert [{**line, "file": Path(line["file"]).stem} for line in lines] == EXPECTED_LINES
    current = state["current"]
    assert current["resident_code"].str.len_chars().to_list() == [11] * len(current)
    assert "023456789013" in current["my_number"].to_list()
    assert state["held"].is_empty()


@pytest.mark.parametrize("form", ["cp932", "utf-8-bom", "parquet-typed", "parquet-text"])
def test_each_input_form_gives_the_same_store_as_utf8_csv(
    tmp_path: Path, utf8_store: tuple[Any, list], form: str
) -> None:
    files = write_month(tmp_path, form)
    if form == "cp932":  # the detection must really be exercised
        with pytest.raises(UnicodeDecodeError):
            files[0].read_bytes().decode("utf-8")

    lines = ingest_in_process(tmp_path, files)

    assert [{**line, "file": Path(line["file"]).stem} for line in lines] == EXPECTED_LINES
    assert_same_store(tmp_path / "store", utf8_store[0])


def test_cp932_forced_with_the_encoding_option_gives_the_same_store_as_utf8_csv(
    tmp_path: Path, utf8_store: tuple[Any, list]
) -> None:
    files = write_month(tmp_path, "cp932")

    result = subprocess.run(
        [*JUKI, "ingest", *[f.name for f in files], "--encoding", "cp932", "--json",
         "--store", "store"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [{**line, "file": Path(line["file"]).stem} for line in lines] == EXPECTED_LINES
    assert_same_store(tmp_path / "store", utf8_store[0])


def test_a_cp932_file_forced_as_utf8_is_unreadable_exit_4_and_nothing_of_it_applies(
    tmp_path: Path,
) -> None:
    files = write_month(tmp_path, "cp932")

    result = subprocess.run(
        [*JUKI, "ingest", files[0].name, "--encoding", "utf-8", "--json", "--store", "store"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 4
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert list(line) == ["file", "error"] and files[0].name in line["error"]
    applied = pl.read_delta(str(tmp_path / "store" / "journal")).filter(
        pl.col("outcome") != "file"
    )
    assert applied.is_empty()


@pytest.mark.parametrize("form", ["utf-8", "cp932", "parquet-text"])
def test_a_notified_at_without_a_zone_is_japan_time(tmp_path: Path, form: str) -> None:
    ingest_in_process(tmp_path, write_month(tmp_path, form))

    journal = pl.read_delta(str(tmp_path / "store" / "journal")).filter(
        pl.col("outcome").is_in(["applied", "released"])
    )
    first = journal.sort("batch", "apply_order").unique("resident_code", keep="first")
    stamps = dict(zip(first["resident_code"], first["notified_at"], strict=True))
    bodies = ("0012345678", "2000000001", "3000000001", "4000000001")
    assert [stamps[rc(body)] for body in bodies] == [
        dt.datetime(2024, 1, 5, 0, 30, tzinfo=UTC),  # 09:30 without a zone: Japan time
        dt.datetime(2024, 1, 5, 1, 0, 0, 250000, tzinfo=UTC),  # 10:00:00.25+09:00
        dt.datetime(2024, 1, 5, 1, 0, tzinfo=UTC),  # 01:00Z
        dt.datetime(2024, 1, 5, 23, 0, tzinfo=UTC),  # held, then released: 08:00 Japan time
    ]
    m7 = journal.filter(pl.col("reason") == "M7")["notified_at"].to_list()
    assert m7 == [dt.datetime(2024, 2, 4, 14, 59, 59, 999999, tzinfo=UTC)]


@pytest.mark.parametrize("forms", [("parquet-typed", "utf-8"), ("utf-8", "parquet-typed"),
                                   ("parquet-text", "parquet-typed")])  # fmt: skip
def test_one_call_mixing_typed_parquet_and_text_files_gives_the_same_store(
    tmp_path: Path, utf8_store: tuple[Any, list], forms: tuple[str, str]
) -> None:
    """Files of one call are checked together: typed and text forms must not disturb each other."""
    first = write_month(tmp_path / "a", forms[0])[0]
    second = write_month(tmp_path / "b", forms[1])[1]
    files = [tmp_path / first.name, tmp_path / second.name]
    first.rename(files[0])
    second.rename(files[1])

    lines = ingest_in_process(tmp_path, files)

    assert [{**line, "file": Path(line["file"]).stem} for line in lines] == EXPECTED_LINES
    assert_same_store(tmp_path / "store", utf8_store[0])

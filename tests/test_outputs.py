"""Output files and manifests (SPEC §5): Parquet, CSV, CP932 with the variant mapping and 〓,
SHA-256 of the bytes, written by rename so no partial file is ever visible."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UsageError
from loaders import outputs
from loaders.outputs import (
    BUFFER,
    CP932_VARIANTS,
    OutputOptions,
    OutputWriter,
    encode_cp932,
    write_output,
)

FRAME = pl.DataFrame(
    {
        "request_row": [1, 2],
        "surname": ["𠮷田", "髙橋〜"],
        "reasons": [["M1", "X1"], ["A4"]],
        "first_change_date": [dt.date(2024, 1, 2), None],
        "protected": [True, False],
    }
)


def test_cp932_maps_the_spec_variants_before_encoding() -> None:
    text = "\u301c\u2016\u2212\u00a2\u00a3\u00ac\u2014"
    data, replaced = encode_cp932(text)
    assert replaced == 0
    assert data.decode("cp932") == "\uff5e\u2225\uff0d\uffe0\uffe1\uffe2\u2015"
    assert len(CP932_VARIANTS) == 7


def test_characters_cp932_lacks_become_geta_and_are_counted() -> None:
    data, replaced = encode_cp932("𠮷野家の𠮷と〓")
    assert data.decode("cp932") == "〓野家の〓と〓"
    assert replaced == 2


@settings(max_examples=200, deadline=None, database=None)
@given(st.text())
def test_cp932_counts_exactly_the_characters_it_replaced(text: str) -> None:
    data, replaced = encode_cp932(text)
    mapped = text.translate(CP932_VARIANTS)
    lacking = 0
    for ch in mapped:
        try:
            ch.encode("cp932")
        except UnicodeEncodeError:
            lacking += 1
    assert replaced == lacking
    assert len(data.decode("cp932")) == len(mapped)


def test_a_csv_in_cp932_has_its_manifest_with_hash_and_replacements(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "answer.csv"
    written = write_output(FRAME, OutputOptions(out, "csv", "cp932"),
                           {"request_id": "r1", "agency": "JPS", "affair": "a", "parameters": {}})  # fmt: skip
    data = out.read_bytes()
    assert data.decode("cp932").splitlines() == [
        "request_row,surname,reasons,first_change_date,protected",
        "1,〓田,M1;X1,2024-01-02,true",
        "2,髙橋～,A4,,false",
    ]
    manifest = json.loads((tmp_path / "deep" / "answer.csv.manifest.json").read_text("utf-8"))
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == written.sha256
    assert (manifest["rows"], manifest["replaced_characters"], manifest["request_id"]) == (2, 1, "r1")
    assert (manifest["agency"], manifest["affair"], manifest["encoding"]) == ("JPS", "a", "cp932")
    assert sorted(p.name for p in out.parent.iterdir()) == ["answer.csv", "answer.csv.manifest.json"]


def test_the_same_rows_give_the_same_parquet_bytes(tmp_path: Path) -> None:
    a = write_output(FRAME, OutputOptions(tmp_path / "a.parquet"), {"request_id": "1"})
    b = write_output(FRAME, OutputOptions(tmp_path / "b.parquet"), {"request_id": "2"})
    assert a.sha256 == b.sha256
    assert pl.read_parquet(tmp_path / "a.parquet").equals(FRAME)


def test_rows_written_from_a_contiguous_copy_give_the_same_bytes(tmp_path: Path) -> None:
    """A lookup's scattered rows are encoded from a copy of their text: same file."""
    hashes = []
    for contiguous in (False, True):
        writer = OutputWriter(OutputOptions(tmp_path / f"{contiguous}.parquet"))
        for k in range(2):
            part = FRAME.with_columns(pl.col(pl.String) + str(k)).reverse()
            writer.write(writer.prepare(part, contiguous=contiguous))
        hashes.append(writer.finish({"request_id": "1"}).sha256)
    assert hashes[0] == hashes[1]


def test_cp932_is_a_csv_encoding_only(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--encoding cp932: only for --format csv"):
        OutputOptions(tmp_path / "x.parquet", "parquet", "cp932").check()


@pytest.mark.parametrize("writeback", [None, 1], ids=["default", "writeback-each-write"])
def test_an_output_in_parts_hashes_every_byte_in_order(
    tmp_path: Path, writeback: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # parts far beyond the 8 MiB that reach the hashing thread at a time (and the disk's
    # writeback started after every write)
    if writeback is not None:
        monkeypatch.setattr(outputs, "WRITEBACK", writeback)
    n = 400_000
    part = pl.DataFrame({
        "resident_code": [f"{i:011d}" for i in range(n)],
        "address": [f"東京都千代田区{i}" for i in range(n)],
        "reasons": [["M1"]] * n,
    })  # fmt: skip
    options = OutputOptions(tmp_path / "big.parquet")
    writer = OutputWriter(options)
    for k in range(3):
        writer.write(writer.prepare(part.with_columns(pl.col("address") + str(k))))
    written = writer.finish({"request_id": "1"})
    data = (tmp_path / "big.parquet").read_bytes()
    assert len(data) > 2 * BUFFER
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert json.loads(options.manifest_path.read_text())["sha256"] == written.sha256
    back = pl.read_parquet(tmp_path / "big.parquet")
    assert back.height == 3 * n and back["address"][-1] == f"東京都千代田区{n - 1}2"
    assert back.schema["reasons"] == pl.List(pl.String)


def test_a_failing_write_surfaces_and_leaves_no_file(tmp_path: Path) -> None:
    options = OutputOptions(tmp_path / "out.parquet")
    writer = OutputWriter(options)

    def full(data: object) -> int:
        raise OSError(28, "No space left on device")

    writer._file.write = full  # type: ignore[method-assign]
    writer.write(writer.prepare(FRAME))
    with pytest.raises(OSError, match="No space left"):
        writer.finish({"request_id": "1"})
    writer.abort()
    assert list(tmp_path.iterdir()) == []

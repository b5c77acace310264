"""Rendering generator rows as SPEC §4 change-notification files (Parquet or CSV), and their names.

Text is built by Arrow from small tables, never per row in Python: a name column is the name table
taken at the row's index, an address is (prefecture + municipality + town) ⧺ (chome + banchi) ⧺ go,
and codes are zero-padded digits written straight into an Arrow buffer.

File names sort, as plain strings, in the order the files must be ingested:
`0000-00-initial-PP` (the initial population, A4) before every month, and per month
`YYYY-MM-1-PP` (every reason but A2) before `YYYY-MM-2-PP` (the A2 move-ins, whose D1 may be in
another prefecture's `-1-` file of the same month). PP is the prefecture code 01–47.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loaders.synthetic_codes import code_text
from loaders.synthetic_names import NameTables
from loaders.synthetic_places import KANJI_DIGITS, Geography
from loaders.synthetic_rows import REASONS, US_PER_DAY, RowBatch

FileFormat = Literal["parquet", "csv"]
FILE_NAME = re.compile(
    r"^(0000-00-initial|\d{4}-\d{2}-[12])-(0[1-9]|[1-3]\d|4[0-7])\.(parquet|csv)$"
)

SCHEMA = pa.schema([
    ("municipality_code", pa.string()),
    ("seq", pa.int64()),
    ("reason", pa.string()),
    ("change_date", pa.date32()),
    ("resident_code", pa.string()),
    ("my_number", pa.string()),
    ("surname", pa.string()),
    ("given_name", pa.string()),
    ("surname_kana", pa.string()),
    ("given_name_kana", pa.string()),
    ("former_surname", pa.string()),
    ("former_surname_kana", pa.string()),
    ("alias", pa.string()),
    ("birth_date", pa.date32()),
    ("sex", pa.int8()),
    ("address", pa.string()),
    ("resident_kind", pa.int8()),
    ("protected", pa.bool_()),
    ("previous_resident_code", pa.string()),
    ("cancels_municipality_code", pa.string()),
    ("cancels_seq", pa.int64()),
    ("notified_at", pa.timestamp("us", tz="UTC")),
])  # fmt: skip
# Parquet encoding: dictionaries only where values repeat; statistics where readers prune.
_DICTIONARY = ["municipality_code", "reason", "surname", "given_name", "surname_kana",
               "given_name_kana", "former_surname", "former_surname_kana", "alias",
               "cancels_municipality_code"]  # fmt: skip
_STATISTICS = ["municipality_code", "seq", "reason", "change_date", "notified_at"]
# Random digits barely compress (snappy saves 30% at four times the cost of writing them plain).
_COMPRESSION = {name: "none" if name in ("resident_code", "my_number") else "snappy"
                for name in SCHEMA.names}  # fmt: skip


def initial_file_name(prefecture: int, file_format: FileFormat) -> str:
    """Name of the initial-population file of prefecture index 0..46."""
    return f"0000-00-initial-{prefecture + 1:02d}.{file_format}"


def month_file_name(
    month: np.datetime64, part: int, prefecture: int, file_format: FileFormat
) -> str:
    """Name of a month's file: part 1 = everything but move-ins, part 2 = A2 move-ins."""
    return f"{month}-{part}-{prefecture + 1:02d}.{file_format}"


def _blocks() -> list[str]:
    """Index chome * 128 + banchi: chome 0 is a rural '45番地', else '三丁目12番'."""
    return [
        (f"{KANJI_DIGITS[c]}丁目{b}番" if c else f"{b}番地") for c in range(10) for b in range(128)
    ]


class Renderer:
    """Turns RowBatches into Arrow tables of SCHEMA, holding the small text tables once."""

    def __init__(self, names: NameTables, geo: Geography) -> None:
        self.municipality_code = pa.array(geo.code_text())
        self.address_head = pa.array(geo.address_heads())
        self.block = pa.array(_blocks())
        self.go = pa.array([""] + [f"{g}号" for g in range(1, 128)])
        self.surname = pa.array(names.surname)
        self.given_name = pa.array(names.given_name)
        # Readings repeat (斎藤 and 斉藤 are both サイトウ); Parquet writes a dictionary column
        # directly only when its dictionary is unique, so readings go through a map to one.
        self.surname_kana, self.surname_kana_of = _unique(names.surname_kana)
        self.given_name_kana, self.given_name_kana_of = _unique(names.given_name_kana)
        self.alias = pa.array(names.alias)
        self.reason = pa.array(REASONS)

    def table(self, rows: RowBatch) -> pa.Table:
        """The rows as a table of SCHEMA (text columns dictionary-encoded until written)."""
        former = rows["former_surname"]
        columns = {
            "municipality_code": _dict(rows["municipality"], self.municipality_code),
            "seq": pa.array(rows["seq"], pa.int64()),
            "reason": _dict(rows["reason"], self.reason),
            "change_date": pa.array(rows["change_date"], pa.date32()),
            "resident_code": _codes(rows["resident_code"], 11),
            "my_number": _codes(rows["my_number"], 12),
            "surname": _dict(rows["surname"], self.surname),
            "given_name": _dict(rows["given_name"], self.given_name),
            "surname_kana": _dict(self.surname_kana_of[rows["surname"]], self.surname_kana),
            "given_name_kana": _dict(
                self.given_name_kana_of[rows["given_name"]], self.given_name_kana
            ),
            "former_surname": _dict(former, self.surname),
            "former_surname_kana": _dict(
                np.where(former < 0, -1, self.surname_kana_of[former]), self.surname_kana
            ),
            "alias": _dict(rows["alias"], self.alias),
            "birth_date": pa.array(rows["birth_date"], pa.date32()),
            "sex": pa.array(rows["sex"], pa.int8()),
            "address": self._address(rows),
            "resident_kind": pa.array(rows["resident_kind"], pa.int8()),
            "protected": pa.array(rows["protected"], pa.bool_()),
            "previous_resident_code": _codes(rows["previous_resident_code"], 11),
            "cancels_municipality_code": _dict(
                rows["cancels_municipality"], self.municipality_code
            ),
            "cancels_seq": pa.array(rows["cancels_seq"], pa.int64(), mask=rows["cancels_seq"] < 0),
            "notified_at": pa.array(rows["notified_at"], pa.timestamp("us", tz="UTC")),
        }
        return pa.table(columns)

    def _address(self, rows: RowBatch) -> pa.Array:
        return pc.binary_join_element_wise(
            self.address_head.take(pa.array(rows["town"])),
            self.block.take(pa.array(rows["block"])),
            self.go.take(pa.array(rows["go"])),
            "",
        )


def _unique(values: list[str]) -> tuple[pa.Array, np.ndarray]:
    """(the distinct values, the index of each value among them)."""
    distinct = list(dict.fromkeys(values))
    position = {v: i for i, v in enumerate(distinct)}
    return pa.array(distinct), np.array([position[v] for v in values], dtype=np.int32)


def _dict(index: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    """Index into a text table as a dictionary array; a negative index is null."""
    mask = index < 0
    indices = pa.array(index.astype(np.int32), mask=mask if mask.any() else None)
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _codes(values: np.ndarray, width: int) -> pa.Array:
    valid = values >= 0
    return code_text(values, width, valid) if valid.any() else pa.nulls(len(values), pa.string())


def text_table(table: pa.Table) -> pa.Table:
    """The CSV text forms of SPEC §4: plain strings, and notified_at as ISO 8601 in Japan time."""
    columns = []
    for name in table.column_names:
        column = table[name]
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        elif name == "notified_at":
            us = pc.add(column.cast(pa.int64()), 9 * 3_600_000_000)  # UTC → Japan time
            local = pc.divide(us, 1_000_000).cast(pa.timestamp("s"))  # whole seconds
            column = pc.binary_join_element_wise(
                pc.strftime(local, format="%Y-%m-%dT%H:%M:%S"), pa.scalar("+09:00"), ""
            )
        columns.append(column)
    return pa.table(columns, names=table.column_names)


class NotificationWriter:
    """Writes one change-notification file in parts (row groups), Parquet or CSV."""

    def __init__(self, path: Path, file_format: FileFormat) -> None:
        self.path = path
        self.file_format = file_format
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.file_format == "csv":
            table = text_table(table)
        if self._writer is None:
            self._writer = self._open(table.schema)
        self._writer.write_table(table)

    def _open(self, schema: pa.Schema) -> pq.ParquetWriter | pacsv.CSVWriter:
        if self.file_format == "csv":
            options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
            return pacsv.CSVWriter(str(self.path), schema, write_options=options)
        # store_schema=False: the dictionary-encoded text columns are written (and read back) as
        # plain strings, the Parquet types of SCHEMA.
        return pq.ParquetWriter(
            str(self.path),
            schema,
            compression=_COMPRESSION,
            use_dictionary=_DICTIONARY,
            write_statistics=_STATISTICS,
            store_schema=False,
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def timestamps_us(day: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """µs since the epoch of `seconds` after midnight UTC of `day` (days since the epoch)."""
    return day.astype(np.int64) * US_PER_DAY + seconds.astype(np.int64) * 1_000_000

"""Column names, reason codes and the Arrow schemas of the store's tables (SPEC §1, §3, §4)."""

from __future__ import annotations

import pyarrow as pa

# SPEC §3: reason code → (small int id used by kernels, class).
REASONS: dict[str, int] = {
    "A1": 1, "A2": 2, "A3": 3, "A4": 4,
    "D1": 11, "D2": 12, "D3": 13, "D4": 14,
    "M1": 21, "M2": 22, "M3": 23, "M4": 24, "M5": 25, "M6": 26, "M7": 27,
    "X1": 31,
}  # fmt: skip
REASON_NAMES = {v: k for k, v in REASONS.items()}

# Status (SPEC §1) each reason sets; M* reasons keep the person's status (None).
REASON_STATUS: dict[str, int | None] = {
    "A1": 1, "A2": 1, "A3": 1, "A4": 1, "D1": 2, "D2": 9, "D3": 9, "D4": 9,
    "M1": None, "M2": None, "M3": None, "M4": None, "M5": None, "M6": None, "M7": None,
    "X1": None,
}  # fmt: skip

STATUS_REGISTERED, STATUS_MOVED_OUT, STATUS_REMOVED = 1, 2, 9

# Input columns of a change notification (SPEC §4), in the order of the §1 table where they are
# record columns.
RECORD_TEXT_COLUMNS = [
    "resident_code", "my_number", "surname", "given_name", "surname_kana", "given_name_kana",
    "former_surname", "former_surname_kana", "alias", "birth_date", "sex", "municipality_code",
    "address", "resident_kind", "protected",
]  # fmt: skip
NOTIFICATION_COLUMNS = [
    "municipality_code", "seq", "reason", "change_date",
    *[c for c in RECORD_TEXT_COLUMNS if c != "municipality_code"],
    "previous_resident_code", "cancels_municipality_code", "cancels_seq", "notified_at",
]  # fmt: skip
# SPEC §4: every record column of §1 but prefecture_code, status and the optional protected.
REQUIRED_INPUT_COLUMNS = [
    "municipality_code", "seq", "reason", "change_date", "resident_code", "my_number",
    "surname", "given_name", "surname_kana", "given_name_kana", "former_surname",
    "former_surname_kana", "alias", "birth_date", "sex", "address", "resident_kind",
]  # fmt: skip
OPTIONAL_INPUT_COLUMNS = [c for c in NOTIFICATION_COLUMNS if c not in REQUIRED_INPUT_COLUMNS]

# The identity record (SPEC §1) in table order.
RECORD_COLUMNS = [
    "resident_code", "my_number", "surname", "given_name", "surname_kana", "given_name_kana",
    "former_surname", "former_surname_kana", "alias", "birth_date", "sex", "municipality_code",
    "prefecture_code", "address", "resident_kind", "status", "protected",
]  # fmt: skip

UTC_US = pa.timestamp("us", tz="UTC")

RECORD_FIELDS = [
    pa.field("resident_code", pa.string()),
    pa.field("my_number", pa.string()),
    pa.field("surname", pa.string()),
    pa.field("given_name", pa.string()),
    pa.field("surname_kana", pa.string()),
    pa.field("given_name_kana", pa.string()),
    pa.field("former_surname", pa.string()),
    pa.field("former_surname_kana", pa.string()),
    pa.field("alias", pa.string()),
    pa.field("birth_date", pa.date32()),
    pa.field("sex", pa.int8()),
    pa.field("municipality_code", pa.string()),
    pa.field("prefecture_code", pa.string()),
    pa.field("address", pa.string()),
    pa.field("resident_kind", pa.int8()),
    pa.field("status", pa.int8()),
    pa.field("protected", pa.bool_()),
]
CHANGE_FIELDS = [
    pa.field("seq", pa.int64()),
    pa.field("reason", pa.string()),
    pa.field("change_date", pa.date32()),
    pa.field("previous_resident_code", pa.string()),
    pa.field("cancels_municipality_code", pa.string()),
    pa.field("cancels_seq", pa.int64()),
    pa.field("notified_at", UTC_US),
    pa.field("recorded_at", UTC_US),
]

# journal: every received row with its outcome; applied/released rows are the history.
OUTCOMES = ("applied", "released", "rejected", "held", "duplicate", "file")
JOURNAL_SCHEMA = pa.schema(
    [
        pa.field("batch", pa.int64()),  # the journal's Delta version written by this batch
        pa.field("file", pa.string()),
        pa.field("row", pa.int32()),  # 1-based data row in `file`
        pa.field("outcome", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("reject_column", pa.string()),
        pa.field("message", pa.string()),
        pa.field("sequenced", pa.bool_()),  # the row used its (municipality_code, seq)
        pa.field("apply_order", pa.int32()),  # order of application inside the batch
        pa.field("person", pa.int64()),  # internal person key: never exposed in outputs
        pa.field("version", pa.int32()),
        pa.field("issued_resident_code", pa.bool_()),  # this row issued its resident_code
        pa.field("issued_my_number", pa.bool_()),
        *RECORD_FIELDS,
        *CHANGE_FIELDS,
        pa.field("raw", pa.string()),  # text of held and rejected rows, as received (JSON)
    ]
)
# Parquet encodings of the journal's (nearly) distinct columns, instead of a dictionary the writer
# fills and abandons per row group: a 2 M-row file 31 % smaller, written 22 % faster, and reading
# a few thousand persons' histories from 126 M rows 4.8 → 3.5 s. Standard encodings (DuckDB,
# Spark and Polars read them).
JOURNAL_ENCODINGS = {
    "person": "DELTA_BINARY_PACKED", "apply_order": "DELTA_BINARY_PACKED",
    "row": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED",
    "notified_at": "DELTA_BINARY_PACKED",
    "resident_code": "DELTA_LENGTH_BYTE_ARRAY", "my_number": "DELTA_LENGTH_BYTE_ARRAY",
}  # fmt: skip

# Free-text columns: no reader prunes on them, so their files carry no row-group statistics
# (min/max of names and addresses were ~17 % of writing a month's journal rows). Every other
# column keeps them: outside readers (DuckDB, Spark) skip row groups on codes, dates and keys.
UNPRUNED_TEXT = frozenset({
    "surname", "given_name", "surname_kana", "given_name_kana", "former_surname",
    "former_surname_kana", "alias", "address", "raw", "message",
})  # fmt: skip

# current: per person the version in effect now (base + delta; newest delta row wins).
CURRENT_SCHEMA = pa.schema(
    [
        pa.field("person", pa.int64()),
        pa.field("version", pa.int32()),  # null: tombstone (every version cancelled)
        pa.field("last_version", pa.int32()),  # highest version number of the person
        *RECORD_FIELDS,
        *[f for f in CHANGE_FIELDS if f.name not in ("cancels_municipality_code", "cancels_seq")],
        pa.field("written_batch", pa.int64()),
        pa.field("written_order", pa.int32()),
    ]
)
# the compacted base's encodings (see JOURNAL_ENCODINGS): reading ~1 % of the persons of a
# 125 M base, key columns 1.23 → 0.81 s, the two codes 4.0 → 2.7 s
BASE_ENCODINGS = {
    "person": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED",
    "written_order": "DELTA_BINARY_PACKED",
    "resident_code": "DELTA_LENGTH_BYTE_ARRAY", "my_number": "DELTA_LENGTH_BYTE_ARRAY",
}  # fmt: skip

CODE_KIND = {"resident_code": 1, "my_number": 2}
CODES_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.int8()),  # 1 resident_code, 2 my_number
        pa.field("code", pa.int64()),
        pa.field("person", pa.int64()),
        pa.field("batch", pa.int64()),
    ]
)
# the sorted index's encodings: sorted codes delta-encode, persons are distinct (no dictionary);
# per 125 M codes, full reads 1.13 → 0.75 s, reads by person 1.9 → 1.4 s
CODE_ENCODINGS = {"code": "DELTA_BINARY_PACKED", "person": "PLAIN"}

POSITIONS_SCHEMA = pa.schema(
    [pa.field("municipality_code", pa.string()), pa.field("last_seq", pa.int64())]
)

HELD_SCHEMA = pa.schema(
    [
        pa.field("batch", pa.int64()),
        pa.field("file", pa.string()),
        pa.field("row", pa.int32()),
        pa.field("municipality_code", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("raw", pa.string()),
    ]
)

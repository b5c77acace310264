"""Reading change-notification files (SPEC §4) into their text form.

CSV (UTF-8 with optional BOM when the bytes are valid UTF-8, else CP932; `encoding` forces one)
or Parquet (typed as in §1 or text columns). Every column becomes text in the SPEC's text forms,
so one set of row rules (`engine.validate`) serves both formats.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from engine.codes import WIDTH
from engine.errors import InputRejected
from engine.schema import NOTIFICATION_COLUMNS, REQUIRED_INPUT_COLUMNS
from engine.validate import TYPED_NOTIFIED_AT

Encoding = Literal["utf-8", "cp932"]
CODE_COLUMNS = {
    "resident_code": WIDTH["resident_code"],
    "previous_resident_code": WIDTH["resident_code"],
    "my_number": WIDTH["my_number"],
    "municipality_code": WIDTH["municipality_code"],
    "cancels_municipality_code": WIDTH["municipality_code"],
}


@dataclass(frozen=True)
class NotificationFile:
    """One file's rows as text (NOTIFICATION_COLUMNS + 1-based `row`) and its SHA-256."""

    path: str
    sha256: str
    rows: pl.DataFrame


def detect_encoding(data: bytes) -> Encoding:
    """UTF-8 when the bytes are valid UTF-8, else CP932 (SPEC §4)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "cp932"
    return "utf-8"


def _decode(path: str, data: bytes, encoding: Encoding | None) -> str:
    encoding = encoding or detect_encoding(data)
    try:
        text = data.decode("utf-8-sig" if encoding == "utf-8" else "cp932")
    except UnicodeDecodeError as e:
        raise InputRejected.unreadable(path, f"not valid {encoding} text (byte {e.start})") from None
    return text


def _read_csv(path: str, data: bytes, encoding: Encoding | None) -> pl.DataFrame:
    text = _decode(path, data, encoding)
    try:
        return pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            infer_schema=False,
            null_values=[""],
        )
    except (pl.exceptions.PolarsError, OSError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputRejected.unreadable(path, f"not a readable CSV file ({cause})") from None


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Typed Parquet columns → the SPEC's text forms (codes zero-padded)."""
    exprs = []
    for name, dtype in frame.schema.items():
        c = pl.col(name)
        if dtype == pl.String:
            e = pl.when(c != "").then(c)
        elif dtype == pl.Date:
            e = c.dt.to_string("%Y-%m-%d")
        elif isinstance(dtype, pl.Datetime):
            fmt = "%Y-%m-%dT%H:%M:%S%.f" + ("%:z" if dtype.time_zone else "")
            e = c.dt.to_string(fmt)
        elif dtype == pl.Boolean:
            e = pl.when(c).then(pl.lit("true")).when(~c).then(pl.lit("false"))
        elif dtype.is_integer() and name in CODE_COLUMNS:
            e = c.cast(pl.String).str.zfill(CODE_COLUMNS[name])
        else:
            e = c.cast(pl.String)
        exprs.append(e.alias(name))
    return frame.select(exprs)


def _read_parquet(path: str) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
        text = _as_text(frame)
        dtype = frame.schema.get("notified_at")
        if isinstance(dtype, pl.Datetime):
            # Keep the typed stamp too: the row rules then need not parse the text back.
            stamp = frame["notified_at"].dt.cast_time_unit("us")
            if dtype.time_zone is None:  # SPEC §5: without a zone, Japan time
                stamp = stamp.dt.replace_time_zone("Asia/Tokyo")
            text = text.with_columns(stamp.dt.convert_time_zone("UTC").alias(TYPED_NOTIFIED_AT))
        return text
    except (pl.exceptions.PolarsError, OSError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputRejected.unreadable(path, f"not a readable Parquet file ({cause})") from None


def read_notifications(path: str | Path, *, encoding: Encoding | None = None) -> NotificationFile:
    """Read one notification file; InputRejected (exit 4) when unreadable or columns are missing."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputRejected.unreadable(name, e.strerror or "cannot be read") from None
    digest = hashlib.sha256(data).hexdigest()
    if data[:4] == b"PAR1":
        frame = _read_parquet(name)
    elif name.lower().endswith(".parquet"):
        raise InputRejected.unreadable(name, "not a readable Parquet file (no Parquet magic bytes)")
    else:
        frame = _read_csv(name, data, encoding)
    missing = [c for c in REQUIRED_INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise InputRejected.unreadable(name, f"missing required column(s): {', '.join(missing)}")
    absent = [pl.lit(None, pl.String).alias(c) for c in NOTIFICATION_COLUMNS if c not in frame.columns]
    typed = [TYPED_NOTIFIED_AT] if TYPED_NOTIFIED_AT in frame.columns else []
    rows = frame.with_columns(absent).select(
        *[pl.col(c).cast(pl.String) for c in NOTIFICATION_COLUMNS],
        *typed,
        row=pl.int_range(1, pl.len() + 1, dtype=pl.Int32),
    )
    return NotificationFile(path=name, sha256=digest, rows=rows)

"""Files around issuance (SPEC §2.4): a file of resident codes in, a file of My Numbers out.

`juki codes issue --kind my-number --resident-codes FILE --out FILE`: FILE is CSV (UTF-8, header)
or Parquet with a `resident_code` column read as text; the output has one row per input row,
`resident_code` and `my_number`, Parquet (CSV when its name ends in `.csv`), written after the
derivations are committed, to a temporary name then renamed (a crash in between leaves the
numbers derived; a re-run gives the same file). `juki codes draw --out FILE` writes the drawn
codes the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.errors import InputRejected, UsageError
from engine.issuance import derive_my_numbers
from engine.store import Store


@dataclass(frozen=True)
class DerivedFile:
    """What `issue_my_numbers_file` wrote."""

    path: str
    rows: int
    resident_codes: int  # distinct

    def to_json(self) -> dict[str, object]:
        return {"kind": "my-number", "out": self.path, "rows": self.rows,
                "resident_codes": self.resident_codes}  # fmt: skip


def read_resident_codes(path: str | Path) -> list[str]:
    """The `resident_code` column of a CSV or Parquet file, as text, in file order."""
    p = Path(path)
    if not p.is_file():
        raise UsageError.missing_file(path)
    try:
        with open(p, "rb") as f:
            parquet = f.read(4) == b"PAR1"
        scan = (pl.scan_parquet(p) if parquet else
                pl.scan_csv(p, infer_schema=False, null_values=[""], encoding="utf8"))  # fmt: skip
        names = {c.lstrip("\ufeff"): c for c in scan.collect_schema().names()}
        if "resident_code" not in names:
            raise InputRejected.unreadable(path, "missing required column: resident_code")
        column = pl.col(names["resident_code"])
        dtype = scan.collect_schema()[names["resident_code"]]
        text = column.cast(pl.String).str.zfill(11) if dtype.is_integer() else column.cast(pl.String)
        return scan.select(text).collect().to_series().to_list()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputRejected.unreadable(path, f"not a readable CSV or Parquet file ({cause})") from None


def write_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Parquet (CSV for a `.csv` name) to a temporary name in the directory, fsync, rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    if target.suffix.lower() == ".csv":
        frame.write_csv(tmp)
    else:
        frame.write_parquet(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(target)
    return target


def issue_my_numbers_file(store: Store, resident_codes: str | Path, out: str | Path, *,
                          key: bytes) -> DerivedFile:  # fmt: skip
    """Derive a My Number per resident code of the file (committed), then write `out`."""
    codes = read_resident_codes(resident_codes)
    if not codes:
        raise InputRejected.unreadable(resident_codes, "no resident codes")
    try:
        mapping = derive_my_numbers(store, codes, key=key)
    except InputRejected as e:
        raise InputRejected.unreadable(resident_codes, str(e)) from None
    write_atomic(mapping, out)
    return DerivedFile(str(out), mapping.height, len(set(codes)))


def write_codes(codes: Sequence[str], path: str | Path) -> Path:
    """A file with one `resident_code` column (drawn codes handed to a municipality)."""
    return write_atomic(pl.DataFrame({"resident_code": list(codes)}, schema={"resident_code": pl.String}), path)

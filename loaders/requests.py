"""Request and target files (SPEC §5): CSV (UTF-8, header row) or Parquet, with a `my_number`
or a `resident_code` column read as text (`my_number` wins when both are present).

Only the code column is read. Integer-typed Parquet codes are zero-padded to the code's width.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.codes import WIDTH
from engine.errors import InputRejected, UsageError
from engine.resolve import CodeColumn


@dataclass(frozen=True)
class RequestFile:
    """The codes of a request file: `request_row` (1-based data row) and `code` (text or null)."""

    path: str
    kind: CodeColumn
    codes: pl.DataFrame
    sha256: str


def _pick(columns: list[str], path: str) -> CodeColumn:
    for kind in ("my_number", "resident_code"):
        if kind in columns:
            return kind  # type: ignore[return-value]
    raise InputRejected.unreadable(path, "missing required column: my_number or resident_code")


def read_request(path: str | Path) -> RequestFile:
    """Read a request or target file; UsageError when missing, InputRejected when unreadable."""
    name = str(path)
    p = Path(path)
    if not p.is_file():
        raise UsageError.missing_file(name)
    # hashed in a thread while the file is parsed (hashlib releases the GIL): 1 s of 100 M targets
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="juki-sha256")
    digest_of = hashing.submit(_sha256, p)
    hashing.shutdown(wait=False)
    with _unreadable(name):
        scan, column, kind = _scan(p)
        dtype = scan.collect_schema()[column]
        code = pl.col(column)
        if dtype.is_integer():
            code = code.cast(pl.String).str.zfill(WIDTH[kind])
        elif dtype != pl.String:
            code = code.cast(pl.String)
        frame = scan.select(
            request_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
            code=code,
        ).collect()
    return RequestFile(name, kind, frame, digest_of.result())


def request_kind(path: str | Path) -> CodeColumn:
    """The code column a request file names requests by, from its header alone (read_request
    reads it the same way; the same errors)."""
    if not Path(path).is_file():
        raise UsageError.missing_file(str(path))
    with _unreadable(str(path)):
        return _scan(Path(path))[2]


def _scan(p: Path) -> tuple[pl.LazyFrame, str, CodeColumn]:
    """The file's scan, its code column's name and kind."""
    name = str(p)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        scan = pl.scan_parquet(p)
    elif name.lower().endswith(".parquet"):
        raise InputRejected.unreadable(name, "not a readable Parquet file (no magic bytes)")
    else:
        scan = pl.scan_csv(p, infer_schema=False, null_values=[""], encoding="utf8-lossy")
    names = scan.collect_schema().names()
    kind = _pick([c.lstrip("\ufeff") for c in names], name)
    return scan, next(c for c in names if c.lstrip("\ufeff") == kind), kind


@contextmanager
def _unreadable(name: str) -> Iterator[None]:
    """Polars, OS and decoding errors as InputRejected naming the file and the first line."""
    try:
        yield
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputRejected.unreadable(name, f"not a readable request file ({cause})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

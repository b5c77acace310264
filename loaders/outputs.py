"""Output files handed to agencies (SPEC §5) and their manifests, written safely (DESIGN Safety).

Parquet by default (Arrow types of SPEC §1: `string`, `date32`, `int8`, …), or CSV (UTF-8, or
CP932 with the SPEC's variant mapping and 〓 for what CP932 lacks, counted as
`replaced_characters`). The file is written to a temporary name in the target directory,
fsynced and renamed into place; the manifest `FILE.manifest.json` (request id, agency, affair,
parameters, rows, SHA-256 of the file) comes last the same way. Same rows, same bytes.
"""

from __future__ import annotations

import codecs
import contextvars
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import UsageError

OutputFormat = Literal["parquet", "csv"]
OutputEncoding = Literal["utf-8", "cp932"]

# SPEC §5: the usual JIS/Unicode variants mapped to their CP932 forms before encoding.
CP932_VARIANTS = str.maketrans({
    "\u301c": "\uff5e", "\u2016": "\u2225", "\u2212": "\uff0d", "\u00a2": "\uffe0",
    "\u00a3": "\uffe1", "\u00ac": "\uffe2", "\u2014": "\u2015",
})  # fmt: skip
GETA = "\u3013"  # 〓, written for a character CP932 lacks


@dataclass(frozen=True)
class OutputOptions:
    """Where and how a result is written."""

    path: Path
    format: OutputFormat = "parquet"
    encoding: OutputEncoding = "utf-8"

    def check(self) -> None:
        """Usage errors before any work: CP932 is a CSV encoding."""
        if self.encoding == "cp932" and self.format != "csv":
            raise UsageError("--encoding cp932: only for --format csv")

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + ".manifest.json")


@dataclass(frozen=True)
class Written:
    path: Path
    rows: int
    sha256: str
    replaced_characters: int


def arrow_table(frame: pl.DataFrame) -> pa.Table:
    """The frame with SPEC types: plain `string` and `list<string>` (Polars hands large ones)."""
    table = frame.to_arrow()
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_large_list(t) or pa.types.is_list(t):
            t = pa.list_(pa.string()) if _is_text(t.value_type) else pa.list_(t.value_type)
        fields.append(pa.field(f.name, t))
    return table.cast(pa.schema(fields))


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_large_string(t) or pa.types.is_string(t) or pa.types.is_string_view(t)


def _csv_text(frame: pl.DataFrame) -> str:
    lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
    flat = frame.with_columns([pl.col(n).cast(pl.List(pl.String)).list.join(";") for n in lists])
    return flat.write_csv()


_replaced: contextvars.ContextVar[list[int]] = contextvars.ContextVar("juki_replaced")


def _geta(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: 〓 for each character CP932 lacks, counted for the manifest."""
    assert isinstance(error, UnicodeEncodeError)
    n = error.end - error.start
    _replaced.get()[0] += n
    return GETA * n, error.end


codecs.register_error("juki-geta", _geta)


def encode_cp932(text: str) -> tuple[bytes, int]:
    """CP932 bytes of the text after the variant mapping, and how many characters became 〓."""
    counter = [0]
    token = _replaced.set(counter)
    try:
        data = text.translate(CP932_VARIANTS).encode("cp932", errors="juki-geta")
    finally:
        _replaced.reset(token)
    return data, counter[0]


def render(frame: pl.DataFrame, options: OutputOptions) -> tuple[bytes, int]:
    """The bytes of the output file and the count of replaced characters."""
    if options.format == "csv":
        text = _csv_text(frame)
        if options.encoding == "cp932":
            return encode_cp932(text)
        return text.encode("utf-8"), 0
    sink = io.BytesIO()
    pq.write_table(arrow_table(frame), sink, compression="zstd")
    return sink.getvalue(), 0


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_output(
    frame: pl.DataFrame, options: OutputOptions, manifest: dict[str, Any]
) -> Written:
    """Write the result, then its manifest (`manifest` + rows, SHA-256, format, encoding)."""
    data, replaced = render(frame, options)
    digest = hashlib.sha256(data).hexdigest()
    write_atomically(options.path, data)
    text = manifest_bytes(manifest, options, rows=frame.height, sha256=digest, replaced=replaced)
    write_atomically(options.manifest_path, text)
    return Written(options.path, frame.height, digest, replaced)


def manifest_bytes(
    manifest: dict[str, Any], options: OutputOptions, *, rows: int, sha256: str, replaced: int
) -> bytes:
    """The manifest's bytes: `manifest` + file name, format, encoding, rows, SHA-256."""
    body = {
        **manifest,
        "file": options.path.name,
        "format": options.format,
        "encoding": options.encoding if options.format == "csv" else None,
        "rows": rows,
        "sha256": sha256,
        "replaced_characters": replaced,
    }
    return (json.dumps(body, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")

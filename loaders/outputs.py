"""Output files handed to agencies (SPEC §5) and their manifests, written safely (DESIGN Safety).

Parquet by default (Arrow types of SPEC §1: `string`, `date32`, `int8`, …), or CSV (UTF-8, or
CP932 with the SPEC's variant mapping and 〓 for what CP932 lacks, counted as
`replaced_characters`). The file is written to a temporary name in the target directory,
fsynced and renamed into place; the manifest `FILE.manifest.json` (request id, agency, affair,
parameters, rows, SHA-256 of the file) comes last the same way. Same rows, same bytes.
"""

from __future__ import annotations

import codecs
import contextlib
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
    """The frame as Arrow without copying its text (Polars' string views), lists of text as
    `list<string>`; written with no stored Arrow schema, the Parquet logical types give readers
    the SPEC's types (`string`, `date32`, `int8`, `timestamp[us, UTC]`, lists)."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t):
            t = pa.string_view()
        elif pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
            t = pa.list_(pa.string()) if _is_text(t.value_type) else pa.list_(t.value_type)
        fields.append(pa.field(f.name, t))
    return table.cast(pa.schema(fields))


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_large_string(t) or pa.types.is_string(t) or pa.types.is_string_view(t)


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
    sink = io.BytesIO()
    writer = _Encoder(sink, options)
    writer.write(frame)
    writer.close()
    return sink.getvalue(), writer.replaced


class _Encoder:
    """Encodes frames one after another into one Parquet or CSV byte stream."""

    def __init__(self, sink: Any, options: OutputOptions) -> None:
        self.sink, self.options = sink, options
        self.replaced = 0
        self._parquet: pq.ParquetWriter | None = None
        self._header = True

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame | pa.Table:
        """What `write` encodes: the Arrow table of SPEC types for Parquet."""
        return frame if self.options.format == "csv" else arrow_table(frame)

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        if self.options.format == "csv":
            assert isinstance(frame, pl.DataFrame)
            lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
            text = frame.with_columns(
                [pl.col(n).cast(pl.List(pl.String)).list.join(";") for n in lists]
            ).write_csv(include_header=self._header)
            self._header = False
            if self.options.encoding == "cp932":
                data, replaced = encode_cp932(text)
                self.replaced += replaced
            else:
                data = text.encode("utf-8")
            self.sink.write(data)
            return
        table = frame if isinstance(frame, pa.Table) else arrow_table(frame)
        if self._parquet is None:
            # statistics of the non-text columns only: min/max of names and addresses cost
            # time and help no reader
            stats = [f.name for f in table.schema if not _is_text(f.type)
                     and not pa.types.is_list(f.type)]  # fmt: skip
            self._parquet = pq.ParquetWriter(self.sink, table.schema, compression="snappy",
                                             store_schema=False, write_statistics=stats)  # fmt: skip
        self._parquet.write_table(table.cast(self._parquet.schema))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


class _HashingFile:
    """A write-only file that keeps the SHA-256 of what passes through it."""

    def __init__(self, file: Any) -> None:
        self.file, self.sha256 = file, hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        self.file.write(data)
        self.sha256.update(data)
        return len(memoryview(data))

    def tell(self) -> int:
        return int(self.file.tell())

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.closed = True


class OutputWriter:
    """An output written in parts (a national extract streams slice by slice) to a temporary
    name in the target directory; `finish` fsyncs, renames into place and writes the manifest
    (DESIGN Safety), `abort` leaves nothing behind."""

    def __init__(self, options: OutputOptions) -> None:
        options.path.parent.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.rows = 0
        self._tmp = options.path.with_name(f".{options.path.name}.{os.getpid()}.tmp")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed by finish or abort
        self._hashing = _HashingFile(self._file)
        self._encoder = _Encoder(self._hashing, options)

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame | pa.Table:
        """Convert a part for `write` (done by the caller's thread while `write` encodes the
        previous part in another)."""
        return self._encoder.prepare(frame)

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        self._encoder.write(frame)
        self.rows += frame.height if isinstance(frame, pl.DataFrame) else frame.num_rows

    def finish(self, manifest: dict[str, Any]) -> Written:
        """Close, fsync, rename into place, then the manifest the same way."""
        self._encoder.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.options.path)
        _fsync_directory(self.options.path.parent)
        digest = self._hashing.sha256.hexdigest()
        replaced = self._encoder.replaced
        text = manifest_bytes(manifest, self.options, rows=self.rows, sha256=digest,
                              replaced=replaced)  # fmt: skip
        write_atomically(self.options.manifest_path, text)
        return Written(self.options.path, self.rows, digest, replaced)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._encoder.close()
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    _fsync_directory(path.parent)


def write_output(
    frame: pl.DataFrame, options: OutputOptions, manifest: dict[str, Any]
) -> Written:
    """Write the result, then its manifest (`manifest` + rows, SHA-256, format, encoding)."""
    writer = OutputWriter(options)
    try:
        writer.write(frame)
        return writer.finish(manifest)
    except BaseException:
        writer.abort()
        raise


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

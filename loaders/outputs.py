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
import queue
import threading
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
BUFFER = 8 << 20  # bytes of an output file collected natively before they reach Python


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


def arrow_table(frame: pl.DataFrame, *, contiguous: bool = False) -> pa.Table:
    """The frame as Arrow without copying its text (Polars' string views), lists of text as
    `list<string>`; written with no stored Arrow schema, the Parquet logical types give readers
    the SPEC's types (`string`, `date32`, `int8`, `timestamp[us, UTC]`, lists). `contiguous`:
    the text copied end to end instead, for rows gathered from all over memory (a lookup's:
    their encoding reads every string once more, 0.9 → 0.67 s per 1 M rows, for a 0.3 s copy
    on a thread that is free)."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t) or (contiguous and pa.types.is_string_view(t)):
            t = pa.string() if contiguous else pa.string_view()
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

    def prepare(self, frame: pl.DataFrame, *, contiguous: bool = False) -> pl.DataFrame | pa.Table:
        """What `write` encodes: the Arrow table of SPEC types for Parquet (`arrow_table`)."""
        if self.options.format == "csv":
            return frame
        return arrow_table(frame, contiguous=contiguous)

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
            self._parquet = pq.ParquetWriter(self.sink, table.schema, store_schema=False,
                                             write_statistics=stats, **_layout(table.schema))  # fmt: skip
        self._parquet.write_table(table.cast(self._parquet.schema))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


# Columns of one value per person: a dictionary is built, overflows and is dropped in every
# column chunk. The codes' random digits gain ~30 % from Snappy at the cost of a third of a
# national extract's encoding time (125 M rows: 3.0 → 3.6 GB for ~15 s less on one core).
_UNIQUE_CODES = {"resident_code", "my_number"}
_UNIQUE_TEXT = {"address", "previous_address"}


def _layout(schema: pa.Schema) -> dict[str, Any]:
    """ParquetWriter options per column (leaf paths: a list's is `name.list.element`)."""
    paths = {f.name: f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name
             for f in schema}  # fmt: skip
    return {
        "compression": {p: "none" if n in _UNIQUE_CODES else "snappy" for n, p in paths.items()},
        "use_dictionary": [p for n, p in paths.items() if n not in _UNIQUE_CODES | _UNIQUE_TEXT],
        "write_batch_size": 1 << 16,  # values per call into the encoders (default 1,024)
    }


WRITEBACK = 256 * 2**20  # bytes of output after which their writing to the disk is started


class _HashingFile:
    """A write-only file that keeps the SHA-256 of what passes through it. The hashing and the
    writing are done in order by a thread of its own, so the encoder goes on meanwhile (a
    national extract: ~10 s of its 3.6 GB); `drain` waits for them and raises their error."""

    def __init__(self, file: Any) -> None:
        self.file, self.sha256 = file, hashlib.sha256()
        self.closed = False
        self._position = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # ≤ 32 MiB waiting
        self._thread = threading.Thread(target=self._run, name="juki-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        written = started = 0  # bytes written; where the writeback not yet started begins
        while (data := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self.file.write(data)
                    self.sha256.update(data)
                    written += len(data)
                    if written - started >= WRITEBACK and hasattr(os, "posix_fadvise"):
                        started = self._write_back(started, written)
            except BaseException as e:  # noqa: BLE001 - raised on the writer's thread by `drain`
                self._error = e
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write_back(self, start: int, end: int) -> int:
        """Start writing [start, end) to the disk now (Linux starts the writeback of a range it
        is advised to drop; it returns at once): the final fsync of a national extract then
        waits for the last part only, not for the ~2 GB still dirty (~3 s)."""
        self.file.flush()
        os.posix_fadvise(self.file.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
        return end

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: Any) -> int:
        self._check()
        chunk = bytes(data)  # (a view of Arrow's buffer is reused once this returns)
        self._queue.put(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._queue.join()
        self._check()

    def close(self) -> None:
        self.closed = True

    def drain(self) -> None:
        """Wait for every byte to be written and hashed, end the thread; raises its error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._check()


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
        # Parquet pages reach Python (hash, file) 8 MiB at a time: one call per page (~100 k for
        # a national extract, each taking the GIL) held the encoding thread for ~11 s of 90
        self._stream = pa.BufferedOutputStream(pa.PythonFile(self._hashing, mode="w"), BUFFER)
        self._encoder = _Encoder(self._stream if options.format == "parquet" else self._hashing,
                                 options)  # fmt: skip

    def prepare(self, frame: pl.DataFrame, *, contiguous: bool = False) -> pl.DataFrame | pa.Table:
        """Convert a part for `write` (done by the caller's thread while `write` encodes the
        previous part in another; `contiguous`: see `arrow_table`)."""
        return self._encoder.prepare(frame, contiguous=contiguous)

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        self._encoder.write(frame)
        self.rows += frame.height if isinstance(frame, pl.DataFrame) else frame.num_rows

    def seal(self) -> None:
        """Close and fsync the file under its temporary name (the output is complete and
        durable, not yet published); `finish` does it when not done already."""
        if self._file.closed:
            return
        self._encoder.close()
        self._stream.close()  # the last buffered bytes; closes only the hashing wrapper
        self._hashing.drain()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def finish(self, manifest: dict[str, Any]) -> Written:
        """Seal, rename into place, then the manifest the same way."""
        self.seal()
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
        with contextlib.suppress(Exception):
            self._stream.close()
        with contextlib.suppress(BaseException):
            self._hashing.drain()
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

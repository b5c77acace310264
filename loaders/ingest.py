"""`juki ingest`: read notification files and apply them to the store, one batch per file."""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import InputRejected, UsageError
from engine.ingest import BatchSummary, IngestSession
from engine.store import Store
from engine.validate import validate_rows
from loaders.notifications import Encoding, NotificationFile, read_notifications

# Files are read ahead in groups of about this many rows, so that the store is asked once per
# group for the state of every person the group names (a month of national changes is one group).
GROUP_ROWS = 2_000_000


@dataclass(frozen=True)
class FileError:
    file: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "error": self.error}


@dataclass(frozen=True)
class IngestReport:
    """Per-file outcomes of one call, in the order given."""

    files: list[BatchSummary | FileError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 4 if any(isinstance(f, FileError) for f in self.files) else 0

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files if isinstance(f, BatchSummary))


def rejects_paths(files: Sequence[str], directory: Path) -> dict[str, Path]:
    """DIR/<stem>.rejects.csv, with .2, .3 … for stems repeated within one call (SPEC §4)."""
    seen: dict[str, int] = {}
    out = {}
    for i, f in enumerate(files):
        name = Path(f).name
        stem = name.rsplit(".", 1)[0] if "." in name else name
        seen[stem] = seen.get(stem, 0) + 1
        n = seen[stem]
        out[f"{i}"] = directory / (f"{stem}.rejects.csv" if n == 1 else f"{stem}.{n}.rejects.csv")
    return out


def _write_rejects(path: Path, rejects: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    rejects.select("file", "row", "municipality_code", "seq", "column", "rule", "message").write_csv(tmp)
    tmp.replace(path)


# Small files are read two at a time, up to this many bytes ahead of the one being grouped (a
# month's 94 files: 0.89 → 0.70 s); a large file (an initial load's) is read alone, Polars
# reading it on both cores, and never while another is held ahead (memory follows the group).
READ_AHEAD_BYTES = 64 * 2**20


def _size(name: str) -> int:
    try:
        return Path(name).stat().st_size
    except OSError:
        return 0  # read_notifications reports it


def _read_files(
    names: Sequence[str], encoding: Encoding | None
) -> Iterator[tuple[int, NotificationFile | FileError]]:
    """Each file read (a FileError when unreadable), in the order given."""

    def read(name: str) -> NotificationFile | FileError:
        try:
            return read_notifications(name, encoding=encoding)
        except InputRejected as e:
            return FileError(name, str(e))

    sizes = [_size(n) for n in names]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="juki-read") as pool:
        pending: deque[Future[NotificationFile | FileError]] = deque()
        ahead, nxt = 0, 0
        for i in range(len(names)):
            while nxt < len(names) and (nxt == i or ahead + sizes[nxt] <= READ_AHEAD_BYTES):
                pending.append(pool.submit(read, names[nxt]))
                ahead += sizes[nxt]
                nxt += 1
            f = pending.popleft().result()
            ahead -= sizes[i]
            yield i, f


def _groups(
    names: Sequence[str], encoding: Encoding | None
) -> Iterator[list[tuple[int, NotificationFile | FileError]]]:
    """Read files ahead in groups of about GROUP_ROWS rows (an unreadable file is a FileError);
    a file of more than GROUP_ROWS rows is a group of its own (applied in parts)."""
    group: list[tuple[int, NotificationFile | FileError]] = []
    rows = 0
    for i, f in _read_files(names, encoding):
        if isinstance(f, NotificationFile):
            if f.rows.height > GROUP_ROWS and group:
                yield group
                group, rows = [], 0
            rows += f.rows.height
        group.append((i, f))
        if rows >= GROUP_ROWS:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _check_group(session: IngestSession, files: list[NotificationFile]) -> pl.DataFrame | None:
    """Load the state the group names and run the row rules over all its rows at once."""
    if not files:
        return None
    rows = pl.concat([f.rows for f in files], how="diagonal").with_columns(
        _pos=pl.int_range(pl.len(), dtype=pl.Int64)
    )
    # the row rules need no state: they run beside the state's reads (~1 s of a month)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="juki-rules") as pool:
        checked = pool.submit(validate_rows, rows)
        session.ensure(session.needing_state(rows))
        return checked.result()


def _apply_in_parts(session: IngestSession, f: NotificationFile) -> BatchSummary:
    """A file larger than GROUP_ROWS, applied GROUP_ROWS rows at a time as one batch (memory
    follows the part, not the file: a national initial load has a 14 M-row Tokyo file)."""
    summary = None
    session.begin_parts(f.path, f.sha256)
    for start in range(0, f.rows.height, GROUP_ROWS):
        part = NotificationFile(f.path, f.sha256, f.rows.slice(start, GROUP_ROWS))
        summary = session.apply_chunk(f.path, part.rows, f.sha256,
                                      checked=_check_group(session, [part]),
                                      last=start + GROUP_ROWS >= f.rows.height)  # fmt: skip
    assert summary is not None
    return summary


def ingest_files(
    store: Store,
    paths: Sequence[str | Path],
    *,
    rejects_dir: str | Path | None = None,
    encoding: Encoding | None = None,
    wait: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_file: Callable[[BatchSummary | FileError], None] | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> IngestReport:
    """Apply the files in the order given; every row applied, rejected, held or a duplicate.

    `clock` stamps `recorded_at` (default: the wall clock); the demo back-fills past months with
    it, as if their files had been received then."""
    names = [str(p) for p in paths]
    for name in names:
        if not Path(name).is_file():
            raise UsageError.missing_file(name)
    started = time.perf_counter()
    report = IngestReport()
    targets = rejects_paths(names, Path(rejects_dir)) if rejects_dir is not None else {}
    done = 0

    def deliver(result: BatchSummary | FileError, index: int) -> None:
        nonlocal done
        if isinstance(result, BatchSummary) and result.rejects is not None and targets:
            if result.rejects.height:
                _write_rejects(targets[str(index)], result.rejects)
        report.files.append(result)
        done += 1
        if on_file:
            on_file(result)
        if progress:
            progress(done, len(names))

    with store.writer("juki ingest", wait=wait):
        session = IngestSession(store) if clock is None else IngestSession(store, clock=clock)
        for group in _groups(names, encoding):
            readable = [f for _, f in group if isinstance(f, NotificationFile)]
            summaries = iter(())
            if len(readable) == 1 and readable[0].rows.height > GROUP_ROWS:
                summaries = iter([_apply_in_parts(session, readable[0])])
            elif readable:
                checked = _check_group(session, readable)
                summaries = iter(session.apply_group(
                    [(f.path, f.rows, f.sha256) for f in readable], checked=checked))  # fmt: skip
            session.checkpoint()  # results are reported once their batches are committed
            for index, f in group:
                deliver(f if isinstance(f, FileError) else next(summaries), index)
        session.finish()
    return IngestReport(files=report.files, seconds=time.perf_counter() - started)

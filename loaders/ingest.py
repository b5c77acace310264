"""`juki ingest`: read notification files and apply them to the store, one batch per file."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import InputRejected, UsageError
from engine.ingest import BatchSummary, IngestSession
from engine.store import Store
from loaders.notifications import Encoding, NotificationFile, read_notifications

# Files are read ahead in groups of about this many rows, so that the store is asked once per
# group for the state of every person the group names (a month of national changes is one group).
GROUP_ROWS = 4_000_000


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


def ingest_files(
    store: Store,
    paths: Sequence[str | Path],
    *,
    rejects_dir: str | Path | None = None,
    encoding: Encoding | None = None,
    wait: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_file: Callable[[BatchSummary | FileError], None] | None = None,
) -> IngestReport:
    """Apply the files in the order given; every row applied, rejected, held or a duplicate."""
    names = [str(p) for p in paths]
    for name in names:
        if not Path(name).is_file():
            raise UsageError.missing_file(name)
    started = time.perf_counter()
    report = IngestReport()
    targets = rejects_paths(names, Path(rejects_dir)) if rejects_dir is not None else {}
    with store.writer("juki ingest"):
        session = IngestSession(store)
        i = 0
        while i < len(names):
            group: list[tuple[int, NotificationFile | FileError]] = []
            rows = 0
            while i < len(names) and (not group or rows < GROUP_ROWS):
                try:
                    f = read_notifications(names[i], encoding=encoding)
                    rows += f.rows.height
                    group.append((i, f))
                except InputRejected as e:
                    group.append((i, FileError(names[i], str(e))))
                i += 1
            readable = [f.rows for _, f in group if isinstance(f, NotificationFile)]
            if readable:
                session.ensure(pl.concat(readable))
            for index, f in group:
                if isinstance(f, NotificationFile):
                    result: BatchSummary | FileError = session.apply_batch(
                        f.path, f.rows, sha256=f.sha256, prepared=True
                    )
                    assert isinstance(result, BatchSummary)
                    if result.rejects is not None and result.rejects.height and targets:
                        _write_rejects(targets[str(index)], result.rejects)
                else:
                    result = f
                report.files.append(result)
                if on_file:
                    on_file(result)
                if progress:
                    progress(index + 1, len(names))
        session.finish()
    return IngestReport(files=report.files, seconds=time.perf_counter() - started)

"""One provision request end to end (SPEC §5, §6; DESIGN Safety "one-shot outputs").

authorise (a refusal is recorded and exits 3, nothing else written) → compute the rows and
write them to a temporary name → commit the provision records (keyed by the request id) → fsync,
rename → manifest → the request row. A crash in between over-records, the safe failure for an
audit log; the output never appears without its records. Every service (lookup, changes,
extracts, stats) goes through `provide`.

A national extract streams: its rows come in parts (slices of persons), each part written while
the next is computed, its records gathered compactly and committed in one commit at the end.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.access import Grant, authorize
from engine.dates import iso_jst
from engine.errors import JukiError
from engine.provision import FLUSH_RECORDS, ProvisionBatch
from engine.requests import record_request
from engine.store import Store
from loaders.outputs import OutputOptions, OutputWriter

RECORDS_AHEAD = 2  # parts whose records may wait to be gathered


@dataclass(frozen=True)
class Provision:
    """What a service computed: the output rows, and per provided row its record
    (`resident_code`, `columns`); `provided` is None for aggregates (nothing recorded).
    A streamed result gives `parts` instead (`count` of them, for progress)."""

    table: pl.DataFrame | None
    provided: pl.DataFrame | None
    parts: Iterable[tuple[pl.DataFrame, pl.DataFrame | None]] | None = None
    count: int = 1
    scattered: bool = False  # rows gathered from all over memory (written from a copy)

    @staticmethod
    def streamed(
        parts: Iterable[tuple[pl.DataFrame, pl.DataFrame | None]], count: int,
        *, scattered: bool = False,
    ) -> Provision:  # fmt: skip
        return Provision(None, None, parts, count, scattered)

    def all_parts(self) -> Iterable[tuple[pl.DataFrame, pl.DataFrame | None]]:
        if self.parts is not None:
            return self.parts
        assert self.table is not None
        return [(self.table, self.provided)]


@dataclass(frozen=True)
class ProvideSummary:
    request_id: str
    rows: int
    recorded: int
    path: str
    sha256: str
    replaced_characters: int
    seconds: float
    table: pl.DataFrame | None = None  # the rows, when no output file was asked (stats)

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "rows": self.rows, "recorded": self.recorded,
                "out": self.path, "sha256": self.sha256,
                "replaced_characters": self.replaced_characters,
                "seconds": round(self.seconds, 3)}  # fmt: skip


def provide(
    store: Store,
    *,
    agency: str,
    affair: str,
    function: str,
    columns: list[str] | None,
    parameters: dict[str, Any],
    output: OutputOptions | None,
    now: dt.datetime,
    compute: Callable[[Grant], Provision],
    progress: Callable[[int, int], None] | None = None,
) -> ProvideSummary:
    """Authorise, compute (streaming into the output), record, publish; returns what was
    written. Progress: authorisation, each part, the records, the output."""
    step = progress or (lambda done, total: None)
    started = time.perf_counter()
    if output is not None:
        output.check()
    store.require()
    grant = authorize(store, agency=agency, affair=affair, function=function, columns=columns,
                      parameters=parameters, now=now)  # fmt: skip
    request: dict[str, Any] = {"request_id": grant.request_id, "requested_at": now, "agency": agency,
               "affair": affair, "function": function, "parameters": parameters,
               "columns": grant.output_columns if function != "stats" else []}  # fmt: skip
    writer = None
    records = ProvisionBatch()
    try:
        result = compute(grant)
        total = result.count + 3
        step(1, total)
        writer = OutputWriter(output) if output is not None else None
        kept: list[pl.DataFrame] = []
        rows = 0

        def consume(table: Any) -> None:
            if writer is not None:
                writer.write(table)
            else:
                kept.append(table)

        flushing: list[Future[None]] = []

        def gather(provided: pl.DataFrame) -> None:
            records.add(provided)
            if records.waiting >= FLUSH_RECORDS:  # written meanwhile on a thread of its own
                flushing.append(flusher.submit(records.write, store, grant, records.take(),
                                               provided_at=now))  # fmt: skip

        # each part is written (Parquet encoding releases the GIL) while the next is computed,
        # and its records are gathered (packed and sorted) by another thread: on the computing
        # thread they held up the next part (125 M region/age: 5.0-5.2 -> 4.7-5.0 s); a large
        # request's records are written in files by a third as they mount up, on the cores the
        # output's encoding leaves idle
        with ThreadPoolExecutor(1) as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="juki-records") as recorder, \
                ThreadPoolExecutor(1, thread_name_prefix="juki-flush") as flusher:  # fmt: skip
            pending: Future[None] | None = None
            gathering: deque[Future[None]] = deque()
            for done, (table, provided) in enumerate(result.all_parts(), start=2):
                rows += table.height
                prepared = (writer.prepare(table, contiguous=result.scattered)
                            if writer is not None else table)  # fmt: skip
                if pending is not None:
                    pending.result()
                pending = pool.submit(consume, prepared)
                if provided is not None:
                    while len(gathering) >= RECORDS_AHEAD:  # (memory: the parts waiting)
                        gathering.popleft().result()
                    gathering.append(recorder.submit(gather, provided))
                step(min(done, total - 2), total)
            # the rest of the records are written while the last part is encoded and the output
            # is sealed (flushed, fsynced: ~3-4 s for a national extract); they still precede
            # the output's rename (a failure in between over-records: the safe side for an
            # audit log)
            sealing = pool.submit(writer.seal) if writer is not None else None
            for gathered in gathering:
                gathered.result()
            # the rest beside a write still running (the output's encoding, done, left a core)
            records.write(store, grant, records.take(), provided_at=now, threads=2)
            for flushed in flushing:
                flushed.result()
            recorded = records.commit(store, grant, provided_at=now)
            if pending is not None:
                pending.result()
            if sealing is not None:
                sealing.result()
        step(total - 1, total)
        written = None
        if writer is not None:
            written = writer.finish({**request, "requested_at": iso_jst(now)})
    except BaseException as e:
        if writer is not None:
            writer.abort()
        records.discard(store)
        if isinstance(e, JukiError):
            record_request(store, **request, status="failed", refused_reason=str(e))
        raise
    record_request(store, **request, status="provided", rows=rows,
                   output=str(output.path) if output else None,
                   output_sha256=written.sha256 if written else None)  # fmt: skip
    step(total, total)
    table = None if output else (pl.concat(kept) if len(kept) > 1 else kept[0])
    return ProvideSummary(
        grant.request_id, rows, recorded, str(output.path) if output else "",
        written.sha256 if written else "", written.replaced_characters if written else 0,
        time.perf_counter() - started, table,
    )

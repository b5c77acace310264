"""One provision request end to end (SPEC §5, §6; DESIGN Safety "one-shot outputs").

authorise (a refusal is recorded and exits 3, nothing else written) → compute → commit the
provision records (keyed by the request id) → write the output to a temporary name, fsync,
rename → manifest → the request row. A crash in between over-records, the safe failure for an
audit log. Every service (lookup, changes, extracts, stats) goes through `provide`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.access import Grant, authorize
from engine.dates import iso_jst
from engine.errors import JukiError
from engine.provision import record_provisions
from engine.requests import record_request
from engine.store import Store
from loaders.outputs import OutputOptions, write_output


@dataclass(frozen=True)
class Provision:
    """What a service computed: the output rows, and per provided row its record
    (`resident_code`, `columns`); `provided` is None for aggregates (nothing recorded)."""

    table: pl.DataFrame
    provided: pl.DataFrame | None


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
    """Authorise, compute, record, write; returns what was written (progress: 4 steps)."""
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
    step(1, 4)
    try:
        result = compute(grant)
        step(2, 4)
        recorded = 0
        if result.provided is not None:
            recorded = record_provisions(store, result.provided, grant, provided_at=now)
        step(3, 4)
        written = None
        if output is not None:
            manifest = {**request, "requested_at": iso_jst(now)}
            written = write_output(result.table, output, manifest)
    except JukiError as e:
        record_request(store, **request, status="failed", refused_reason=str(e))
        raise
    record_request(store, **request, status="provided", rows=result.table.height,
                   output=str(output.path) if output else None,
                   output_sha256=written.sha256 if written else None)  # fmt: skip
    step(4, 4)
    return ProvideSummary(
        grant.request_id, result.table.height, recorded, str(output.path) if output else "",
        written.sha256 if written else "", written.replaced_characters if written else 0,
        time.perf_counter() - started, None if output else result.table,
    )

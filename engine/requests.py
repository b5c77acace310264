"""The `requests` table: every provision request, refusals included (SPEC §5, §6).

One row per request: who (agency, affair), what (function, parameters, columns), when, how many
rows were provided, the output and its SHA-256, or why it was refused. Rows are blind appends
(no writer lock; Delta resolves concurrent appends) and are never edited.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa

from engine.store import Store

UTC_US = pa.timestamp("us", tz="UTC")
REQUESTS_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("requested_at", UTC_US),
        pa.field("agency", pa.string()),
        pa.field("affair", pa.string()),
        pa.field("function", pa.string()),
        pa.field("parameters", pa.string()),  # JSON object
        pa.field("columns", pa.string()),  # comma-separated, §1 order
        pa.field("status", pa.string()),  # provided | refused
        pa.field("refused_reason", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("output", pa.string()),
        pa.field("output_sha256", pa.string()),
        pa.field("finished_at", UTC_US),
    ]
)


def record_request(
    store: Store,
    *,
    request_id: str,
    requested_at: dt.datetime,
    agency: str,
    affair: str,
    function: str,
    parameters: dict[str, Any],
    columns: list[str] | tuple[str, ...],
    status: str,
    refused_reason: str | None = None,
    rows: int = 0,
    output: str | None = None,
    output_sha256: str | None = None,
    finished_at: dt.datetime | None = None,
) -> None:
    """Append one request row."""
    from engine.appends import append

    row = request_row(
        request_id=request_id, requested_at=requested_at, agency=agency, affair=affair,
        function=function, parameters=parameters, columns=columns, status=status,
        refused_reason=refused_reason, rows=rows, output=output, output_sha256=output_sha256,
        finished_at=finished_at,
    )  # fmt: skip
    append(store.table_path("requests"), pa.Table.from_pylist([row], schema=REQUESTS_SCHEMA))


def request_row(
    *,
    request_id: str,
    requested_at: dt.datetime,
    agency: str,
    affair: str,
    function: str,
    parameters: dict[str, Any],
    columns: list[str] | tuple[str, ...],
    status: str,
    refused_reason: str | None = None,
    rows: int = 0,
    output: str | None = None,
    output_sha256: str | None = None,
    finished_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """One row of the `requests` table (REQUESTS_SCHEMA)."""
    return {
        "request_id": request_id, "requested_at": requested_at, "agency": agency,
        "affair": affair, "function": function,
        "parameters": json.dumps(parameters, ensure_ascii=False, sort_keys=True, default=str),
        "columns": ",".join(columns), "status": status, "refused_reason": refused_reason,
        "rows": rows, "output": output, "output_sha256": output_sha256,
        "finished_at": finished_at or requested_at,
    }  # fmt: skip


def list_requests(
    store: Store,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    agency: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Requests newest first, optionally bounded (since < requested_at ≤ until) and by agency."""
    root = store.table_path("requests")
    if not (root / "_delta_log").is_dir():
        return []
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    table = DeltaTable(str(root)).to_pyarrow_table()
    mask = pc.is_valid(table["request_id"])
    if since is not None:
        mask = pc.and_(mask, pc.greater(table["requested_at"], pa.scalar(since, UTC_US)))
    if until is not None:
        mask = pc.and_(mask, pc.less_equal(table["requested_at"], pa.scalar(until, UTC_US)))
    if agency is not None:
        mask = pc.and_(mask, pc.equal(table["agency"], agency))
    table = table.filter(mask).sort_by([("requested_at", "descending"),
                                        ("request_id", "descending")])  # fmt: skip
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()

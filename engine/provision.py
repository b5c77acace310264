"""Provision records (提供記録, SPEC §6) and the resident's self-check.

Every row handed to an agency is one record: `resident_code`, `provided_at`, `agency`, `affair`,
`function`, `columns`, `request_id`. The Delta table `provisions` is append-only (nothing in juki
edits or deletes it) and partitioned by `bucket` = int(resident_code) % 256 and `year` (UTC) of
`provided_at`; each request's files are sorted by `resident_code`, so a self-check reads one
bucket per year and, inside it, only the files and row groups whose min/max statistics can hold
the person's codes (never Python's `hash()`: it changes per process). `juki audit compact`
rewrites a bucket-year's small files into sorted ones (same rows; Delta `optimize.z_order`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.store import Store

if TYPE_CHECKING:
    import polars as pl

    from engine.access import Grant

BUCKETS = 256
UTC_US = pa.timestamp("us", tz="UTC")
PROVISIONS_SCHEMA = pa.schema(
    [
        pa.field("resident_code", pa.string()),
        pa.field("provided_at", UTC_US),
        pa.field("agency", pa.string()),
        pa.field("affair", pa.string()),
        pa.field("function", pa.string()),
        pa.field("columns", pa.string()),  # comma-separated, in the output's order
        pa.field("request_id", pa.string()),
        pa.field("bucket", pa.int32()),
        pa.field("year", pa.int32()),
    ]
)
FIELDS = ["resident_code", "provided_at", "agency", "affair", "function", "columns", "request_id"]


def bucket_of(resident_code: str) -> int:
    return int(resident_code) % BUCKETS


def provision_rows(
    provided: pl.DataFrame,
    *,
    agency: str,
    affair: str,
    function: str,
    request_id: str,
    provided_at: dt.datetime,
) -> pl.DataFrame:
    """The records of one request's provided rows (`provided`: `resident_code`, `columns`)."""
    import polars as pl

    return provided.select(
        resident_code=pl.col("resident_code"),
        provided_at=pl.lit(provided_at).dt.cast_time_unit("us").dt.convert_time_zone("UTC"),
        agency=pl.lit(agency),
        affair=pl.lit(affair),
        function=pl.lit(function),
        columns=pl.col("columns"),
        request_id=pl.lit(request_id),
        bucket=(pl.col("resident_code").cast(pl.Int64) % BUCKETS).cast(pl.Int32),
        year=pl.lit(provided_at.astimezone(dt.UTC).year, pl.Int32),
    )


def append_provisions(
    store: Store, records: pl.DataFrame, *, transactions: dict[str, int] | None = None
) -> int:
    """Append records (of one or more requests) in one commit, sorted by bucket then
    resident_code (fixed width: numeric order is text order)."""
    import polars as pl

    from engine.appends import append

    if records.is_empty() and not transactions:
        return 0
    frame = records.sort("bucket", pl.col("resident_code").cast(pl.Int64), "request_id")
    table = frame.to_arrow().cast(PROVISIONS_SCHEMA)
    append(store.table_path("provisions"), table, partition_by=["bucket", "year"],
           transactions=transactions)  # fmt: skip
    return frame.height


def record_provisions(
    store: Store, provided: pl.DataFrame, grant: Grant, *, provided_at: dt.datetime
) -> int:
    """Append one record per provided row (`provided`: `resident_code`, `columns`)."""
    if provided.is_empty():
        return 0
    records = provision_rows(provided, agency=grant.agency.code, affair=grant.affair.code,
                             function=grant.function, request_id=grant.request_id,
                             provided_at=provided_at)  # fmt: skip
    return append_provisions(store, records)


@dataclass(frozen=True)
class SelfCheck:
    """One page of a person's provision records, newest first."""

    records: list[dict[str, Any]]
    offset: int
    limit: int

    def to_json(self) -> list[dict[str, Any]]:
        from engine.dates import iso_jst

        return [
            {**r, "provided_at": iso_jst(r["provided_at"]), "columns": r["columns"].split(",")}
            for r in self.records
        ]


def records_of(
    store: Store,
    resident_codes: list[str],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> pa.Table:
    """Every provision record of these resident codes (since ≤ provided_at ≤ until)."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    root = store.table_path("provisions")
    if not resident_codes or not (root / "_delta_log").is_dir():
        return PROVISIONS_SCHEMA.empty_table().select(FIELDS)
    buckets = sorted({bucket_of(c) for c in resident_codes})
    codes = ", ".join(f"'{c}'" for c in sorted(set(resident_codes)))
    predicate = f"bucket IN ({', '.join(map(str, buckets))}) AND resident_code IN ({codes})"
    if since is not None:
        predicate += f" AND year >= {since.astimezone(dt.UTC).year}"
    if until is not None:
        predicate += f" AND year <= {until.astimezone(dt.UTC).year}"
    dataset = DeltaTable(str(root)).to_pyarrow_dataset(file_pruning_predicate=predicate)
    wanted = ds.field("resident_code").isin(sorted(set(resident_codes)))
    if since is not None:
        wanted &= ds.field("provided_at") >= pa.scalar(since, UTC_US)
    if until is not None:
        wanted &= ds.field("provided_at") <= pa.scalar(until, UTC_US)
    return dataset.to_table(columns=FIELDS, filter=wanted)


def self_check(
    store: Store,
    resident_codes: list[str],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SelfCheck:
    """A page of the records of every resident code a person ever held, newest first."""
    table = records_of(store, resident_codes, since=since, until=until)
    table = table.sort_by([("provided_at", "descending"), ("request_id", "descending"),
                           ("resident_code", "ascending")])  # fmt: skip
    return SelfCheck(table.slice(offset, limit).to_pylist(), offset, limit)


def resident_codes_of_my_number(store: Store, my_number: int) -> list[str]:
    """Every resident code ever held by the person who holds or held this My Number.

    Plain Arrow (no Polars import): the self-check answers in well under a second.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    root = store.table_path("codes")
    if not (root / "_delta_log").is_dir():
        return []
    codes = DeltaTable(str(root))
    owner = codes.to_pyarrow_dataset(
        file_pruning_predicate=f"kind = 2 AND code = {int(my_number)}"
    ).to_table(columns=["person"], filter=(ds.field("kind") == 2) & (ds.field("code") == my_number))
    if owner.num_rows == 0:
        return []
    person = owner["person"][0].as_py()
    # person keys are issued in order, so file and row-group statistics on `person` prune most
    # of the codes table (the initial load is one ascending run of persons)
    held = codes.to_pyarrow_dataset(
        file_pruning_predicate=f"kind = 1 AND person = {int(person)}"
    ).to_table(
        columns=["code"], filter=(ds.field("kind") == 1) & (ds.field("person") == person)
    )
    return sorted(f"{c:011d}" for c in pc.unique(held["code"]).to_pylist())


def audit_self(
    store: Store,
    my_number: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SelfCheck:
    """`juki audit self`: the records of the person holding (or who held) this My Number."""
    from engine.codes import check_digit_of, is_valid
    from engine.errors import UsageError

    if not is_valid(my_number, "my_number"):
        hint = ""
        if len(my_number) == 12 and my_number.isascii() and my_number.isdigit():
            hint = f": check digit should be {check_digit_of(my_number, 'my_number')}"
        raise UsageError(f"--my-number '{my_number}': not a valid My Number{hint}")
    store.require()
    codes = resident_codes_of_my_number(store, int(my_number))
    return self_check(store, codes, since=since, until=until, limit=limit, offset=offset)


def compact(store: Store) -> int:
    """Rewrite each bucket-year's files sorted by resident_code (same rows); returns files added."""
    from deltalake import DeltaTable

    root = store.table_path("provisions")
    if not (root / "_delta_log").is_dir():
        return 0
    metrics = DeltaTable(str(root)).optimize.z_order(["resident_code"])
    return int(metrics.get("numFilesAdded", 0))

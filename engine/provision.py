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
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
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

    The owner comes from the codes table (sorted by code: one row group is read); the resident
    codes the person was issued from the journal's rows that issued them (the codes table is
    derived from exactly these). The codes table, sorted by code, holds a person's codes
    anywhere in its 125 M rows of the kind (1.5-2 s a self-check), where the journal's
    statistics on `person` prune its large files (the initial load: one ascending run of
    persons) and leave its smaller files of later changes. Plain Arrow (no Polars import): the
    self-check answers in well under a second.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    root = store.table_path("codes")
    if not (root / "_delta_log").is_dir():
        return []
    owner = DeltaTable(str(root)).to_pyarrow_dataset(
        file_pruning_predicate=f"kind = 2 AND code = {int(my_number)}"
    ).to_table(columns=["person"], filter=(ds.field("kind") == 2) & (ds.field("code") == my_number))
    if owner.num_rows == 0:
        return []
    person = int(owner["person"][0].as_py())
    held = DeltaTable(str(store.table_path("journal"))).to_pyarrow_dataset(
        file_pruning_predicate=f"person = {person}"
    ).to_table(columns=["resident_code"], filter=(ds.field("person") == person)
               & (ds.field("issued_resident_code") == True))  # fmt: skip
    return sorted(pc.unique(held["resident_code"]).to_pylist())


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
    """Rewrite each bucket-year's files sorted by resident_code (same rows), in row groups a
    self-check skips by their statistics; returns files added."""
    from deltalake import DeltaTable, WriterProperties

    root = store.table_path("provisions")
    if not (root / "_delta_log").is_dir():
        return 0
    # row groups as small as a request's files have: delta-rs's default (~1 M rows) made a
    # self-check decode a whole bucket-year (120 M records: 0.42 -> 0.95 s from 40 M)
    layout = WriterProperties(max_row_group_size=_RECORD_ROWS_PER_GROUP, compression="LZ4_RAW")
    table = DeltaTable(str(root))
    metrics = table.optimize.z_order(["resident_code"], writer_properties=layout)
    # and a checkpoint of the result: every self-check opens the table, and replaying the
    # commits since the last checkpoint (each request's, then this one's removes) took 0.3 s of
    # a 0.34 s records read at 120 M records, 0.03 s from a checkpoint
    table.create_checkpoint()
    return int(metrics.get("numFilesAdded", 0))


# A gathered record is one int64: bucket << 45 | code << 8 | column-list index (codes < 2^37).
_CODE_BITS, _INDEX_BITS = 37, 8
_BUCKET_SHIFT = _CODE_BITS + _INDEX_BITS
_RECORD_ROWS_PER_GROUP = 65_536  # row groups a self-check skips by resident_code statistics


# From this many records a request's codes are formatted by the numba kernel; below, by Arrow:
# the kernel's first load (~0.35 s with numba's import) was most of a 3 M-record commit.
FORMAT_KERNEL_ROWS = 5_000_000
# Records gathered that a streaming request writes as files before its end (one file per bucket
# each time, 16 M records: ~1.6 s of one core).
FLUSH_RECORDS = 1 << 24


class ProvisionBatch:
    """The provision records of one request, gathered compactly while its output streams (a
    national extract provides 125 M rows) and written bucket by bucket, each bucket-year file
    sorted by resident_code, in ONE commit.

    Each part's records are packed into int64 keys (bucket, code, column-list index) and sorted
    as they come; writing takes each bucket's range of every part, sorts it, and writes it with
    Arrow buffers built directly (digits, dictionary-encoded constants): 125 M records never exist
    as strings at once. A large request's records may be written while it streams (`take`, then
    `write` on another thread: a file per bucket each time, invisible until `commit` names them
    all in its one commit); a national extract's commit was a 16 s tail after its last part."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._lists: dict[str, int] = {}  # column list (comma-separated) → index
        self._written: list[dict[str, Any]] = []  # files written, not committed (add actions)
        self._paths: list[str] = []  # their paths, each as soon as it is written (`discard`)
        self._count = 0  # records in those files
        self._lock = threading.Lock()  # (`write` runs beside `add` and other writes)

    def add(self, provided: pl.DataFrame) -> None:
        """Gather the records of provided rows (`provided`: `resident_code`, `columns`)."""
        import polars as pl

        if provided.is_empty():
            return
        codes = provided["resident_code"].cast(pl.Int64).to_numpy()
        columns = provided["columns"]
        if isinstance(columns.dtype, pl.Enum):
            local = np.array([self._index(c) for c in columns.dtype.categories.to_list()],
                             dtype=np.int64)  # fmt: skip
            index = local[columns.to_physical().to_numpy()]
        else:
            mapping = {c: self._index(c) for c in columns.unique().to_list()}
            index = columns.replace_strict(mapping, return_dtype=pl.Int64).to_numpy()
        keys = ((codes % BUCKETS) << _BUCKET_SHIFT) | (codes << _INDEX_BITS) | index
        # NumPy's sort (no GIL) on the caller's thread: `provide` gathers on a thread of its
        # own, where Polars' parallel sort took ~2.4x the CPU from the threads encoding the output
        self._chunks.append(np.sort(keys))

    def _index(self, columns: str) -> int:
        with self._lock:  # (a write on another thread reads the lists)
            if columns not in self._lists:
                if len(self._lists) == 1 << _INDEX_BITS:
                    raise ValueError("more than 256 column lists in one request")
                self._lists[columns] = len(self._lists)
            return self._lists[columns]

    @property
    def waiting(self) -> int:
        """Records gathered and not yet taken."""
        return sum(len(c) for c in self._chunks)

    def take(self) -> list[np.ndarray]:
        """The records gathered so far, for `write` (they are no longer waiting)."""
        chunks, self._chunks = self._chunks, []
        return chunks

    def write(self, store: Store, grant: Grant, chunks: list[np.ndarray], *,
              provided_at: dt.datetime, threads: int = 1) -> None:  # fmt: skip
        """Write taken records as files of the table, a file per bucket (`threads` at once);
        `commit` names them. Writes of different takes may run at the same time."""
        from concurrent.futures import ThreadPoolExecutor

        from engine import deltalog
        from engine.appends import ensure_table

        total = sum(len(c) for c in chunks)
        if total == 0:
            return
        starts = np.arange(BUCKETS + 1, dtype=np.int64) << _BUCKET_SHIFT
        bounds = [np.searchsorted(c, starts) for c in chunks]
        year = provided_at.astimezone(dt.UTC).year
        micros = int(provided_at.timestamp() * 1_000_000)
        with self._lock:
            names = list(self._lists)
        constants = {"agency": grant.agency.code, "affair": grant.affair.code,
                     "function": grant.function, "request_id": grant.request_id}  # fmt: skip
        kernel = self._count + total >= FORMAT_KERNEL_ROWS
        root = store.table_path("provisions")
        ensure_table(root, PROVISIONS_SCHEMA, ["bucket", "year"])

        def one(bucket: int) -> dict[str, Any] | None:
            pieces = [c[b[bucket]:b[bucket + 1]] for c, b in zip(chunks, bounds, strict=True)]
            keys = np.sort(np.concatenate(pieces))
            if len(keys) == 0:
                return None
            codes = (keys >> _INDEX_BITS) & ((1 << _CODE_BITS) - 1)
            table = _record_table(codes, keys & ((1 << _INDEX_BITS) - 1), names, micros,
                                  constants, kernel=kernel)  # fmt: skip
            present = np.bincount(keys & 0xFF, minlength=len(names)) > 0
            used = sorted(n for n, p in zip(names, present, strict=False) if p)
            extremes = {  # the first and last values: the file's statistics
                "resident_code": (f"{codes[0]:011d}", f"{codes[-1]:011d}"),
                "provided_at": (provided_at, provided_at),
                **{k: (v, v) for k, v in constants.items() if k != "request_id"},
                "columns": (used[0], used[-1]),
                "request_id": (constants["request_id"],) * 2,
            }
            add = deltalog.write_file(root, table, partition={"bucket": bucket, "year": year},
                                      row_group_size=_RECORD_ROWS_PER_GROUP,
                                      bounds=extremes, plain_schema=True,
                                      dictionary=list(constants) + ["columns", "provided_at"],
                                      statistics=["resident_code"],
                                      write_batch_size=1 << 16)  # fmt: skip
            self._paths.append(add["path"])
            return add

        with ThreadPoolExecutor(threads) as pool:
            adds = list(pool.map(one, range(BUCKETS)))
        with self._lock:
            self._written += [a for a in adds if a is not None]  # (in bucket order)
            self._count += total

    def commit(self, store: Store, grant: Grant, *, provided_at: dt.datetime) -> int:
        """Write the records still waiting and commit every file written; returns how many
        records."""
        self.write(store, grant, self.take(), provided_at=provided_at, threads=2)
        if not self._written:
            return 0
        commit_appends(store.table_path("provisions"), self._written)
        total, self._written, self._paths, self._count = self._count, [], [], 0
        return total

    def discard(self, store: Store) -> None:
        """Remove the files written and not committed (a failed request's)."""
        root = store.table_path("provisions")
        paths, self._written, self._paths, self._count = self._paths, [], [], 0
        for path in paths:
            (root / path).unlink(missing_ok=True)


def _record_table(
    codes: np.ndarray, index: np.ndarray, names: list[str], micros: int, constants: dict[str, str],
    *, kernel: bool,
) -> pa.Table:  # fmt: skip
    """The records of one bucket as Arrow: codes as 11-digit text (by the numba kernel when
    `kernel`, else by Arrow's cast and pad: 2.9 M codes in 256 buckets, 0.16 s of one core
    against NumPy's digit by digit 0.58 s), constants as dictionaries."""
    import pyarrow.compute as pc

    n = len(codes)
    if kernel:
        from engine.code_kernels import format_codes

        text = pa.StringArray.from_buffers(
            n, pa.py_buffer(np.arange(0, 11 * n + 1, 11, dtype=np.int32)),
            pa.py_buffer(format_codes(codes, 11)),
        )  # fmt: skip
    else:
        text = pc.utf8_lpad(pc.cast(pa.array(codes), pa.string()), 11, "0")
    zeros = pa.array(np.zeros(n, dtype=np.int32))

    def constant(value: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(zeros, pa.array([value], pa.string()))

    at = pa.Array.from_buffers(UTC_US, n, [None, pa.py_buffer(np.full(n, micros, np.int64))])
    columns = pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)),
                                             pa.array(names, pa.string()))  # fmt: skip
    return pa.table({
        "resident_code": text, "provided_at": at, "agency": constant(constants["agency"]),
        "affair": constant(constants["affair"]), "function": constant(constants["function"]),
        "columns": columns, "request_id": constant(constants["request_id"]),
    })  # fmt: skip


def commit_appends(root: Any, adds: list[dict[str, Any]]) -> None:
    """Commit written files as the next version of an append-only table (blind appends never
    conflict: a version taken meanwhile by another writer moves this commit to the next), with a
    Delta checkpoint every CHECKPOINT_INTERVAL versions (`deltalog.commit`): a table of one commit
    per request would otherwise be opened by replaying every commit (1,000 requests: 0.8 s each
    time; 0.06 s from a checkpoint), for every self-check and every request's records."""
    from engine import deltalog

    version = deltalog.latest_version(root) + 1
    while True:
        try:
            deltalog.commit(root, version, adds, {})
            break
        except FileExistsError:
            version += 1

"""Ingest of change-notification batches (SPEC §4): one batch is one journal commit.

An `IngestSession` holds the writer's working state for one `juki ingest` call: sequencing
positions and held rows, and the state of every person the call's rows name (loaded once from
`codes` + `current`, never by rescanning the history; only persons named by an `X1` get their
history). Each batch is sequenced, checked by the vectorised row rules (`engine.validate`), walked
through the state machine (`engine.transitions`) and committed as one journal commit; derived
tables catch up at the end (`finish`).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numba import njit

from engine import deltalog, derived, faults
from engine.code_index import distinct, owners
from engine.current import scan_current
from engine.schema import (
    HELD_SCHEMA,
    JOURNAL_ENCODINGS,
    JOURNAL_SCHEMA,
    NOTIFICATION_COLUMNS,
    REASONS,
)
from engine.sequencing import sequence, used_already
from engine.store import APP_ID, SCHEMAS, Store
from engine.transitions import SKIPPED, STATEFUL_RULES, apply_rows
from engine.validate import validate_rows

TEXT_COLUMNS = NOTIFICATION_COLUMNS
ONE_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one file (SPEC §4 `--json` line), plus its rejects."""

    file: str
    applied: int
    rejected: int
    duplicate: int
    held: int
    released: int
    batch: int = -1
    rejects: pl.DataFrame | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rejects")
        d.pop("batch")
        return d


def _code_int(col: str, width: int) -> pl.Expr:
    """A code column as int64 where it is `width` bytes that parse as a non-negative integer
    (4x faster than a regex; a '+'-signed text passes too, but the row rules reject its row,
    and a code's int only chooses which state to load for it)."""
    c = pl.col(col)
    value = c.cast(pl.Int64, strict=False)
    return pl.when((c.str.len_bytes() == width) & (value >= 0)).then(value)


def _index_of(sorted_keys: np.ndarray, order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, `order[i]` where `sorted_keys[i] == value` (-1 when absent or negative)."""
    if len(sorted_keys) == 0:
        return np.full(len(values), -1, np.int64)
    if len(values) * 32 < len(sorted_keys):  # few values: binary search beats a walk of the keys
        at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
        hit = (sorted_keys[at] == values) & (values >= 0)
        return np.where(hit, order[at], -1)
    # Walking the keys once with the values in sorted order (Polars' parallel arg_sort) is 10x
    # faster than random probes at 10 M keys, and a merge beats NumPy's searchsorted.
    out = np.empty(len(values), np.int64)
    _merge_index(sorted_keys, order, values, argsort(values), out)
    return out


def argsort(values: np.ndarray) -> np.ndarray:
    """Indices that sort int64 `values` (Polars' sort: parallel, ~3x NumPy's on 2 cores)."""
    # (int64: Polars' indices are uint32, and np.where(hit, uint32, -1) wraps -1 round)
    return pl.Series(values, dtype=pl.Int64).arg_sort().to_numpy().astype(np.int64)


@njit(cache=True, nogil=True)
def _merge_index(keys: np.ndarray, order: np.ndarray, values: np.ndarray, by_value: np.ndarray,
                 out: np.ndarray) -> None:  # fmt: skip
    j = 0
    n = len(keys)
    for t in range(len(by_value)):
        i = by_value[t]
        v = values[i]
        while j < n and keys[j] < v:
            j += 1
        out[i] = order[j] if j < n and keys[j] == v and v >= 0 else -1


class _Stamps:
    """The batches' `recorded_at`, taken in batch order by the threads writing their journal
    files, each as its file's write begins: a batch is committed as soon as its file is written
    and the batches before it are (SPEC §1: stamped just before its commit). Stamping a group's
    batches all at once, before their files were written, ran the last ones seconds ahead."""

    def __init__(self, stamp: Callable[[], dt.datetime], last_batch: int) -> None:
        self._stamp = stamp
        self._next = last_batch + 1  # the batch to be stamped next
        self._taken: dict[int, dt.datetime] = {}
        self._ready = threading.Condition()

    def take(self, batch: int) -> dt.datetime:
        """The batch's stamp, once every batch before it has one."""
        with self._ready:
            self._ready.wait_for(lambda: self._next >= batch)
            if batch not in self._taken:
                self._taken[batch] = self._stamp()
                self._next = batch + 1
                self._ready.notify_all()
            return self._taken[batch]

    def passed(self, batch: int) -> None:
        """A batch stamped elsewhere (a file applied in parts)."""
        with self._ready:
            self._next = max(self._next, batch + 1)
            self._ready.notify_all()

    @staticmethod
    def placeholder(batch: pl.Expr) -> pl.Expr:
        """What stands for a batch's stamp until it is taken: `batch` µs after the epoch (the
        rows in memory, and the current rows made from them, carry it)."""
        return pl.from_epoch(batch, time_unit="us").dt.replace_time_zone("UTC")

    def fill(self, frame: pl.DataFrame, last_batch: int) -> pl.DataFrame:
        """`frame`'s `recorded_at` placeholders replaced by the stamps, once every batch up to
        `last_batch` has one (other values are kept)."""
        with self._ready:
            self._ready.wait_for(lambda: self._next > last_batch)
            batches, stamps = list(self._taken), list(self._taken.values())
        if not batches:
            return frame
        at = pl.col("recorded_at")
        stamp = at.dt.epoch("us").replace_strict(
            batches, pl.Series(stamps).dt.cast_time_unit("us"), default=None
        )
        return frame.with_columns(recorded_at=pl.when(at < PLACEHOLDERS_END).then(stamp)
                                  .otherwise(at))  # fmt: skip


PLACEHOLDERS_END = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)  # no real stamp is earlier


class _CodeSpace:
    """Append-only dense ids for the codes of one kind seen by the session."""

    def __init__(self) -> None:
        self.codes = np.zeros(0, np.int64)
        self._order = np.zeros(0, np.int64)
        self._sorted = np.zeros(0, np.int64)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """cid of each value (-1 when unknown or negative)."""
        return _index_of(self._sorted, self._order, values)

    def missing(self, values: np.ndarray) -> np.ndarray:
        values = distinct(values[values >= 0])
        return values[self.lookup(values) < 0]

    def add(self, values: np.ndarray) -> np.ndarray:
        """Add new distinct values; returns their cids."""
        start = len(self.codes)
        self.codes = np.concatenate([self.codes, values.astype(np.int64)])
        self._order = argsort(self.codes)  # (distinct codes: stability is moot)
        self._sorted = self.codes[self._order]
        return np.arange(start, start + len(values), dtype=np.int64)


@dataclass(frozen=True)
class _EarlyHistories:
    """Store histories of some persons, being read in another thread."""

    persons: np.ndarray
    history: Future[pl.DataFrame]


def _grow(a: np.ndarray, n: int, fill: int) -> np.ndarray:
    if len(a) >= n:
        return a
    out = np.full(max(n, 2 * len(a)), fill, a.dtype)
    out[: len(a)] = a
    return out


class IngestSession:
    """Working state of one writer call; use under `Store.writer`."""

    def __init__(self, store: Store, *, clock: Any = None) -> None:
        self.store = store
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        store.ensure_tables()
        derived.catch_up(store)
        head = store.journal_head()
        self.last_batch = head.batch
        self.journal_version = head.version  # this writer adds the next ones
        self.next_person = head.next_person
        self.last_recorded_at = head.recorded_at
        self.positions = pl.read_delta(str(store.table_path("positions")))
        self.held = self._held_text(pl.read_delta(str(store.table_path("held"))))
        # Each batch's journal file is written by one of two threads, its commit by the
        # committer, in batch order (a month is ~100 batches: 1.4 s when written one by one).
        self._files = ThreadPoolExecutor(max_workers=2, thread_name_prefix="juki-journal-file")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="juki-journal")
        self._pending: list[Future[None]] = []
        self._failed = False  # a commit failed: no later batch may be committed
        self._stamps = _Stamps(self._stamp, self.last_batch)
        self._open: _OpenBatch | None = None  # a file applied in parts (apply_chunk)
        self._reset_state()

    def _reset_state(self) -> None:
        """Forget the persons and codes loaded so far (the derived tables now hold them)."""
        self.start_batch = self.last_batch
        self.rc = _CodeSpace()
        self.mn = _CodeSpace()
        self.rc_owner = np.zeros(0, np.int64)
        self.mn_owner = np.zeros(0, np.int64)
        self.glob = np.zeros(0, np.int64)  # local person → global person key
        self.glob_sorted = np.zeros(0, np.int64)
        self.glob_order = np.zeros(0, np.int64)
        self.history_loaded = np.zeros(0, np.bool_)
        self.base_snap = np.zeros(0, np.int64)
        self.top = np.zeros(0, np.int64)
        self.last_version = np.zeros(0, np.int32)
        self.snaps = {
            "status": np.zeros(0, np.int8), "reason": np.zeros(0, np.int8),
            "rc": np.zeros(0, np.int64), "mn": np.zeros(0, np.int64),
            "mc": np.zeros(0, np.int32), "seq": np.zeros(0, np.int64),
            "prev": np.zeros(0, np.int64),
        }  # fmt: skip
        self.counts = np.zeros(2, np.int64)
        self.journal_parts: list[pl.DataFrame] = []
        self.histories: list[pl.DataFrame] = []  # store histories read for persons with an X1

    # -- state loading ------------------------------------------------------------------------
    @staticmethod
    def _held_text(held: pl.DataFrame) -> pl.DataFrame:
        """Held rows as text rows (their `raw` JSON), with their origin file and row."""
        schema = {c: pl.String for c in TEXT_COLUMNS}
        if held.is_empty():
            return pl.DataFrame(schema={**schema, "_file": pl.String, "_row": pl.Int32,
                                        "_seq": pl.Int64})  # fmt: skip
        texts = pl.DataFrame([json.loads(r) for r in held["raw"].to_list()], schema=schema)
        return texts.with_columns(
            _file=held["file"], _row=held["row"], _seq=held["seq"]
        )

    def _reserve(self, persons: int, snapshots: int, rc: int, mn: int) -> None:
        n_p = int(self.counts[0]) + persons
        self.glob = _grow(self.glob, n_p, -1)
        self.history_loaded = _grow(self.history_loaded, n_p, 0)
        self.base_snap = _grow(self.base_snap, n_p, -1)
        self.top = _grow(self.top, n_p, -1)
        self.last_version = _grow(self.last_version, n_p, 0)
        n_s = int(self.counts[1]) + snapshots
        fills = {"rc": -1, "mn": -1, "prev": -1}
        for k, a in self.snaps.items():
            self.snaps[k] = _grow(a, n_s, fills.get(k, 0))
        self.rc_owner = _grow(self.rc_owner, len(self.rc.codes) + rc, -1)
        self.mn_owner = _grow(self.mn_owner, len(self.mn.codes) + mn, -1)

    def _local_of(self, persons: np.ndarray) -> np.ndarray:
        """Local ids of global person keys (-1 when not loaded)."""
        return _index_of(self.glob_sorted, self.glob_order, persons)

    def _index_persons(self) -> None:
        n = int(self.counts[0])
        known = self.glob[:n]
        order = argsort(known)  # (the loaded persons are distinct)
        self.glob_order = order[known[order] >= 0]
        self.glob_sorted = known[self.glob_order]

    def _codes_cids(self, values: np.ndarray, space: _CodeSpace) -> np.ndarray:
        """cids of codes, adding the unknown ones (owner -1)."""
        new = space.missing(values)
        if len(new):
            self._reserve(0, 0, len(new) if space is self.rc else 0,
                          len(new) if space is self.mn else 0)  # fmt: skip
            space.add(new)
        return space.lookup(values)

    def ensure(self, text: pl.DataFrame) -> None:
        """Make every code and person these text rows name known to the session."""
        codes = text.select(
            rc=_code_int("resident_code", 11),
            prev=_code_int("previous_resident_code", 11),
            mn=_code_int("my_number", 12),
            x1=pl.col("reason") == "X1",
        )
        rc = np.concatenate([codes["rc"].fill_null(-1).to_numpy(),
                             codes["prev"].fill_null(-1).to_numpy()])  # fmt: skip
        mn = codes["mn"].fill_null(-1).to_numpy()
        new_rc, new_mn = self.rc.missing(rc), self.mn.missing(mn)
        x1_codes = codes.filter(pl.col("x1"))["rc"].drop_nulls().to_numpy()
        # The histories of persons an X1 names (a journal read) are read beside their current
        # state (a base read): neither read uses both cores alone (125 M: 9.0 → 6.4 s).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="juki-histories") as pool:
            early = None
            if len(new_rc) or len(new_mn):
                early = self._load_codes(new_rc, new_mn, x1_codes, pool)
            if len(x1_codes):
                cids = self.rc.lookup(x1_codes)
                owners = self.rc_owner[cids[cids >= 0]]
                owners = distinct(owners[owners >= 0])
                need = owners[~self.history_loaded[owners]]
                if len(need):
                    self._load_histories(need, early)

    def needing_state(self, text: pl.DataFrame) -> pl.DataFrame:
        """The text rows that may need the state of the persons they name: all but those whose
        `(municipality_code, seq)` is already used, duplicates whatever else they hold (a re-run
        of a batch loads no state)."""
        if self.positions.is_empty():
            return text
        used = used_already(text, self.positions)
        return text if not used.any() else text.filter(~used)

    def _load_codes(
        self, new_rc: np.ndarray, new_mn: np.ndarray, x1_codes: np.ndarray, pool: ThreadPoolExecutor
    ) -> _EarlyHistories | None:
        """Load the owners of new codes and their current state; returns the histories of the
        owners of `x1_codes` among them, being read in `pool`."""
        found = owners(self.store, {1: new_rc, 2: new_mn})
        early = None
        x1_owners = distinct(found.filter((pl.col("kind") == 1)
                                          & pl.col("code").is_in(pl.Series(x1_codes).implode()))
                             ["person"].to_numpy())  # fmt: skip
        local = self._local_of(x1_owners)
        unread = local < 0
        unread[~unread] = ~self.history_loaded[local[~unread]]
        x1_owners = x1_owners[unread]
        if len(x1_owners):
            early = _EarlyHistories(x1_owners, pool.submit(
                derived.history_of, self.store, pl.Series(x1_owners), upto=self.start_batch))  # fmt: skip
        self._codes_cids(new_rc, self.rc)
        self._codes_cids(new_mn, self.mn)
        persons = distinct(found["person"].to_numpy())
        self._load_persons(persons[self._local_of(persons) < 0])
        self._set_owners(found)
        return early

    def _set_owners(self, found: pl.DataFrame) -> None:
        for kind, space in ((1, self.rc), (2, self.mn)):
            part = found.filter(pl.col("kind") == kind)
            if part.is_empty():
                continue
            cids = self._codes_cids(part["code"].to_numpy(), space)
            owner = self.rc_owner if kind == 1 else self.mn_owner
            owner[cids] = self._local_of(part["person"].to_numpy())

    def _load_persons(self, persons: np.ndarray) -> None:
        """Load the current state of store persons as one snapshot each."""
        if len(persons) == 0:
            return
        rows = (
            scan_current(self.store, persons=pl.Series(persons))
            .select("person", "version", "last_version", "status", "reason", "resident_code",
                    "my_number", "municipality_code", "seq")  # fmt: skip
            .collect()
        )
        # Persons whose every version was cancelled have no current row but still own codes.
        start = int(self.counts[0])
        self._reserve(len(persons), len(rows), 0, 0)
        self.glob[start : start + len(persons)] = persons
        self.counts[0] = start + len(persons)
        self._index_persons()
        lv = pl.DataFrame({"person": persons}).join(
            rows.select("person", "last_version"), on="person", how="left"
        )
        self.last_version[start : start + len(persons)] = lv["last_version"].fill_null(0)
        self._push_snapshots(rows, link_base=True)

    def _push_snapshots(self, rows: pl.DataFrame, *, link_base: bool) -> np.ndarray:
        """Push store versions as snapshots (rows oldest first per person); returns their ids."""
        n = len(rows)
        self._reserve(0, n, 0, 0)
        local = self._local_of(rows["person"].to_numpy())
        rc = self._codes_cids(rows["resident_code"].cast(pl.Int64).to_numpy(), self.rc)
        mn = self._codes_cids(rows["my_number"].cast(pl.Int64).to_numpy(), self.mn)
        self.rc_owner[rc] = local
        self.mn_owner[mn] = local
        s0 = int(self.counts[1])
        ids = np.arange(s0, s0 + n, dtype=np.int64)
        snaps = self.snaps
        snaps["status"][ids] = rows["status"].fill_null(0).cast(pl.Int8).to_numpy()
        snaps["reason"][ids] = rows["reason"].replace_strict(REASONS, return_dtype=pl.Int8).to_numpy()
        snaps["rc"][ids], snaps["mn"][ids] = rc, mn
        snaps["mc"][ids] = rows["municipality_code"].cast(pl.Int32).to_numpy()
        snaps["seq"][ids] = rows["seq"].to_numpy()
        self.counts[1] = s0 + n
        if link_base:  # one row per person: a stack of depth one
            snaps["prev"][ids] = -1
            self.top[local] = ids
            self.base_snap[local] = ids
        return ids

    def _history_known(self) -> pl.Series:
        """Persons whose store history the session holds (read for an X1, or none: created)."""
        n = int(self.counts[0])
        return pl.Series("person", self.glob[:n][self.history_loaded[:n]], pl.Int64)

    def _load_histories(self, locals_: np.ndarray, early: _EarlyHistories | None = None) -> None:
        """Splice the store's effective history under the base snapshot of these persons (those
        `early` covers from its read)."""
        persons = self.glob[locals_]
        parts = []
        if early is not None:
            mine = np.isin(persons, early.persons)
            parts.append(early.history.result().filter(
                pl.col("person").is_in(pl.Series(persons[mine]).implode())))  # fmt: skip
            persons = persons[~mine]
        if len(persons):
            parts.append(derived.history_of(self.store, pl.Series(persons), upto=self.start_batch))
        history = pl.concat(parts)
        self.histories.append(history)
        self.history_loaded[locals_] = True
        if history.is_empty():
            return
        eff = derived.effective_stacks(history)
        below = eff.filter(~pl.col("_is_top"))
        if below.is_empty():
            return
        ids = self._push_snapshots(below, link_base=False)
        local = self._local_of(below["person"].to_numpy())
        prev = -1
        for k, (s, p) in enumerate(zip(ids, local, strict=True)):
            first = k == 0 or local[k - 1] != p
            self.snaps["prev"][s] = -1 if first else prev
            prev = s
            last = k + 1 == len(local) or local[k + 1] != p
            if last and self.base_snap[p] >= 0:
                self.snaps["prev"][self.base_snap[p]] = s

    # -- one batch -----------------------------------------------------------------------------
    def apply_group(
        self, files: list[tuple[str, pl.DataFrame, str]], *, checked: pl.DataFrame | None = None
    ) -> list[BatchSummary]:
        """Apply files (path, text rows with `row`, SHA-256) in order, one batch each.

        The group is sequenced, checked and walked as one stream in file order, which is the
        application order the SPEC defines; then each file's rows (and the held rows its rows
        release) are committed as its own batch, in order. `checked`: `validate_rows` of the
        concatenated rows (with `_pos` = position in the group) when the caller ran it.
        """
        journal = self._process(files, checked, records=True)
        # Every file's columns, counts and Arrow form are made at once and sliced per file
        # (zero-copy): per-file Polars calls cost ~1 s for a month's ~100 files.
        counts: dict[int, dict[str, int]] = {}
        for g, outcome, n in journal.group_by("_batch_of", "outcome").len().iter_rows():
            counts.setdefault(g, {})[outcome] = n
        first = self.last_batch + 1
        messages = [json.dumps({"sha256": sha256, **dict(sorted(counts.get(g, {}).items()))})
                    for g, (_, _, sha256) in enumerate(files)]  # fmt: skip
        of = pl.col("_batch_of")
        journal = journal.with_columns(
            batch=(of + first).cast(pl.Int64),
            recorded_at=_Stamps.placeholder((of + first).cast(pl.Int64)),
            message=pl.when(pl.col("outcome") == "file")
            .then(pl.lit(pl.Series(messages)).gather(of))
            .otherwise(pl.col("message")),
        )  # fmt: skip
        # Each batch's rows, in their order, are taken from the group's rows by the thread that
        # writes the batch's file: sorting the whole group by batch first copied every column
        # of every row on this thread (and ~1 GB for a month).
        of = journal["_batch_of"].to_numpy()
        order = np.argsort(of, kind="stable")
        ends = np.searchsorted(of[order], np.arange(len(files) + 1))
        rejected = journal.filter(pl.col("outcome") == "rejected")
        self.journal_parts.append(journal.drop("_batch_of"))
        summaries = []
        for g, (file, _, _) in enumerate(files):
            batch = first + g
            self.last_batch = batch
            metadata = {"juki_batch": str(batch), "juki_next_person": str(self.next_person),
                        "juki_file": file}  # fmt: skip
            self._submit(journal, order[int(ends[g]) : int(ends[g + 1])], batch, metadata)
            mine = rejected.filter(pl.col("_batch_of") == g) if counts.get(g, {}).get(
                "rejected") else rejected.clear()  # fmt: skip
            summaries.append(_summary_of(file, batch, counts.get(g, {}), _rejects(mine)))
        return summaries

    def _process(
        self, files: list[tuple[str, pl.DataFrame, str]], checked: pl.DataFrame | None, *,
        records: bool,
    ) -> pl.DataFrame:  # fmt: skip
        """Sequence, check and walk the rows of `files` as one stream; their journal rows with
        `_batch_of` (`records`: with each file's record row). Positions and held rows advance."""
        text = pl.concat(
            [rows.with_columns(_g=pl.lit(g, pl.Int32), _file=pl.lit(file),
                               _row=pl.col("row").cast(pl.Int32))
             for g, (file, rows, _) in enumerate(files)],  # fmt: skip
            how="diagonal_relaxed",
        ).with_columns(_pos=pl.int_range(pl.len(), dtype=pl.Int64))
        seq = sequence(text, self.positions, self.held)
        work = pl.concat([seq.to_apply, seq.unsequenced.with_columns(
            _from_held=pl.lit(False), _at=pl.col("_pos"))], how="diagonal_relaxed")  # fmt: skip
        work = work.with_columns(sequenced=pl.int_range(pl.len()) < seq.to_apply.height)
        extras = ["_pos", "_file", "_row", "_at", "_from_held", "_seq", "sequenced"]
        if checked is None:
            self.ensure(work)
            checked = validate_rows(work.select(*TEXT_COLUMNS, *extras))
        else:
            checked = self._checked_rows(work, checked, extras)
        outcome = self._walk(checked)
        # A processed row belongs to the batch of the file whose row completed its run.
        file_of = text["_g"].to_numpy()
        outcome = outcome.with_columns(_batch_of=pl.Series(file_of[outcome["_at"].to_numpy()]))
        journal = self._journal_rows(files, seq, outcome, records=records)
        self._advance(journal, seq)
        return journal

    def begin_parts(self, file: str, sha256: str) -> None:
        """Open the batch of a file to be applied in parts (apply_chunk), after committing and
        reflecting every batch before it."""
        self.checkpoint()
        self._open = _OpenBatch(file, sha256, self.last_batch + 1, self._stamp())
        self._stamps.passed(self._open.batch)

    def apply_chunk(
        self, file: str, rows: pl.DataFrame, sha256: str, *, checked: pl.DataFrame | None,
        last: bool,
    ) -> BatchSummary | None:  # fmt: skip
        """Apply the next part of a file too large to hold whole (SPEC §4: still one batch, one
        commit). Each part's journal rows and derived rows are written as uncommitted Parquet
        files; the last part commits them all: the journal in one entry, then each derived table.
        Returns the file's summary after the last part. A row held in one part and released in
        a later one is journaled as held, then released."""
        ob = self._open
        assert ob is not None and ob.file == file, "begin_parts first"
        journal = self._process([(file, rows, sha256)], checked, records=last).drop("_batch_of")
        journal = journal.with_columns(
            batch=pl.lit(ob.batch, pl.Int64),
            recorded_at=pl.lit(ob.stamp).dt.cast_time_unit("us"),
            apply_order=pl.col("apply_order") + ob.next_order,
        )
        top = journal["apply_order"].max()
        ob.next_order = ob.next_order if top is None else int(top) + 1  # type: ignore[arg-type]
        for outcome, count in _counts(journal).items():
            ob.counts[outcome] = ob.counts.get(outcome, 0) + count
        if last:
            journal = journal.with_columns(
                message=pl.when(pl.col("outcome") == "file")
                .then(pl.lit(json.dumps({"sha256": sha256, **dict(sorted(ob.counts.items()))})))
                .otherwise(pl.col("message"))
            )
        ob.add(self.store, journal)
        if not last:
            return None
        self.last_batch = ob.batch
        deltalog.commit(self.store.table_path("journal"), self.journal_version + 1,
                        ob.journal, {**self._head_metadata(), "juki_file": file},
                        checkpoint=False)  # (`finish`)  # fmt: skip
        self.journal_version += 1
        faults.point("journal-commit")
        ob.commit_derived(self.store, self.histories, self._history_known())
        summary = ob.summary()
        self._open = None
        self._reset_state()
        return summary

    def _checked_rows(
        self, work: pl.DataFrame, checked: pl.DataFrame, extras: list[str]
    ) -> pl.DataFrame:
        """The work rows with the caller's row-rule results; held rows released from earlier
        batches are checked here (they were not part of the caller's group)."""
        work = work.with_row_index("_k")
        from_file = work.filter(~pl.col("_from_held")).select("_k", *extras)
        pos = checked["_pos"]
        if pos.len() and pos.is_sorted() and pos[0] == 0 and pos[-1] == pos.len() - 1:
            # checked row i is the group's row i: gathered by position (a join hashed and
            # copied every column of the group)
            take = from_file["_pos"]
            picked = checked.drop("row", "_pos")
            if not (take.len() == pos.len() and take.is_sorted()):  # (else: every row, in order)
                picked = picked[take]
            parts = [pl.concat([from_file, picked], how="horizontal")]
        else:
            parts = [from_file.join(checked.drop("row"), on="_pos", how="left")]
        released = work.filter(pl.col("_from_held"))
        if not released.height:  # (from_file keeps the work's order)
            return parts[0].drop("_k")
        self.ensure(released)
        parts.append(validate_rows(released.select(*TEXT_COLUMNS, "_k", *extras)))
        return pl.concat(parts, how="diagonal_relaxed").sort("_k").drop("_k")

    def _walk(self, checked: pl.DataFrame) -> pl.DataFrame:
        """Run the state machine over rows passing the row rules; add outcome columns."""
        n = len(checked)
        ints = checked.select(
            reason=pl.col("reason").replace_strict(REASONS, default=0, return_dtype=pl.Int8),
            rc=_code_int("resident_code", 11).fill_null(-1),
            prev=_code_int("previous_resident_code", 11).fill_null(-1),
            mn=_code_int("my_number", 12).fill_null(-1),
            mc=pl.col("municipality_code").cast(pl.Int32, strict=False).fill_null(-1),
            seq=pl.col("seq").fill_null(-1),
            cmc=pl.col("cancels_municipality_code").cast(pl.Int32, strict=False).fill_null(-1),
            cseq=pl.col("cancels_seq").fill_null(-1),
            skip=pl.col("rule").is_not_null(),
        )
        rc = self.rc.lookup(ints["rc"].to_numpy())
        prev = self.rc.lookup(ints["prev"].to_numpy())
        mn = self.mn.lookup(ints["mn"].to_numpy())
        self._reserve(n, n, 0, 0)
        out_rule = np.zeros(n, np.int8)
        out_person = np.full(n, -1, np.int64)
        out_version = np.zeros(n, np.int32)
        out_status = np.zeros(n, np.int8)
        new_rc = np.zeros(n, np.bool_)
        new_mn = np.zeros(n, np.bool_)
        created_from = int(self.counts[0])
        s = self.snaps
        apply_rows(
            ints["reason"].to_numpy(), rc, mn, prev, ints["mc"].to_numpy(),
            ints["seq"].to_numpy(), ints["cmc"].to_numpy(), ints["cseq"].to_numpy(),
            ints["skip"].to_numpy(),
            self.rc_owner, self.mn_owner, self.top, self.last_version, s["status"], s["reason"],
            s["rc"], s["mn"], s["mc"], s["seq"], s["prev"], self.counts,
            out_rule, out_person, out_version, out_status, new_rc, new_mn,
        )  # fmt: skip
        created_to = int(self.counts[0])
        if created_to > created_from:
            count = created_to - created_from
            self.glob[created_from:created_to] = np.arange(
                self.next_person, self.next_person + count, dtype=np.int64
            )
            self.history_loaded[created_from:created_to] = True
            self.next_person += count
            self._index_persons()
        person = np.where(out_person >= 0, self.glob[np.maximum(out_person, 0)], -1)
        rule_names = dict(enumerate(STATEFUL_RULES, start=1))
        return checked.with_columns(
            _applied=pl.Series(out_rule == 0),
            _state_rule=pl.Series(out_rule).replace_strict(
                rule_names, default=None, return_dtype=pl.String
            ),
            person=pl.Series(person).replace(-1, None),
            version=pl.Series(out_version),
            status=pl.Series(out_status).replace(0, None).cast(pl.Int8),
            issued_resident_code=pl.Series(new_rc),
            issued_my_number=pl.Series(new_mn),
        ).with_columns(skipped=pl.Series(out_rule == SKIPPED))

    def _stamp(self) -> dt.datetime:
        """recorded_at: the clock, or 1 µs after the previous batch when the clock is not past it."""
        now = self.clock()
        if self.last_recorded_at is not None and now <= self.last_recorded_at:
            now = self.last_recorded_at + ONE_MICROSECOND
        self.last_recorded_at = now
        return now

    def _journal_rows(self, files: list[tuple[str, pl.DataFrame, str]], seq: Any,
                      outcome: pl.DataFrame, *, records: bool) -> pl.DataFrame:  # fmt: skip
        """Every row of the group with its outcome, typed as the journal schema, and
        `_batch_of`: the index of the file whose batch it belongs to."""
        raw = pl.struct(*TEXT_COLUMNS).struct.json_encode()
        applied = pl.col("_applied")
        msg_rule = pl.col("rule").fill_null(pl.col("_state_rule"))
        processed = outcome.with_columns(
            # A row that waited (from an earlier batch, or held on arrival in this one) is released.
            outcome=pl.when(applied & (pl.col("_from_held") | (pl.col("_at") > pl.col("_pos"))))
            .then(pl.lit("released"))
            .when(applied).then(pl.lit("applied")).otherwise(pl.lit("rejected")),
            rule=msg_rule,
            reject_column=pl.when(pl.col("rule").is_not_null()).then(pl.col("reject_column"))
            .when(pl.col("_state_rule").is_not_null()).then(pl.lit(None, pl.String)),
            message=pl.when(pl.col("rule").is_not_null()).then(pl.col("message"))
            .when(pl.col("_state_rule").is_not_null()).then(_state_message()),
            apply_order=pl.int_range(pl.len(), dtype=pl.Int32).over("_batch_of"),
            raw=pl.when(~applied).then(raw),
            file=pl.col("_file"), row=pl.col("_row"),
        )  # fmt: skip
        processed = processed.with_columns(
            pl.when(pl.col("_applied")).then(pl.col(c)).alias(c)
            for c in ("person", "version", "status", "issued_resident_code", "issued_my_number")
        )
        side = pl.concat(
            [
                seq.held_on_arrival.with_columns(outcome=pl.lit("held"), raw=raw),
                seq.duplicates.with_columns(outcome=pl.lit("duplicate")),
            ],
            how="diagonal_relaxed",
        ).with_columns(
            file=pl.col("_file"), row=pl.col("_row"), _batch_of=pl.col("_g"),
            seq=pl.col("_seq"), sequenced=pl.lit(False),
        ).select("file", "row", "outcome", "municipality_code", "seq", "raw", "sequenced",
                 "reason", "_batch_of")  # fmt: skip
        file_rows = pl.DataFrame(
            {"file": [f for f, _, _ in files], "outcome": ["file"] * len(files),
             "_batch_of": list(range(len(files)))},
            schema={"file": pl.String, "outcome": pl.String, "_batch_of": pl.Int32},
        )  # fmt: skip
        cols = [*JOURNAL_SCHEMA.names, "_batch_of"]
        out = pl.concat(
            [f.select([c for c in cols if c in f.columns])
             for f in (processed, side, file_rows if records else file_rows.clear())],  # fmt: skip
            how="diagonal_relaxed",
        )
        schema = pl.from_arrow(JOURNAL_SCHEMA.empty_table()).schema  # type: ignore[union-attr]
        missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in out.columns]
        # (not sorted by batch: apply_group takes each batch's rows in this order)
        return (
            out.with_columns(missing)
            .select(cols)
            .cast({**dict(schema), "_batch_of": pl.Int32})  # type: ignore[dict-item]
        )

    def _submit(
        self, journal: pl.DataFrame, rows: np.ndarray, batch: int, metadata: dict[str, str]
    ) -> None:
        """Commit a batch's journal rows (`rows` of `journal`, in order) as one Delta commit, in
        the background: its file is stamped and written by one of two threads while the next
        batches are computed and written, and the committer commits the batches in order, each
        once its file is written."""
        written = self._files.submit(self._write_file, journal, rows, batch)
        self._pending.append(self._writer.submit(self._write, written, metadata))

    def _write_file(
        self, journal: pl.DataFrame, rows: np.ndarray, batch: int
    ) -> tuple[dict[str, Any], dt.datetime]:
        """Stamp a batch and write its journal file (uncommitted): (add action, stamp)."""
        stamp = self._stamps.take(batch)
        return _write_rows(self.store.table_path("journal"), journal, rows, stamp), stamp

    def _write(
        self, written: Future[tuple[dict[str, Any], dt.datetime]], metadata: dict[str, str]
    ) -> None:
        """Commit a batch once its file is written (the committer runs one at a time, in order)."""
        if self._failed:
            raise RuntimeError("an earlier journal commit failed")
        try:
            add, stamp = written.result()
            deltalog.commit(self.store.table_path("journal"), self.journal_version + 1, [add],
                            {**metadata, "juki_recorded_at": stamp.isoformat()},
                            checkpoint=False)  # (`finish`)  # fmt: skip
        except BaseException:
            self._failed = True
            raise
        self.journal_version += 1
        faults.point("journal-commit")

    def wait_committed(self) -> None:
        """Block until every batch applied so far is committed (re-raises a failed commit)."""
        pending, self._pending = self._pending, []
        for done in pending:
            done.result()

    def _head_metadata(self) -> dict[str, str]:
        """What every journal commit carries for the next writer (see Store.journal_head)."""
        stamp = self.last_recorded_at
        return {
            "juki_batch": str(self.last_batch),
            "juki_next_person": str(self.next_person),
            "juki_recorded_at": stamp.isoformat() if stamp else "",
        }

    def _advance(self, journal: pl.DataFrame, seq: Any) -> None:
        """Move positions and held rows past this batch (in memory)."""
        used = (
            journal.filter(pl.col("sequenced"))
            .group_by("municipality_code")
            .agg(last_seq=pl.col("seq").max())
        )
        self.positions = (
            pl.concat([self.positions, used], how="vertical_relaxed")
            .group_by("municipality_code")
            .agg(pl.col("last_seq").max())
        )
        arrived = seq.held_on_arrival.select(*TEXT_COLUMNS, "_file", "_row", "_seq")
        done = journal.filter(pl.col("sequenced")).select("municipality_code", _seq="seq")
        self.held = (
            pl.concat([self.held, arrived], how="vertical_relaxed")
            .join(done, on=["municipality_code", "_seq"], how="anti")
        )

    def checkpoint(self) -> int:
        """Wait for the commits, catch the derived tables up, and start the in-memory state
        afresh (bounds memory on national-size loads). Returns the journal's last batch."""
        rows = pl.concat(self.journal_parts) if self.journal_parts else None
        last = self.last_batch

        def stamped(frame: pl.DataFrame) -> pl.DataFrame:
            return self._stamps.fill(frame, last)

        earlier = pl.concat(self.histories, how="diagonal_relaxed") if self.histories else None
        if earlier is None and rows is not None:
            earlier = rows.clear()
        plan = None
        if rows is not None and not self._failed:
            # the derived rows (and their files) are made while the batches are still being
            # committed; they are committed after the journal's (a crash between leaves
            # uncommitted files only)
            plan = derived.plan_catch_up(self.store, self.last_batch, rows,
                                         rows_after=self.start_batch, earlier=earlier,
                                         covered=self._history_known(),
                                         stamped=stamped)  # fmt: skip
        self.wait_committed()
        if plan is not None:
            head = derived.apply_catch_up(self.store, plan)
        else:
            rows = stamped(rows) if rows is not None else None
            head = derived.catch_up(self.store, rows, rows_after=self.start_batch,
                                    earlier=earlier, covered=self._history_known())  # fmt: skip
        self._reset_state()
        return head

    def finish(self) -> int:
        """Commit, catch the derived tables up, and write a Delta checkpoint of the journal's log
        once `deltalog.CHECKPOINT_INTERVAL` commits have come since its last one (readers then
        replay few log entries)."""
        head = self.checkpoint()
        self._writer.shutdown()
        self._files.shutdown()
        if deltalog.checkpoint_due(self.store.table_path("journal"), self.journal_version):
            self.store.delta("journal").create_checkpoint()
        return head


@dataclass
class _OpenBatch:
    """The batch of a file applied in parts: its files written so far, awaiting one commit."""

    file: str
    sha256: str
    batch: int
    stamp: dt.datetime
    next_order: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    current: list[dict[str, Any]] = field(default_factory=list)
    codes: list[dict[str, Any]] = field(default_factory=list)
    cancelled: set[int] = field(default_factory=set)  # persons with an X1 in the batch
    waiting: list[pl.DataFrame] = field(default_factory=list)  # for positions and held rows
    rejects: list[pl.DataFrame] = field(default_factory=list)

    def add(self, store: Store, journal: pl.DataFrame) -> None:
        """Write one part's journal rows and the derived rows they make (uncommitted)."""
        self.journal.append(deltalog.write_file(store.table_path("journal"),
                                                deltalog.arrow_table(journal, JOURNAL_SCHEMA),
                                                encodings=JOURNAL_ENCODINGS))  # fmt: skip
        self.codes.append(_derived_file(store, "codes", derived.code_rows(journal)))
        applied = journal.filter(pl.col("outcome").is_in(derived.APPLIED))
        self.cancelled.update(applied.filter(pl.col("reason") == "X1")["person"].to_list())
        # Persons with an X1 get their rows once the batch is whole (commit_derived); a later
        # part's row of a person outranks an earlier part's (written_order is apply_order).
        plain = applied.filter(~pl.col("person").is_in(list(self.cancelled)))
        rows = derived.current_rows(store, plain, upto=self.batch)
        self.current.append(_derived_file(store, "current_delta", rows))
        # What positions and held rows need: the last seq per municipality, rows held, and
        # sequenced rows released or rejected.
        sequenced = pl.col("sequenced").fill_null(False)
        self.waiting += [
            journal.filter(sequenced).group_by("municipality_code")
            .agg(pl.col("seq").max()).with_columns(outcome=pl.lit("position"), sequenced=True),
            journal.filter((pl.col("outcome") == "held")
                           | (pl.col("outcome").is_in(["released", "rejected"]) & sequenced))
            .select("outcome", "sequenced", *HELD_SCHEMA.names),
        ]  # fmt: skip
        self.rejects.append(_rejects(journal))

    def commit_derived(
        self, store: Store, histories: list[pl.DataFrame], known: pl.Series
    ) -> None:
        """After the journal commit: each derived table's files in one commit, marked as
        reflecting the batch (a crash before leaves them behind, and catch_up repairs that).
        `histories`: the store histories the session read for persons with an X1; `known`: the
        persons whose store history is among them (or who have none: created in the session)."""
        if self.cancelled:
            persons = pl.Series("person", sorted(self.cancelled), pl.Int64)
            mine = pl.col("person").is_in(persons.implode())
            earlier = pl.concat(histories, how="diagonal_relaxed") if histories else None
            before = derived.earlier_rows(store, persons, earlier, known, upto=self.batch - 1)
            batch_rows = pl.read_parquet(
                [str(store.table_path("journal") / a["path"]) for a in self.journal]
            ).filter(mine & pl.col("outcome").is_in(derived.APPLIED))
            history = pl.concat([before, batch_rows], how="diagonal_relaxed")
            self.current.append(_derived_file(store, "current_delta", derived.effective_rows(history)))
        for name, adds in (("codes", self.codes), ("current_delta", self.current)):
            table = store.table_path(name)
            deltalog.commit(table, deltalog.latest_version(table) + 1, adds, {},
                            app_transaction=(APP_ID, self.batch))  # fmt: skip
            faults.point("derived-commit")
        waiting = pl.concat(self.waiting, how="diagonal_relaxed")
        for name, build in (("positions", derived.position_rows), ("held", derived.held_rows)):
            derived.commit_table(store, name, build(store, waiting), self.batch, "overwrite")

    def summary(self) -> BatchSummary:
        return _summary_of(self.file, self.batch, self.counts, pl.concat(self.rejects))


def _derived_file(store: Store, name: str, frame: pl.DataFrame) -> dict[str, Any]:
    schema = SCHEMAS[name]
    return deltalog.write_file(store.table_path(name), deltalog.arrow_table(frame, schema))


def _counts(journal: pl.DataFrame) -> dict[str, int]:
    """Rows per outcome of journal rows."""
    return dict(journal.group_by("outcome").len().iter_rows())


def _write_rows(
    path: Path, journal: pl.DataFrame, rows: np.ndarray, stamp: dt.datetime
) -> dict[str, Any]:
    """Write these rows of a group's journal rows, stamped, as one journal file (uncommitted)."""
    batch = journal[pl.Series(rows)].with_columns(
        recorded_at=pl.lit(stamp).dt.cast_time_unit("us"))  # fmt: skip
    table = deltalog.arrow_table(batch, JOURNAL_SCHEMA)
    return deltalog.write_file(path, table, encodings=JOURNAL_ENCODINGS)


def _rejects(journal: pl.DataFrame) -> pl.DataFrame:
    """The rejected journal rows as the rejects CSV shows them."""
    return journal.filter(pl.col("outcome") == "rejected").select(
        "file", "row", "municipality_code", "seq",
        column="reject_column", rule="rule", message="message",
    )  # fmt: skip


def _summary_of(file: str, batch: int, counts: dict[str, int], rejects: pl.DataFrame) -> BatchSummary:
    """A file's `--json` line (SPEC §4) from its outcome counts, and its rejects."""
    return BatchSummary(
        file=file, applied=counts.get("applied", 0), rejected=counts.get("rejected", 0),
        duplicate=counts.get("duplicate", 0), held=counts.get("held", 0),
        released=counts.get("released", 0), batch=batch, rejects=rejects,
    )  # fmt: skip


def _state_message() -> pl.Expr:
    """One-line message for a rule of the state machine."""
    rule = pl.col("_state_rule")
    rc = pl.col("resident_code")
    return (
        pl.when(rule == "unknown-person").then(pl.format("resident_code '{}': no such person", rc))
        .when(rule == "person-exists").then(pl.format("resident_code '{}': person already registered", rc))
        .when(rule == "code-mismatch").then(pl.format("resident_code '{}' / my_number '{}': not the person's current codes", rc, pl.col("my_number")))
        .when(rule == "code-issued").then(pl.lit("a code of this row was already issued"))
        .when(rule == "municipality-changed").then(pl.format("municipality_code '{}': reason {} keeps the municipality", pl.col("municipality_code"), pl.col("reason")))
        .when(rule == "transition").then(pl.format("reason {} not allowed in the person's status", pl.col("reason")))
        .when(rule == "after-death").then(pl.format("reason {} after a death (only X1 may follow D3)", pl.col("reason")))
        .when(rule == "a2-without-d1").then(pl.lit("A2 without an open D1 of the person"))
        .otherwise(pl.format("cancels {}/{}: not the person's last applied notification", pl.col("cancels_municipality_code"), pl.col("cancels_seq")))
    )  # fmt: skip


"""Change-notification rows of the generator as NumPy columns, before they become text.

A `RowBatch` holds one int column per field of SPEC §4 (codes as int64, names as table indices)
plus the bookkeeping the generator needs to order a batch: the person, a phase (a follow-up row
such as M6 or X1 comes after its main row) and, for an X1, the row it cancels.
"""

from __future__ import annotations

import numpy as np

from loaders.synthetic_people import SNAPSHOT

REASONS = ("A1", "A2", "A3", "A4", "D1", "D2", "D3", "D4",
           "M1", "M2", "M3", "M4", "M5", "M6", "M7", "X1")  # fmt: skip
REASON = {r: i for i, r in enumerate(REASONS)}
US_PER_DAY = 86_400_000_000

EXTRA: dict[str, type] = {
    "reason": np.int8,
    "change_date": np.int32,
    "notified_at": np.int64,  # µs since the epoch, UTC
    "previous_resident_code": np.int64,  # -1: null
    "cancels_municipality": np.int16,  # -1: null
    "cancels_seq": np.int64,  # -1: null
    "seq": np.int64,
    "phase": np.int8,
    "person": np.int64,
    "target": np.int64,  # X1: index of the cancelled row in the batch, else -1
}


class RowBatch:
    """Columns of equal length; the SNAPSHOT fields of `synthetic_people` plus EXTRA."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["reason"])

    def __getitem__(self, field: str) -> np.ndarray:
        return self.columns[field]

    @classmethod
    def of(
        cls,
        snapshot: dict[str, np.ndarray],
        *,
        reason: str,
        change_date: np.ndarray | int,
        notified_at: np.ndarray,
        person: np.ndarray,
        phase: int = 0,
        **extra: np.ndarray,
    ) -> RowBatch:
        """Rows for persons whose record after the change is `snapshot`."""
        n = len(notified_at)
        columns = {f: np.asarray(snapshot[f]) for f in SNAPSHOT}
        defaults = {
            "previous_resident_code": -1,
            "cancels_municipality": -1,
            "cancels_seq": -1,
            "seq": 0,
            "target": -1,
        }
        for f, v in defaults.items():
            columns[f] = np.asarray(extra.get(f, np.full(n, v)), dtype=EXTRA[f])
        columns["reason"] = np.full(n, REASON[reason], dtype=np.int8)
        columns["change_date"] = np.broadcast_to(np.asarray(change_date, np.int32), (n,)).copy()
        columns["notified_at"] = np.asarray(notified_at, dtype=np.int64)
        columns["phase"] = np.full(n, phase, dtype=np.int8)
        columns["person"] = np.asarray(person, dtype=np.int64)
        return cls(columns)

    @classmethod
    def concat(cls, batches: list[RowBatch]) -> RowBatch:
        """One batch of all rows (`target` indices are kept: they point into the first batch)."""
        return cls({f: np.concatenate([b.columns[f] for b in batches]) for f in batches[0].columns})

    def take(self, index: np.ndarray | slice) -> RowBatch:
        return RowBatch({f: a[index] for f, a in self.columns.items()})


def sequence(batch: RowBatch, last_seq: np.ndarray) -> RowBatch:
    """Order rows as they are sent and number them: `seq` continues each municipality's count.

    Rows go by municipality, then change_date, then phase (a follow-up after its main row), then
    person; `last_seq` (per municipality) is advanced. An X1 learns the seq of the row it cancels.
    """
    order = np.lexsort(
        (batch["person"], batch["phase"], batch["change_date"], batch["municipality"])
    )
    rows = batch.take(order)
    m = rows["municipality"].astype(np.int64)
    n = len(rows)
    starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]]) if n else np.zeros(0, np.int64)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rows.columns["seq"] = last_seq[m] + rank + 1
    last_seq += np.bincount(m, minlength=len(last_seq))
    target = rows["target"]
    x1 = np.flatnonzero(target >= 0)
    if len(x1):
        where = np.empty(n, dtype=np.int64)
        where[order] = np.arange(n)
        cancelled = where[target[x1]]
        rows.columns["target"] = np.full(n, -1, dtype=np.int64)
        rows.columns["target"][x1] = cancelled
        rows.columns["cancels_seq"][x1] = rows["seq"][cancelled]
        rows.columns["cancels_municipality"][x1] = rows["municipality"][cancelled]
    return rows


def split_by_prefecture(rows: RowBatch, first: np.ndarray) -> list[tuple[int, RowBatch]]:
    """(prefecture index, rows) for each prefecture with rows; `rows` sorted by municipality."""
    bounds = np.searchsorted(rows["municipality"], first)
    return [
        (p, rows.take(slice(int(bounds[p]), int(bounds[p + 1]))))
        for p in range(47)
        if bounds[p + 1] > bounds[p]
    ]

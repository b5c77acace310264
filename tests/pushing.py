"""A small world for the push tests: six residents, a registry, and helpers to subscribe and run.

Batch 1 (T0) registers persons 1–6 (6 lives in Sapporo). `changes_batch` (T1) gives person 1 a
move, person 2 a death, person 3 a new My Number, person 4 a new resident code, and person 5 a
name change that is then cancelled (X1).
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import polars as pl
from agency import NOW, load, write_request
from builders import (
    CHIYODA,
    SAPPORO,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)
from stories import ingest_at

from engine.store import Store
from engine.subscriptions import Subscription, add_subscription
from loaders.push import PushSummary, read_targets, run_push

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2024, 1, 10, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 1, 20, tzinfo=dt.UTC)
SAPPORO_HOME = {"municipality_code": SAPPORO, "address": "北海道札幌市中央区1"}
_names = itertools.count(1)


class World:
    """The store and its senders (so later batches continue each municipality's seq)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(root / "store")
        self.chiyoda, self.sapporo = Municipality(CHIYODA), Municipality(SAPPORO)
        self.files = itertools.count(1)

    def ingest(self, rows: list[dict[str, Any]], at: dt.datetime) -> None:
        path = write_csv(self.root / f"batch{next(self.files)}.csv", rows)
        ingest_at(self.store, path, at)

    def copy(self, root: Path) -> World:
        """Another world in `root` with this one's store and senders (cheaper than ingesting)."""
        import shutil

        other = World(root)
        shutil.copytree(self.store.path, other.store.path)
        shutil.copy(self.root / "registry.toml", root / "registry.toml")
        other.chiyoda.seq, other.sapporo.seq = self.chiyoda.seq, self.sapporo.seq
        return other

    def register(self) -> None:
        rows = [row(self.chiyoda, "A4", "2023-04-01", person(n)) for n in range(1, 6)]
        rows.append(row(self.sapporo, "A4", "2023-04-01", person(6, **SAPPORO_HOME)))
        self.ingest(rows, T0)
        load(self.store, self.root)

    def changes_batch(self, at: dt.datetime = T1) -> None:
        chi = self.chiyoda
        rename = row(chi, "M2", "2024-01-08", person(5, surname="佐藤", surname_kana="サトウ"))
        codes5 = {"resident_code": resident_code(5), "my_number": my_number(5)}
        self.ingest([
            row(chi, "M1", "2024-01-05", person(1, address="東京都千代田区丸の内1")),
            row(chi, "D3", "2024-01-06", person(2)),
            row(chi, "M4", "2024-01-07", person(3, my_number=my_number(103))),
            row(chi, "M5", "2024-01-07", person(4, resident_code=resident_code(104)),
                previous_resident_code=resident_code(4)),
            rename,
            row(chi, "X1", "2024-01-09", codes5, cancels_municipality_code=CHIYODA,
                cancels_seq=rename["seq"]),
        ], at)  # fmt: skip

    def move_six(self, at: dt.datetime, address: str = "北海道札幌市北区6") -> None:
        """Person 6 moves within Sapporo."""
        home = {**SAPPORO_HOME, "address": address}
        self.ingest([row(self.sapporo, "M1", "2024-01-15", person(6, **home))], at)


def subscribe(world: World, codes: list[str | None], *, interval: str = "daily",
              name: str | None = None, agency: str = "JPS", affair: str = "pension-change",
              column: str = "my_number", now: dt.datetime = NOW) -> Subscription:  # fmt: skip
    path = write_request(world.root / f"targets{next(_names)}.csv", column, codes)
    return add_subscription(world.store, read_targets(path), agency=agency, affair=affair,
                            interval=interval, name=name, now=now)  # fmt: skip


def push(world: World, at: dt.datetime, **kw: Any) -> PushSummary:
    return run_push(world.store, at=at, **kw)


def delivered(world: World, summary: PushSummary, name: str) -> pl.DataFrame:
    (run,) = [d for d in summary.delivered if d.subscription == name]
    path = Path(run.file)
    return pl.read_parquet(path if path.is_absolute() else world.store.path / path)


def outbox_bytes(root: Path) -> dict[str, bytes]:
    """Every file under the outbox with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def everyone() -> list[str | None]:
    return [my_number(n) for n in range(1, 7)]

"""Small histories for the read services: batches of notification rows with their `recorded_at`.

`stories()` draws a plausible sequence of notifications over a few persons in four
municipalities of three prefectures (births, moves within and across prefectures including
planned move dates in the future, name and code changes, DV protection switched on and off,
deaths, returns from abroad, late corrections with an older change date, and X1 cancellations),
cut into batches. `ingest_story` ingests each batch as one `juki ingest` call with the clock set
to the batch's stamp. The model only aims rows; what the store applied is what the oracle reads
(read_oracle.py), so a row the store rejects is harmless.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import hypothesis.strategies as st
from builders import (
    CHIYODA,
    SAPPORO,
    SHIBUYA,
    Municipality,
    municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)
from deltalake import DeltaTable

from engine.ingest import IngestSession
from engine.store import Store
from loaders.ingest import ingest_files

NAHA = municipality("47201")  # 472018
SENDERS = (CHIYODA, SHIBUYA, SAPPORO, NAHA)
ADDRESS = {CHIYODA: "東京都千代田区", SHIBUYA: "東京都渋谷区", SAPPORO: "北海道札幌市",
           NAHA: "沖縄県那覇市"}  # fmt: skip
SURNAMES = [("佐藤", "サトウ"), ("鈴木", "スズキ"), ("髙橋", "タカハシ"), ("𠮷田", "ヨシダ")]
FIRST_STAMP = dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC)
STAMP_STEP = dt.timedelta(days=10)


@dataclass
class Model:
    """What the builder believes about one person (to aim rows; the store decides)."""

    record: dict[str, Any]
    status: int
    dead: bool = False
    undo: list[tuple[str, int, dict[str, Any], int, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class Story:
    batches: list[list[dict[str, Any]]]
    stamps: list[dt.datetime]
    persons: int

    def describe(self) -> str:
        lines = []
        for stamp, batch in zip(self.stamps, self.batches, strict=True):
            lines.append(f"-- batch recorded {stamp.isoformat()}")
            for r in batch:
                lines.append(
                    f"   {r['municipality_code']}#{r['seq']} {r['reason']} {r['change_date']} "
                    f"rc={r['resident_code']} mn={r['my_number']} st-mc={r.get('municipality_code')}"
                    f" prot={r.get('protected')} cancels={r.get('cancels_seq')}"
                )
        return "\n".join(lines)


class StoryBuilder:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.senders = {c: Municipality(c) for c in SENDERS}
        self.people: list[Model] = []
        self.fresh = itertools.count(1)
        self.rows: list[dict[str, Any]] = []

    def date(self) -> dt.date:
        return self.draw(st.dates(dt.date(2023, 6, 1), dt.date(2027, 6, 30)))

    def emit(self, p: Model | None, reason: str, record: dict[str, Any], status: int,
             **extra: Any) -> None:  # fmt: skip
        mc = record["municipality_code"]
        if reason == "X1" or reason == "D1":
            mc = extra.pop("sender", mc)
        sender = self.senders[mc]
        when = extra.pop("change_date", None) or self.date()
        r = row(sender, reason, when.isoformat(), record, **extra)
        self.rows.append(r)
        if p is not None and reason != "X1":
            p.undo.append((sender.code, int(r["seq"]), dict(p.record), p.status, p.dead))
            p.record, p.status = record, status
            p.dead = reason == "D3"

    def new_person(self) -> None:
        n = next(self.fresh)
        mc = self.draw(st.sampled_from(SENDERS))
        birth = self.draw(st.dates(dt.date(1940, 1, 1), dt.date(2023, 5, 31)))
        protected = self.draw(st.integers(0, 4)) == 0
        record = person(n, municipality_code=mc, address=f"{ADDRESS[mc]}{n}-1",
                        birth_date=birth.isoformat(), sex=str(self.draw(st.sampled_from([1, 2]))),
                        protected="true" if protected else "false")  # fmt: skip
        p = Model(record, 1)
        self.people.append(p)
        self.emit(p, "A4", record, 1)

    def change(self) -> None:
        p = self.draw(st.sampled_from(self.people))
        rec = dict(p.record)
        here = rec["municipality_code"]
        k = next(self.fresh)
        if p.dead or self.draw(st.integers(0, 7)) == 0:
            return self.cancel(p)
        if p.status == 2:
            there = self.draw(st.sampled_from([c for c in SENDERS if c != here]))
            rec.update(municipality_code=there, address=f"{ADDRESS[there]}{k}-2")
            return self.emit(p, "A2", rec, 1)
        if p.status == 9:
            return self.emit(p, "A3", rec, 1)
        reason = self.draw(st.sampled_from(["M1", "M2", "M3", "M3", "M4", "M5", "D1", "D1",
                                            "D2", "D3"]))  # fmt: skip
        extra: dict[str, Any] = {}
        status = p.status
        if reason == "M1":
            rec["address"] = f"{ADDRESS[here]}{k}-3"
        elif reason == "M2":
            rec["surname"], rec["surname_kana"] = self.draw(st.sampled_from(SURNAMES))
        elif reason == "M3":
            if self.draw(st.booleans()):
                rec["protected"] = "false" if rec["protected"] == "true" else "true"
            else:
                rec["given_name"] = f"花子{k}"
        elif reason == "M4":
            rec["my_number"] = my_number(1000 + k)
        elif reason == "M5":
            extra["previous_resident_code"] = rec["resident_code"]
            rec["resident_code"] = resident_code(1000 + k)
        elif reason == "D1":
            status = 2
        else:
            status = 9
        self.emit(p, reason, rec, status, **extra)

    def cancel(self, p: Model) -> None:
        if not p.undo:
            return
        mc, seq, before, status, dead = p.undo.pop()
        codes = {"resident_code": p.record["resident_code"], "my_number": p.record["my_number"],
                 "municipality_code": p.record["municipality_code"]}  # fmt: skip
        self.emit(None, "X1", codes, 0, sender=p.record["municipality_code"],
                  cancels_municipality_code=mc, cancels_seq=seq)  # fmt: skip
        p.record, p.status, p.dead = before, status, dead


@st.composite
def stories(draw: st.DrawFn, *, max_persons: int = 5, max_changes: int = 14,
            max_batches: int = 4) -> Story:  # fmt: skip
    b = StoryBuilder(draw)
    persons = draw(st.integers(1, max_persons))
    for _ in range(persons):
        b.new_person()
    for _ in range(draw(st.integers(0, max_changes))):
        if draw(st.integers(0, 6)) == 0:
            b.new_person()
        else:
            b.change()
    n = draw(st.integers(1, max_batches))
    cuts = sorted(draw(st.lists(st.integers(0, len(b.rows)), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, len(b.rows)]
    batches = [b.rows[x:y] for x, y in itertools.pairwise(bounds)]
    batches = [x for x in batches if x] or [b.rows]
    stamps = [FIRST_STAMP + i * STAMP_STEP for i in range(len(batches))]
    return Story(batches, stamps, len(b.people))


@contextmanager
def clock_at(when: dt.datetime) -> Any:
    """`juki ingest` with its clock stopped at `when` (stamps still strictly increase)."""
    with mock.patch("loaders.ingest.IngestSession", partial(IngestSession, clock=lambda: when)):
        yield


def ingest_at(store: Store, path: Path, when: dt.datetime) -> None:
    with clock_at(when):
        ingest_files(store, [path])


def ingest_story(
    store: Store, story: Story, directory: Path, *,
    compact_after: int | Collection[int] | None = None, vacuum: bool = False,
) -> None:  # fmt: skip
    """Ingest the story's batches; `compact_after` i (or each of several) compacts `current`
    after the i-th (from 1), so that later reads start from a base that reflects part of the
    history (or from an older base, kept on disk; `vacuum` removes the older bases' files)."""
    from engine.derived import compact

    after = {compact_after} if isinstance(compact_after, int) else set(compact_after or ())
    directory.mkdir(parents=True, exist_ok=True)
    for i, (stamp, batch) in enumerate(zip(story.stamps, story.batches, strict=True)):
        path = write_csv(directory / f"batch{i + 1}.csv", batch)
        ingest_at(store, path, stamp)
        if i + 1 in after:
            compact(store)
    if vacuum:
        DeltaTable(str(store.table_path("current_base"))).vacuum(
            retention_hours=0, enforce_retention_duration=False, dry_run=False)  # fmt: skip


def property_settings(max_examples: int) -> Any:
    """Hypothesis settings for store-building properties: no database, no shrinking (each
    example ingests into a fresh store; the failing story is printed by the test instead)."""
    from hypothesis import HealthCheck, Phase, settings

    return settings(max_examples=max_examples, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

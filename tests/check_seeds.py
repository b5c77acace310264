"""Stores for `juki check` tests: built only by ingest, then seeded with known violations written
straight into the journal (past ingest's validation), as a repair tool or a bug could."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from builders import Municipality, municipality, my_number, person, resident_code, row, write_csv

from engine.schema import JOURNAL_SCHEMA, REASON_STATUS
from engine.store import Store
from loaders.ingest import ingest_files
from loaders.synthetic import generate

# Senders the generator never uses (fictitious bodies, valid check digits).
TOWN = municipality("13990")
CITY = municipality("13991")
_seqs = itertools.count(900_000)


def story_files(directory: Path) -> list[Path]:
    """Inline notifications with X1, M4 and M5 on top of a generated population (two batches,
    so that the move-in follows its move-out's batch)."""
    town, city = Municipality(TOWN), Municipality(CITY)
    here = {"municipality_code": TOWN, "address": "東京都架空町1-1"}
    there = {"municipality_code": CITY, "address": "東京都架空市2-2"}
    p = {n: person(n, **here) for n in range(1, 7)}
    p[5] = person(5, **here, resident_kind="2", surname="SMITH", given_name="JOHN",
                  surname_kana="スミス", given_name_kana="ジョン・ポール", alias="須美寿")  # fmt: skip
    p[6] = person(6, **here, former_surname="佐藤", former_surname_kana="サトウ")
    first = [row(town, "A4", "2024-04-01", p[n]) for n in range(1, 7)]
    moved = {**p[2], "address": "東京都架空町3-3"}
    first += [
        # 1: resident code change (M5), then My Number change (M4)
        row(town, "M5", "2024-04-10", {**p[1], "resident_code": resident_code(101)},
            previous_resident_code=resident_code(1)),
        row(town, "M4", "2024-04-11", {**p[1], "resident_code": resident_code(101),
                                       "my_number": my_number(101)}),
        # 2: a move within the town, cancelled
        row(town, "M1", "2024-04-12", moved),
        row(town, "X1", "2024-04-13", {"resident_code": resident_code(2), "my_number": my_number(2)},
            cancels_municipality_code=TOWN, cancels_seq=town.seq),
        # 3: moves out of the town ...
        row(town, "D1", "2024-04-20", p[3]),
        # 4: a death notified by mistake, cancelled, then a name change
        row(town, "D3", "2024-04-21", p[4]),
        row(town, "X1", "2024-04-22", {"resident_code": resident_code(4), "my_number": my_number(4)},
            cancels_municipality_code=TOWN, cancels_seq=town.seq),
        row(town, "M2", "2024-04-23", {**p[4], "surname": "鈴木", "surname_kana": "スズキ"}),
    ]  # fmt: skip
    # ... and into the city within 14 days
    second = [row(city, "A2", "2024-04-25", {**p[3], **there})]
    return [write_csv(directory / "story-1.csv", first),
            write_csv(directory / "story-2.csv", second)]  # fmt: skip


def build_clean_store(directory: Path, *, residents: int = 2_000, months: int = 2) -> Path:
    """A store built only by `ingest_files`: a generated population plus the inline story."""
    files = sorted(generate(directory / "files", residents=residents, months=months, seed=11).files)
    store = Store(directory / "store")
    assert ingest_files(store, files).total("rejected") == 0
    report = ingest_files(store, story_files(directory))
    assert report.total("rejected") == 0, [f.rejects for f in report.files]  # type: ignore[union-attr]
    return directory / "store"


# -- seeding past ingest --------------------------------------------------------------------------
def history(store: Store, *, person: int | None = None) -> pl.DataFrame:
    rows = pl.scan_delta(str(store.table_path("journal"))).filter(
        pl.col("outcome").is_in(["applied", "released"])
    )
    if person is not None:
        rows = rows.filter(pl.col("person") == person)
    return rows.sort("batch", "apply_order").collect()


class People:
    """Hands out distinct plain persons of a store (see `plain_persons`), so that seeds written
    into one store never touch the same person."""

    def __init__(self, store: Store) -> None:
        self.free = {kind: plain_persons(store, 200, kind=kind) for kind in (1, 2)}

    def take(self, count: int, *, kind: int = 1) -> list[str]:
        out, self.free[kind] = self.free[kind][:count], self.free[kind][count:]
        assert len(out) == count, "not enough plain persons in the store"
        return out


def plain_persons(store: Store, count: int, *, kind: int = 1) -> list[str]:
    """Resident codes of generated persons with one registered version and no optional names."""
    h = history(store)
    single = h.group_by("person").len().filter(pl.col("len") == 1).select("person")
    return (
        h.join(single, on="person")
        .filter(
            (pl.col("status") == 1) & (pl.col("resident_kind") == kind)
            & pl.col("former_surname").is_null() & pl.col("alias").is_null()
            & pl.col("file").str.contains("initial")
        )
        .sort("person")
        .head(count)["resident_code"]
        .to_list()
    )


def last_version(store: Store, code: str) -> dict[str, Any]:
    """The last applied journal row of the person who holds or held `code`."""
    key = (
        pl.scan_delta(str(store.table_path("journal")))
        .filter((pl.col("resident_code") == code) | (pl.col("my_number") == code))
        .select("person").collect()["person"].drop_nulls()[0]
    )  # fmt: skip
    return history(store, person=key).row(-1, named=True)


def version_of(store: Store, code: str, reason: str, *, new_batch: bool = False,
               **changes: Any) -> dict[str, Any]:  # fmt: skip
    """A journal row: the next version of the person holding `code`, as its last snapshot with
    `changes` (status from the reason unless given), a fresh (municipality, seq)."""
    base = last_version(store, code)
    out = dict(base)
    status = REASON_STATUS.get(reason)
    out.update(reason=reason, version=base["version"] + 1, seq=next(_seqs), outcome="applied",
               status=status if status is not None else base["status"], file="seeded",
               issued_resident_code=False, issued_my_number=False,
               previous_resident_code=None, cancels_municipality_code=None, cancels_seq=None)  # fmt: skip
    out.update(changes)
    out["_new_batch"] = new_batch
    return out


def append(store: Store, rows: list[dict[str, Any]]) -> None:
    """Append rows to the journal as the last batch (or one past it), keeping the head's
    commit metadata: one Delta commit, no validation, no derived table touched."""
    from deltalake import CommitProperties, write_deltalake

    journal = pl.scan_delta(str(store.table_path("journal")))
    last, stamp = journal.select(pl.col("batch").max(), pl.col("recorded_at").max()).collect().row(0)
    orders = journal.filter(pl.col("batch") == last).select(pl.col("apply_order").max()).collect().item()
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        new_batch = r.pop("_new_batch", False)
        batch = last + 1 if new_batch else last
        r.update(batch=batch, apply_order=(orders or 0) + 1 + i,  # type: ignore[operator]
                 recorded_at=r.get("recorded_at") or stamp)  # fmt: skip
        if new_batch and isinstance(stamp, dt.datetime):
            r["recorded_at"] = stamp + dt.timedelta(seconds=1)
        out.append({c: r.get(c) for c in JOURNAL_SCHEMA.names})
    meta = {k: v for k, v in store.delta("journal").history(1)[0].items() if k.startswith("juki_")}
    write_deltalake(str(store.table_path("journal")), pa.Table.from_pylist(out, JOURNAL_SCHEMA),
                    mode="append", commit_properties=CommitProperties(custom_metadata=meta))  # fmt: skip


def append_code(store: Store, kind: int, code: str, owner_of: str) -> None:
    """Record `code` in the issued-code registry as issued to the person holding `owner_of`."""
    from deltalake import write_deltalake

    from engine.schema import CODES_SCHEMA

    key = last_version(store, owner_of)["person"]
    table = pa.Table.from_pylist([{"kind": kind, "code": int(code), "person": key, "batch": 1}],
                                 CODES_SCHEMA)  # fmt: skip
    write_deltalake(str(store.table_path("codes")), table, mode="append")


Findings = dict[str, list[tuple[str | None, list[int]]]]


def normal(findings: Findings) -> Findings:
    """The same findings in one order, for exact comparisons."""
    return {k: sorted(v, key=lambda x: json.dumps(x)) for k, v in findings.items()}


def summary(violations: pl.DataFrame) -> Findings:
    """{rule: [(resident_code, versions)]} of a report, in `normal` order."""
    out: Findings = {}
    for r in violations.iter_rows(named=True):
        out.setdefault(r["rule"], []).append((r["resident_code"], list(r["versions"])))
    return normal(out)

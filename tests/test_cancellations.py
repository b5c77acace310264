"""X1 across ingest calls (SPEC §3): an X1 of a row applied in the same call needs only the
person's current row from the store; an X1 of the store's current version needs the history
below it. Either way the current state is the one the history gives without the cancelled row."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from builders import CHIYODA, Municipality, person, resident_code, row, write_csv

from engine.current import scan_current
from engine.store import Store
from loaders.ingest import ingest_files


def current_of(store: Store, n: int) -> dict[str, object]:
    rows = scan_current(store).filter(pl.col("resident_code") == resident_code(n)).collect()
    assert rows.height == 1
    return rows.row(0, named=True)


def files(directory: Path) -> list[Path]:
    """registration: A4 of persons 0–2 | renames: M2 of 0 and 1, M1 of 1 | cancel: X1 of the
    M1 of 1 (its current version) and of the M2 of 0 (its current version)."""
    chi = Municipality(CHIYODA)
    registration = [row(chi, "A4", "2024-01-01", person(i)) for i in range(3)]
    m2_0 = row(chi, "M2", "2024-02-01", person(0, surname="佐藤", surname_kana="サトウ"))
    m2_1 = row(chi, "M2", "2024-02-01", person(1, surname="鈴木", surname_kana="スズキ"))
    m1_1 = row(chi, "M1", "2024-02-02", person(1, surname="鈴木", surname_kana="スズキ",
                                               address="東京都千代田区永田町1"))  # fmt: skip
    x1 = [row(chi, "X1", "2024-03-01", {"resident_code": resident_code(n), "my_number": None},
              cancels_municipality_code=CHIYODA, cancels_seq=cancelled["seq"])
          for n, cancelled in ((1, m1_1), (0, m2_0))]  # fmt: skip
    for r in x1:
        r["my_number"] = person(0 if r["resident_code"] == resident_code(0) else 1)["my_number"]
    return [write_csv(directory / "registration.csv", registration),
            write_csv(directory / "renames.csv", [m2_0, m2_1, m1_1]),
            write_csv(directory / "cancel.csv", x1)]  # fmt: skip


def test_cancellations_give_the_same_state_in_one_call_or_in_several(tmp_path: Path) -> None:
    paths = files(tmp_path)
    together, apart = Store(tmp_path / "together"), Store(tmp_path / "apart")
    ingest_files(together, paths)
    ingest_files(apart, paths[:1])
    ingest_files(apart, paths[1:2])
    last = ingest_files(apart, paths[2:])  # each X1 cancels the store's current version

    assert last.total("applied") == 2 and last.total("rejected") == 0
    for store in (together, apart):
        zero, one = current_of(store, 0), current_of(store, 1)
        assert (zero["surname"], zero["reason"]) == ("山田", "A4")  # back below the M2
        assert (one["surname"], one["reason"], one["address"]) == (
            "鈴木", "M2", person(1)["address"])  # back below the M1 only  # fmt: skip
    same = [scan_current(s).drop("recorded_at", "notified_at").sort("person").collect()
            for s in (together, apart)]  # fmt: skip
    assert same[0].select("person", "version", "surname", "address", "reason").equals(
        same[1].select("person", "version", "surname", "address", "reason"))  # fmt: skip


def test_an_x1_of_a_row_of_the_same_call_restores_the_stores_current_version(
    tmp_path: Path,
) -> None:
    paths = files(tmp_path)
    store = Store(tmp_path / "store")
    ingest_files(store, paths[:1])  # persons 0-2 are in the store; the rest arrives in one call

    report = ingest_files(store, paths[1:])

    assert report.total("rejected") == 0
    assert (current_of(store, 0)["surname"], current_of(store, 0)["reason"]) == ("山田", "A4")
    assert current_of(store, 1)["reason"] == "M2"
    assert current_of(store, 2)["reason"] == "A4"


def test_a_code_change_cancelled_in_the_same_file_restores_the_version_below(
    tmp_path: Path,
) -> None:
    """The X1 names its person by the resident code the M5 issued in the same file; the person's
    store history is still read, so the version below comes back (not a tombstone)."""
    from engine.derived import compact

    chi = Municipality(CHIYODA)
    first = [row(chi, "A4", "2024-01-01", person(i)) for i in range(2)]
    renamed = row(chi, "M2", "2024-02-01", person(0, surname="佐藤", surname_kana="サトウ"))
    m5 = row(chi, "M5", "2024-03-01", {**person(0, surname="佐藤", surname_kana="サトウ"),
                                       "resident_code": resident_code(50)},
             previous_resident_code=resident_code(0))  # fmt: skip
    x1 = row(chi, "X1", "2024-03-02", {"resident_code": resident_code(50),
                                       "my_number": person(0)["my_number"]},
             cancels_municipality_code=CHIYODA, cancels_seq=m5["seq"])  # fmt: skip
    paths = [write_csv(tmp_path / "a.csv", first), write_csv(tmp_path / "b.csv", [renamed]),
             write_csv(tmp_path / "c.csv", [m5, x1])]  # fmt: skip
    for together in (True, False):
        store = Store(tmp_path / f"store-{together}")
        if together:
            summary = ingest_files(store, paths)
        else:
            for path in paths:
                summary = ingest_files(store, [path])
        assert summary.total("rejected") == 0
        for read in range(2):  # from the delta, then from the compacted base
            now = current_of(store, 0)
            assert (now["surname"], now["reason"], now["resident_code"]) == (
                "佐藤", "M2", resident_code(0)), (together, read)  # fmt: skip
            compact(store)

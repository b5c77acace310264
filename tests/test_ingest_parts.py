"""A file larger than GROUP_ROWS is applied in parts, still as one batch and one commit (SPEC §4):
the store it leaves equals the store of an ingest that held every file whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from builders import resident_code
from test_open_format import CALL, write_month

import loaders.ingest
from engine.current import scan_current
from engine.ingest import IngestSession
from engine.store import Store
from loaders.ingest import ingest_files
from loaders.synthetic import generate

SAME = ["person", "version", "last_version", "written_batch", "written_order"]


PART = 4  # rows per part: most files of the small population below are applied in parts


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Store, Store, list, list]:
    """The same files ingested whole and in parts of PART rows."""
    out = tmp_path_factory.mktemp("parts")
    files = sorted(generate(out / "files", residents=400, months=2, seed=11, event_rate=6.0).files)
    whole = Store(out / "whole")
    expected = ingest_files(whole, files)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loaders.ingest, "GROUP_ROWS", PART)
        parts = Store(out / "parts")
        got = ingest_files(parts, files)
    return files, whole, parts, expected.files, got.files


def table(store: Store, name: str, *sort: str) -> pl.DataFrame:
    return pl.read_delta(str(store.table_path(name))).sort(*sort)


def journal(store: Store) -> pl.DataFrame:
    return table(store, "journal", "batch", "outcome", "row").select(
        "batch", "file", "row", "outcome", "person", "version", "apply_order", "reason", "rule",
        "message",
    )


def assert_same_stores(parts: Store, whole: Store, *, batches: int) -> None:
    assert parts.journal_head().batch == whole.journal_head().batch == batches
    assert parts.delta("journal").version() == whole.delta("journal").version()  # one commit each
    assert journal(parts).equals(journal(whole))
    current = [scan_current(s).drop("recorded_at").sort("person").collect() for s in (parts, whole)]
    assert current[0].equals(current[1])
    for name, keys in (("codes", ("kind", "code")), ("positions", ("municipality_code",)),
                       ("held", ("municipality_code", "seq"))):  # fmt: skip
        assert table(parts, name, *keys).equals(table(whole, name, *keys)), name
    assert all(parts.reflected_batch(t) == batches for t in ("codes", "current_delta",
                                                                  "positions", "held"))  # fmt: skip


def test_a_file_applied_in_parts_leaves_the_store_a_whole_file_leaves(
    stores: tuple[list[str], Store, Store, list, list],
) -> None:
    files, whole, parts, expected, got = stores

    assert [f.to_json() for f in got] == [f.to_json() for f in expected]
    assert sum(f.applied for f in got) > 450 and sum(f.rejected for f in got) == 0
    parted = [f for f in files if len(pl.read_parquet(f)) > PART]
    assert len(parted) > 20
    assert_same_stores(parts, whole, batches=len(files))


def test_a_rerun_of_files_applied_in_parts_changes_nothing(
    stores: tuple[list[str], Store, Store, list, list], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files, _, parts, _, _ = stores
    store = Store(tmp_path / "store")
    shutil.copytree(parts.path, store.path)
    monkeypatch.setattr(loaders.ingest, "GROUP_ROWS", PART)
    before = scan_current(store).sort("person").collect()
    named: list[int] = []  # rows whose persons' state was loaded: none, as every row is a duplicate
    ensure = IngestSession.ensure
    monkeypatch.setattr(IngestSession, "ensure",
                        lambda self, text: (named.append(text.height), ensure(self, text))[1])  # fmt: skip

    again = ingest_files(store, files)

    assert again.total("applied") == 0 and again.total("duplicate") > 0
    assert named and sum(named) == 0
    assert scan_current(store).sort("person").collect().equals(before)


def test_a_cancellation_of_a_row_in_an_earlier_part_of_its_file_pops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """changes.csv: M1 D1 M4 M5 M2 | X1 (cancels the M2) M1 M1 (seq gap: held), in parts of 5."""
    write_month(tmp_path)
    files = [str(tmp_path / name) for name in CALL]
    whole = Store(tmp_path / "whole")
    expected = ingest_files(whole, files)
    monkeypatch.setattr(loaders.ingest, "GROUP_ROWS", 5)
    parts = Store(tmp_path / "parts")

    got = ingest_files(parts, files)

    assert [f.to_json() for f in got.files] == [f.to_json() for f in expected.files]
    assert_same_stores(parts, whole, batches=len(files))
    surname = scan_current(parts).filter(pl.col("resident_code") == resident_code(4)).collect()
    assert surname["reason"].to_list() == ["A4"] and surname["surname"].to_list() != ["佐藤"]

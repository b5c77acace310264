"""Provision records and the self-check (SPEC §6): every provided row recorded before the output
exists, found again by My Number over every resident code the person held, newest first."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from agency import NOW, load, requester, run_juki, write_request
from builders import CHIYODA, Municipality, my_number, person, resident_code, row, write_csv
from deltalake import DeltaTable
from stories import ingest_at

from engine import provision
from engine.access import authorize
from engine.provision import FIELDS, audit_self, bucket_of, record_provisions
from engine.store import Store
from loaders import provide
from loaders.services import run_lookup

HOUR = dt.timedelta(hours=1)


@pytest.fixture()
def renamed(tmp_path: Path) -> Store:
    """Person 1 changes resident code (M5) in March; person 2 is someone else."""
    chiyoda = Municipality(CHIYODA)
    store = Store(tmp_path / "store")
    first = [row(chiyoda, "A4", "2024-01-01", person(1)), row(chiyoda, "A4", "2024-01-01", person(2))]
    ingest_at(store, write_csv(tmp_path / "a.csv", first), dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    m5 = [row(chiyoda, "M5", "2024-03-01", person(1, resident_code=resident_code(10)),
              previous_resident_code=resident_code(1))]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "b.csv", m5), dt.datetime(2024, 3, 2, tzinfo=dt.UTC))
    load(store, tmp_path)
    write_request(tmp_path / "req.csv", "my_number", [my_number(1), my_number(2)])
    return store


def lookups(store: Store, tmp_path: Path, days: list[dt.date]) -> list[str]:
    """One lookup per day, an hour apart; returns the request ids."""
    ids = []
    for i, day in enumerate(days):
        who = requester("JPS", "pension-change", tmp_path / f"out{i}.parquet", now=NOW + i * HOUR)
        ids.append(run_lookup(store, tmp_path / "req.csv", who, as_of=day).request_id)
    return ids


@pytest.mark.parametrize("kernel", [False, True], ids=["numpy-codes", "kernel-codes"])
def test_self_check_lists_the_records_of_every_code_held_newest_first(
    renamed: Store, tmp_path: Path, kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the records' codes are formatted by NumPy, or by the numba kernel from FORMAT_KERNEL_ROWS
    monkeypatch.setattr(provision, "FORMAT_KERNEL_ROWS", 0 if kernel else 10**9)
    ids = lookups(renamed, tmp_path, [dt.date(2024, 2, 1), dt.date(2024, 4, 1)])
    page = audit_self(renamed, my_number(1))
    assert [(r["request_id"], r["resident_code"]) for r in page.records] == [
        (ids[1], resident_code(10)), (ids[0], resident_code(1))]  # fmt: skip
    assert list(page.records[0]) == FIELDS
    assert page.records[0]["provided_at"] == NOW + HOUR
    assert page.records[0]["columns"].split(",")[-1] == "protected"
    assert [r["request_id"] for r in audit_self(renamed, my_number(2)).records] == ids[::-1]


def test_self_check_pages_and_bounds(renamed: Store, tmp_path: Path) -> None:
    ids = lookups(renamed, tmp_path, [dt.date(2024, 4, 1)] * 5)
    assert [r["request_id"] for r in audit_self(renamed, my_number(1), limit=2).records] == [
        ids[4], ids[3]]  # fmt: skip
    assert [r["request_id"] for r in audit_self(renamed, my_number(1), limit=2, offset=4).records] == [
        ids[0]]  # fmt: skip
    bounded = audit_self(renamed, my_number(1), since=NOW + HOUR, until=NOW + 3 * HOUR)
    assert [r["request_id"] for r in bounded.records] == [ids[3], ids[2], ids[1]]


def test_audit_self_through_the_cli_prints_a_json_array(renamed: Store, tmp_path: Path) -> None:
    ids = lookups(renamed, tmp_path, [dt.date(2024, 4, 1)])
    result = run_juki("audit", "self", "--my-number", my_number(1), "--json", "--store", "store",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body == [{"resident_code": resident_code(10), "provided_at": "2026-06-01T12:00:00+09:00",
                     "agency": "JPS", "affair": "pension-change", "function": "lookup",
                     "columns": ["resident_code", "my_number", "surname", "given_name",
                                 "surname_kana", "given_name_kana", "birth_date", "sex",
                                 "municipality_code", "address", "status", "protected"],
                     "request_id": ids[0]}]  # fmt: skip
    bad = run_juki("audit", "self", "--my-number", my_number(1)[:-1] + "0", "--store", "store",
                   cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith(f"--my-number '{my_number(1)[:-1]}0': not a valid My Number")
    unknown = run_juki("audit", "self", "--my-number", my_number(77), "--json", "--store", "store",
                       cwd=tmp_path)  # fmt: skip
    assert (unknown.returncode, unknown.stdout.strip()) == (0, "[]")


def test_records_are_committed_before_the_output_so_a_crash_over_records(
    renamed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(provide.OutputWriter, "finish", crash)
    out = tmp_path / "never.parquet"
    with pytest.raises(OSError):
        run_lookup(renamed, tmp_path / "req.csv", requester("JPS", "pension-change", out),
                   as_of=dt.date(2024, 4, 1))  # fmt: skip
    assert not out.exists()
    assert len(audit_self(renamed, my_number(1)).records) == 1


def test_one_persons_records_are_read_from_one_bucket(renamed: Store, tmp_path: Path) -> None:
    lookups(renamed, tmp_path, [dt.date(2024, 4, 1)] * 3)
    table = DeltaTable(str(renamed.table_path("provisions")))
    code = resident_code(10)
    files = table.file_uris(file_pruning_predicate=f"bucket = {bucket_of(code)} AND "
                            f"resident_code = '{code}'")  # fmt: skip
    assert len(files) == 3 and len(table.file_uris()) == 6
    assert all(f"bucket={bucket_of(code)}/year=2026" in f for f in files)


def test_provision_records_are_blind_appends_beside_ingest(renamed: Store, tmp_path: Path) -> None:
    grant = authorize(renamed, agency="JPS", affair="pension-change", function="lookup",
                      columns=None, parameters={}, now=NOW)  # fmt: skip
    rows = pl.DataFrame({"resident_code": [resident_code(2)] * 10, "columns": ["surname"] * 10})
    chiyoda = Municipality(CHIYODA)
    chiyoda.seq = 3
    more = write_csv(tmp_path / "c.csv", [row(chiyoda, "A4", "2024-05-01", person(3))])
    errors: list[BaseException] = []

    def append() -> None:
        try:
            for _ in range(3):
                record_provisions(renamed, rows, grant, provided_at=NOW)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=append) for _ in range(3)]
    threads.append(threading.Thread(
        target=lambda: ingest_at(renamed, more, dt.datetime(2024, 5, 2, tzinfo=dt.UTC))))  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(audit_self(renamed, my_number(2), limit=1000).records) == 90
    assert pl.read_delta(str(renamed.table_path("journal"))).filter(
        pl.col("outcome") == "applied").height == 4


def test_compaction_keeps_every_record_and_leaves_one_file_per_bucket_year(
    renamed: Store, tmp_path: Path
) -> None:
    lookups(renamed, tmp_path, [dt.date(2024, 4, 1)] * 3)
    before = audit_self(renamed, my_number(1), limit=100).records
    result = run_juki("audit", "compact", "--store", "store", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = DeltaTable(str(renamed.table_path("provisions")))
    assert len(table.file_uris()) == 2  # two persons, two buckets
    assert audit_self(renamed, my_number(1), limit=100).records == before
    assert table.to_pyarrow_table().num_rows == 6
    # checkpointed as compacted: a self-check's open replays no commit
    log = renamed.table_path("provisions") / "_delta_log"
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == table.version()


def test_compaction_writes_sorted_row_groups_a_self_check_skips_by_their_statistics(
    renamed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setattr(provision, "_RECORD_ROWS_PER_GROUP", 2)
    lookups(renamed, tmp_path, [dt.date(2024, 4, 1)] * 5)  # 5 records of each person's code
    before = audit_self(renamed, my_number(1), limit=100).records

    provision.compact(renamed)

    root = renamed.table_path("provisions")
    for uri in DeltaTable(str(root)).file_uris():
        meta = pq.ParquetFile(uri).metadata
        assert meta.num_rows == 5 and meta.num_row_groups == 3  # 2 + 2 + 1
        code = meta.schema.to_arrow_schema().get_field_index("resident_code")
        assert all(meta.row_group(g).column(code).statistics.has_min_max for g in range(3))
    assert audit_self(renamed, my_number(1), limit=100).records == before


def test_the_records_table_is_checkpointed_every_interval(
    renamed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One commit per request: without checkpoints every open of the table replays them all
    (1,000 requests: 0.8 s per self-check before it reads a record)."""
    from engine import deltalog

    monkeypatch.setattr(deltalog, "CHECKPOINT_INTERVAL", 3)
    ids = lookups(renamed, tmp_path, [dt.date(2024, 4, 1)] * 4)
    log = renamed.table_path("provisions") / "_delta_log"
    checkpoints = sorted(p.name for p in log.glob("*.checkpoint.parquet"))
    assert checkpoints == [f"{3:020d}.checkpoint.parquet"]  # version 0 is the empty table
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == 3
    assert [r["request_id"] for r in audit_self(renamed, my_number(2)).records] == ids[::-1]


def _streamed(parts: int, fail_after: int | None = None) -> provide.Provision:
    """A streamed result of `parts` parts, each providing both persons' rows (and raising
    after `fail_after` parts)."""
    codes = [resident_code(10), resident_code(2)]

    def each() -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        for i in range(parts):
            if i == fail_after:
                raise OSError("the disk went away")
            yield (pl.DataFrame({"resident_code": codes}),
                   pl.DataFrame({"resident_code": codes, "columns": ["resident_code"] * 2}))
    return provide.Provision.streamed(each(), parts)


def _provide(store: Store, tmp_path: Path, result: provide.Provision) -> provide.ProvideSummary:
    return provide.provide(store, agency="JPS", affair="pension-change", function="lookup",
                           columns=None, parameters={}, now=NOW, compute=lambda grant: result,
                           output=requester("JPS", "pension-change", tmp_path / "o.parquet").output)  # fmt: skip


def _parquet_files(store: Store) -> set[str]:
    root = store.table_path("provisions")
    return {str(p.relative_to(root)) for p in root.rglob("*.parquet")}


def test_a_large_requests_records_written_while_it_streams_are_one_commit(
    renamed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provide, "FLUSH_RECORDS", 3)  # written after every second part
    lookups(renamed, tmp_path, [dt.date(2024, 4, 1)])
    before = DeltaTable(str(renamed.table_path("provisions"))).version()
    summary = _provide(renamed, tmp_path, _streamed(5))
    table = DeltaTable(str(renamed.table_path("provisions")))
    assert (summary.recorded, table.version()) == (10, before + 1)
    mine = [r for r in audit_self(renamed, my_number(1), limit=100).records
            if r["request_id"] == summary.request_id]  # fmt: skip
    assert len(mine) == 5
    # three writes (after parts 2 and 4, the rest at the end): three files per bucket
    code = resident_code(10)
    files = table.file_uris(file_pruning_predicate=f"bucket = {bucket_of(code)}")
    assert len(files) == 1 + 3
    assert _parquet_files(renamed) == {a for a in table.get_add_actions(flatten=True)
                                       .column("path").to_pylist()}  # fmt: skip


def test_a_failed_request_leaves_no_records_and_no_files_written_while_it_streamed(
    renamed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provide, "FLUSH_RECORDS", 3)
    lookups(renamed, tmp_path, [dt.date(2024, 4, 1)])
    before = DeltaTable(str(renamed.table_path("provisions"))).version()
    files = _parquet_files(renamed)
    with pytest.raises(OSError, match="the disk went away"):
        _provide(renamed, tmp_path, _streamed(9, fail_after=7))
    assert DeltaTable(str(renamed.table_path("provisions"))).version() == before
    assert _parquet_files(renamed) == files
    assert not (tmp_path / "o.parquet").exists()


def test_a_my_number_resolves_to_every_resident_code_the_codes_table_gives_its_person() -> None:
    """The self-check takes a person's resident codes from the journal's issuing rows; the codes
    table (derived from those rows) is the oracle, for every person who changed a code and a
    sample of the others, by current and by retired My Numbers."""
    from synthetic_store import synthetic_store

    store = synthetic_store()
    codes = pl.read_delta(str(store.table_path("codes")))
    numbers = codes.filter(pl.col("kind") == 2).select("person", my_number="code")
    held = (codes.filter(pl.col("kind") == 1).group_by("person")
            .agg(pl.col("code").sort().alias("codes")))  # fmt: skip
    changed = codes.group_by("person").len().filter(pl.col("len") > 2)["person"]
    assert changed.len() > 0  # the generated months change some codes
    asked = numbers.filter(pl.col("person").is_in(changed.implode())
                           | (pl.col("person") % 50 == 0))  # fmt: skip
    expected = asked.join(held, on="person")
    assert expected.height == asked.height > changed.len()
    for n, want in zip(expected["my_number"], expected["codes"], strict=True):
        got = provision.resident_codes_of_my_number(store, n)
        assert got == [f"{c:011d}" for c in want], n

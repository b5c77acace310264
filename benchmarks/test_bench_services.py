"""Agency-service benchmarks at small sizes (`make bench`), each beside a straightforward Polars
or DuckDB baseline over the same store in the same run (pytest-benchmark groups W1, W2,
base-date; the group table prints the ratios).

W1 — the periodic change check: every resident is a target; the window is the last month.
W2 — per-request lookups of every resident's My Number in random order.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from engine.access import load_registry
from engine.store import Store
from loaders.ingest import ingest_files
from loaders.outputs import OutputOptions
from loaders.services import Requester, run_base_date, run_changes, run_lookup

pytestmark = pytest.mark.benchmark

REGISTRY = """
[[agency]]
code = "JPS"
name = "日本年金機構"
scope = "national"

[[affair]]
code = "pension-change"
name = "国民年金等の被保険者等の異動情報の確認"
agencies = ["JPS"]
functions = ["lookup", "changes", "extract"]
columns = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
           "given_name_kana", "birth_date", "sex", "address", "municipality_code", "status"]
"""
COLUMNS = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
           "given_name_kana", "birth_date", "sex", "address", "municipality_code", "status"]  # fmt: skip


@pytest.fixture(scope="module")
def served(population, loaded_store, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The loaded store plus its months of changes, a registry, every My Number as targets,
    the last month's window, and the current table exported for the baselines."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(loaded_store, root / "store")
    store = Store(root / "store")
    last = max(Path(f).name[:7] for f in population["changes"])
    ingest_files(store, [f for f in population["changes"] if not Path(f).name.startswith(last)])
    since = store.journal_head().recorded_at
    ingest_files(store, [f for f in population["changes"] if Path(f).name.startswith(last)])
    until = store.journal_head().recorded_at
    (root / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    load_registry(store, root / "registry.toml", now=until)
    current = pl.read_delta(str(store.table_path("current_base")))
    delta = pl.read_delta(str(store.table_path("current_delta")))
    current = (
        pl.concat([current, delta])
        .sort("written_batch", "written_order")
        .unique("person", keep="last")
        .filter(pl.col("version").is_not_null())
    )
    current.write_parquet(root / "current.parquet")
    pl.read_delta(str(store.table_path("journal"))).filter(
        pl.col("outcome").is_in(["applied", "released"])
    ).select("person", "batch", "apply_order", "reason", "change_date", "recorded_at").write_parquet(
        root / "history.parquet"
    )
    keys = current.select("my_number").sample(fraction=1.0, shuffle=True, seed=3)
    keys.write_parquet(root / "targets.parquet")
    return {"root": root, "store": store, "since": since, "until": until}


def _who(out: Path) -> Requester:
    return Requester("JPS", "pension-change", OutputOptions(out), None,
                     dt.datetime.now(dt.UTC))  # fmt: skip


@pytest.mark.benchmark(group="W1")
def test_w1_changes(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    root = served["root"]
    summary = benchmark(lambda: run_changes(served["store"], root / "targets.parquet",
                                            _who(root / "w1.parquet"), since=served["since"],
                                            until=served["until"]))  # fmt: skip
    assert summary.rows > 0


@pytest.mark.benchmark(group="W1")
def test_w1_baseline_duckdb_join_with_current(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    """Targets joined with the full current table, then with the window's notifications."""
    root = served["root"]
    sql = f"""
        COPY (
          WITH t AS (SELECT row_number() OVER () AS request_row, my_number
                     FROM '{root}/targets.parquet'),
               w AS (SELECT person, list(reason ORDER BY batch, apply_order) AS reasons,
                            min(change_date) AS first_change_date,
                            max(change_date) AS last_change_date
                     FROM '{root}/history.parquet'
                     WHERE recorded_at > $since AND recorded_at <= $until GROUP BY person)
          SELECT t.request_row, {", ".join(f"c.{c}" for c in COLUMNS)}, c.protected,
                 w.reasons, w.first_change_date, w.last_change_date
          FROM t JOIN '{root}/current.parquet' c ON c.my_number = t.my_number
                 JOIN w ON w.person = c.person
          ORDER BY t.request_row
        ) TO '{root}/w1-duckdb.parquet' (FORMAT parquet)"""

    def run() -> None:
        con = duckdb.connect()
        con.execute(sql, {"since": served["since"], "until": served["until"]})
        con.close()

    benchmark(run)


@pytest.mark.benchmark(group="W2")
def test_w2_lookup(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    root = served["root"]
    summary = benchmark(lambda: run_lookup(served["store"], root / "targets.parquet",
                                           _who(root / "w2.parquet"), as_of=dt.date(2030, 1, 1)))  # fmt: skip
    assert summary.rows == summary.recorded


@pytest.mark.benchmark(group="W2")
def test_w2_baseline_polars_join(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    root = served["root"]

    def run() -> None:
        (
            pl.scan_parquet(root / "targets.parquet")
            .with_row_index("request_row", offset=1)
            .join(
                pl.scan_parquet(root / "current.parquet").select(
                    "my_number", *COLUMNS[:1], *COLUMNS[2:], "protected"
                ),
                on="my_number",
                how="left",
                maintain_order="left",
            )
            .sink_parquet(root / "w2-polars.parquet")
        )

    benchmark(run)


@pytest.mark.benchmark(group="base-date")
def test_base_date_extract(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    root = served["root"]
    benchmark(lambda: run_base_date(served["store"], _who(root / "base.parquet"),
                                    date=dt.date(2024, 3, 15)))  # fmt: skip


@pytest.mark.benchmark(group="base-date")
def test_base_date_baseline_polars_as_of(benchmark, served) -> None:  # type: ignore[no-untyped-def]
    """A full-history Polars as-of filter (no cancellations), the issue's reference query."""
    store = served["store"]
    root = served["root"]

    def run() -> None:
        (
            pl.scan_delta(str(store.table_path("journal")))
            .filter(
                pl.col("outcome").is_in(["applied", "released"])
                & (pl.col("reason") != "X1")
                & (pl.col("change_date") <= dt.date(2024, 3, 15))
            )
            .sort("batch", "apply_order")
            .group_by("person")
            .last()
            .filter(pl.col("status") == 1)
            .select(*COLUMNS, "protected")
            .sink_parquet(root / "base-polars.parquet")
        )

    benchmark(run)

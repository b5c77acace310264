"""Ingest benchmarks at small sizes (`make bench`), with the Polars and DuckDB validation
baselines over the same rows in the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.baselines import duckdb_validate, polars_validate
from engine.store import Store
from loaders.ingest import ingest_files

pytestmark = pytest.mark.benchmark


@pytest.mark.benchmark(group="ingest-initial")
def test_initial_load(benchmark, population, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    counter = iter(range(1_000_000))

    def fresh() -> tuple[tuple[Store], dict]:
        return (Store(tmp_path / f"s{next(counter)}"),), {}

    report = benchmark.pedantic(
        lambda store: ingest_files(store, population["initial"]), setup=fresh, rounds=3
    )
    assert report.total("rejected") == 0


@pytest.mark.benchmark(group="ingest-changes")
def test_changes_into_loaded_store(benchmark, population, loaded_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    counter = iter(range(1_000_000))

    def fresh() -> tuple[tuple[Store], dict]:
        target = tmp_path / f"s{next(counter)}"
        shutil.copytree(loaded_store, target)
        return (Store(target),), {}

    report = benchmark.pedantic(
        lambda store: ingest_files(store, population["changes"]), setup=fresh, rounds=3
    )
    assert report.total("rejected") == 0


@pytest.mark.benchmark(group="ingest-changes")
def test_baseline_polars_validation(benchmark, population) -> None:  # type: ignore[no-untyped-def]
    benchmark(polars_validate, population["changes"])


@pytest.mark.benchmark(group="ingest-changes")
def test_baseline_duckdb_validation(benchmark, population) -> None:  # type: ignore[no-untyped-def]
    benchmark(duckdb_validate, population["changes"])

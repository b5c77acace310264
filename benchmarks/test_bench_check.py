"""W5 benchmarks at small sizes (`make bench`): juki's uniqueness and check-digit kernels beside
the same checks written directly in Polars and in DuckDB SQL, and the whole `juki check` over the
benchmark population's store. National sizes: `python -m benchmarks.check_scale`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from benchmarks.w5 import duckdb_w5, juki_w5, polars_w5, synthetic_codes

pytestmark = pytest.mark.benchmark
PERSONS = 2_000_000


@pytest.fixture(scope="module")
def codes() -> dict[str, np.ndarray]:
    columns = synthetic_codes(PERSONS, seed=5)
    juki_w5({k: v[:1000] for k, v in columns.items()})  # compile (or load the cache) first
    return columns


@pytest.mark.benchmark(group="W5")
def test_w5_juki_kernels(benchmark, codes) -> None:  # type: ignore[no-untyped-def]
    result = benchmark(juki_w5, codes)
    assert result.bad == {c: 1000 for c in codes}


@pytest.mark.benchmark(group="W5")
def test_w5_baseline_polars(benchmark, codes) -> None:  # type: ignore[no-untyped-def]
    result = benchmark.pedantic(polars_w5, args=(codes,), rounds=3)
    assert result.same_as(juki_w5(codes))


@pytest.mark.benchmark(group="W5")
def test_w5_baseline_duckdb(benchmark, codes) -> None:  # type: ignore[no-untyped-def]
    result = benchmark.pedantic(duckdb_w5, args=(codes,), rounds=3)
    assert result.same_as(juki_w5(codes))


@pytest.mark.benchmark(group="W5-store")
def test_w5_whole_check_of_the_loaded_store(benchmark, loaded_store: Path) -> None:  # type: ignore[no-untyped-def]
    from engine.check import run_check
    from engine.store import Store

    report = benchmark.pedantic(run_check, args=(Store(loaded_store),),
                                kwargs={"today": dt.date.today()}, rounds=3)  # fmt: skip
    assert report.exit_code == 0

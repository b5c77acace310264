"""Push benchmark at a small size (`make bench`, group W6): one daily `push run` of 30
subscriptions over the last month of the 50 k-resident population, each round on a fresh copy of
the store, beside `juki changes` called once per subscription over the same window (what an agency
does without push). The national-size figure comes from `python -m benchmarks.push_scale`."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.access import load_registry
from engine.current import scan_current
from engine.store import Store
from engine.subscriptions import Targets, add_subscription
from loaders.ingest import ingest_files
from loaders.outputs import OutputOptions
from loaders.push import run_push
from loaders.services import Requester, run_changes

pytestmark = pytest.mark.benchmark

SUBSCRIPTIONS = 30
PER_SUBSCRIPTION = 20_000
REGISTRY = """
[[agency]]
code = "JPS"
name = "日本年金機構"
scope = "national"

[[affair]]
code = "pension-change"
name = "国民年金等の被保険者等の異動情報の確認"
agencies = ["JPS"]
functions = ["changes", "push"]
columns = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
           "given_name_kana", "birth_date", "sex", "address", "municipality_code", "status"]
"""


@pytest.fixture(scope="module")
def subscribed(population, loaded_store, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The store with every month but the last, 30 subscriptions, then the last month: the run's
    window. Target files of the same codes for the baseline."""
    root = tmp_path_factory.mktemp("push")
    shutil.copytree(loaded_store, root / "store")
    store = Store(root / "store")
    last = max(Path(f).name[:7] for f in population["changes"])
    ingest_files(store, [f for f in population["changes"] if not Path(f).name.startswith(last)])
    (root / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    load_registry(store, root / "registry.toml", now=dt.datetime.now(dt.UTC))
    numbers = scan_current(store).select("my_number").collect()["my_number"].cast(pl.Int64)
    rng = np.random.default_rng(5)
    paths = []
    for i in range(SUBSCRIPTIONS):
        codes = rng.choice(numbers.to_numpy(), size=PER_SUBSCRIPTION, replace=False)
        frame = pl.DataFrame({"request_row": np.arange(1, len(codes) + 1), "code": codes})
        add_subscription(store, Targets("my_number", frame, f"bench-{i}", ""), agency="JPS",
                         affair="pension-change", interval="daily", name=f"jps-{i:02d}",
                         now=dt.datetime.now(dt.UTC))  # fmt: skip
        path = root / f"targets-{i:02d}.parquet"
        frame.select(my_number=pl.col("code").cast(pl.String).str.zfill(12)).write_parquet(path)
        paths.append(path)
    since = store.journal_head().recorded_at
    ingest_files(store, [f for f in population["changes"] if Path(f).name.startswith(last)])
    until = store.journal_head().recorded_at
    return {"root": root, "store": store, "since": since, "until": until, "paths": paths}


@pytest.mark.benchmark(group="W6")
def test_w6_push_run_of_30_subscriptions(benchmark, subscribed) -> None:  # type: ignore[no-untyped-def]
    rounds = itertools.count()
    at = subscribed["until"] + dt.timedelta(seconds=1)

    def setup():  # type: ignore[no-untyped-def]
        fresh = subscribed["root"] / f"round-{next(rounds)}"
        shutil.copytree(subscribed["store"].path, fresh)
        return (Store(fresh),), {}

    summary = benchmark.pedantic(lambda store: run_push(store, at=at), setup=setup, rounds=3)
    assert len(summary.delivered) == SUBSCRIPTIONS


@pytest.mark.benchmark(group="W6")
def test_w6_baseline_changes_once_per_subscription(benchmark, subscribed) -> None:  # type: ignore[no-untyped-def]
    root = subscribed["root"]

    def run() -> int:
        rows = 0
        for i, path in enumerate(subscribed["paths"]):
            who = Requester("JPS", "pension-change", OutputOptions(root / f"c-{i:02d}.parquet"),
                            None, dt.datetime.now(dt.UTC))  # fmt: skip
            rows += run_changes(subscribed["store"], path, who, since=subscribed["since"],
                                until=subscribed["until"]).rows  # fmt: skip
        return rows

    assert benchmark.pedantic(run, rounds=1) > 0

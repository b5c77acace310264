"""Push scale runner (issue 6): one daily `push run` of 30 subscriptions over a day of changes.

    python -m benchmarks.push_scale --residents 5_000_000 --targets 30_000_000 --out /tmp/juki-push

Builds (or reuses with --reuse) a store of --residents persons, adds --subscriptions
subscriptions totalling --targets My Numbers, then ingests one generated month scaled to about a
national day of changes (~60 k rows) and times the run that delivers it. Each subscription holds
the share of real residents a national one would (150 M targets over 125 M residents: each
resident in ~1.2 of 30 subscriptions, so hits per subscription match national ones), padded with
valid My Numbers never issued (they cost the semi-join the same). Baselines in the same run:
`juki changes` called once per subscription (what agencies do without push), and DuckDB SQL over
the same tables' Parquet files computing only the hits (targets semi-joined with the codes of
the window's persons).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.baselines import link_copy
from engine.access import load_registry
from engine.codes import with_check_digit
from engine.store import Store
from engine.subscriptions import Targets, add_subscription
from loaders.demo import month_of
from loaders.ingest import ingest_files
from loaders.outputs import OutputOptions
from loaders.push import run_push
from loaders.services import Requester, run_changes
from loaders.synthetic import generate

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
NATIONAL_SHARE = 1.2  # 150 M targets / 125 M residents


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _build(out: Path, residents: int, event_rate: float, seed: int) -> tuple[list[str], Path]:
    """The store after the initial load, and the change files of one month (the 'day')."""
    files_dir, store_dir = out / "files", out / "base"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    files = sorted(generate(files_dir, residents=residents, months=1, seed=seed,
                            event_rate=event_rate).files)  # fmt: skip
    print(f"generated {residents:,} residents + 1 month in {time.perf_counter() - t:.1f} s")
    initial = [f for f in files if month_of(f).startswith("0000")]
    t = time.perf_counter()
    ingest_files(Store(store_dir), initial)
    print(f"initial load in {time.perf_counter() - t:.1f} s")
    return [f for f in files if not month_of(f).startswith("0000")], store_dir


def _targets(store: Store, subscriptions: int, total: int, seed: int) -> list[np.ndarray]:
    """Per subscription, int64 My Numbers: its national share of residents plus never-issued
    valid codes, shuffled."""
    rng = np.random.default_rng(seed)
    from engine.current import scan_current

    current = scan_current(store).select("my_number").collect()
    population = current["my_number"].cast(pl.Int64).to_numpy()
    per = total // subscriptions
    real = min(per, int(len(population) * NATIONAL_SHARE / subscriptions))
    out = []
    issued = np.sort(population)
    for _ in range(subscriptions):
        chosen = rng.choice(population, size=real, replace=False)
        filler = np.empty(0, dtype=np.int64)
        while len(filler) < per - real:  # valid My Numbers never issued to anyone
            drawn = with_check_digit(rng.integers(10**9, 10**11, size=per - real), "my_number")
            at = np.minimum(np.searchsorted(issued, drawn), len(issued) - 1)
            drawn = drawn[issued[at] != drawn]
            filler = np.concatenate([filler, drawn])[: per - real]
        codes = np.concatenate([chosen, filler]).astype(np.int64)
        rng.shuffle(codes)
        out.append(codes)
    return out


def run(residents: int, subscriptions: int, total: int, out: Path, *, seed: int,
        event_rate: float, reuse: bool, baselines: bool, prepared: Path | None = None,
        day_rows: int = 0) -> list[tuple[str, str]]:  # fmt: skip
    rows: list[tuple[str, str]] = []
    base = prepared or out / "base"
    if prepared is not None or (reuse and (base / "journal").is_dir()):
        files = sorted(str(p) for p in (out / "files").glob("*")
                       if not month_of(str(p)).startswith("0000"))  # fmt: skip
        if day_rows:  # the first half-month files up to about a national day's rows
            first = [f for f in files if "-1-" in Path(f).name]
            sizes = np.cumsum([pl.scan_parquet(f).select(pl.len()).collect().item() for f in first])
            files = first[: int(np.searchsorted(sizes, day_rows)) + 1]
    else:
        files, base = _build(out, residents, event_rate, seed)
    work = out / "store"
    link_copy(base, work)
    store = Store(work)
    (out / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    load_registry(store, out / "registry.toml", now=dt.datetime.now(dt.UTC))

    t = time.perf_counter()
    sets = _targets(store, subscriptions, total, seed)
    t_targets = time.perf_counter() - t
    t = time.perf_counter()
    for i, codes in enumerate(sets):
        frame = pl.DataFrame({"request_row": np.arange(1, len(codes) + 1, dtype=np.int64),
                              "code": codes})  # fmt: skip
        add_subscription(store, Targets("my_number", frame, f"bench-{i}", ""), agency="JPS",
                         affair="pension-change", interval="daily", name=f"jps-{i + 1:02d}",
                         now=dt.datetime.now(dt.UTC))  # fmt: skip
    t_add = time.perf_counter() - t
    rows.append((f"subscribe: {subscriptions} subscriptions, {total:,} targets",
                 f"{t_add:.1f} s ({total / t_add:,.0f} targets/s; drawing them {t_targets:.1f} s)"))  # fmt: skip

    since = store.journal_head().recorded_at
    t = time.perf_counter()
    report = ingest_files(store, files)
    window = report.total("applied") + report.total("released")
    rows.append(("the day's changes ingested", f"{window:,} applied rows, {len(files)} files, "
                 f"{time.perf_counter() - t:.1f} s"))  # fmt: skip
    until = store.journal_head().recorded_at
    assert since is not None and until is not None

    at = until + dt.timedelta(seconds=1)
    t = time.perf_counter()
    summary = run_push(store, at=at)
    push_s = time.perf_counter() - t
    delivered = sum(d.rows for d in summary.delivered)
    rows.append((f"juki push run: {len(summary.delivered)} runs delivered",
                 f"{push_s:.1f} s ({delivered:,} rows, {total / push_s:,.0f} targets/s)"))  # fmt: skip
    t = time.perf_counter()
    jst = dt.timezone(dt.timedelta(hours=9))
    midnight = dt.datetime.combine(at.astimezone(jst).date() + dt.timedelta(days=1), dt.time(),
                                   jst)  # fmt: skip
    again = run_push(store, at=min(at + dt.timedelta(hours=1), midnight - dt.timedelta(seconds=1)))
    rows.append(("a second run the same day (nothing due)",
                 f"{time.perf_counter() - t:.2f} s ({len(again.delivered)} delivered)"))  # fmt: skip

    if baselines:
        rows += _duckdb_hits(store, summary.upto, push_s, delivered)
        rows += _changes_each(store, out, sets, since, until, push_s)
    rows.append(("peak RSS", f"{_rss_gib():.1f} GiB"))
    return rows


def _duckdb_hits(store: Store, upto: int, push_s: float, delivered: int) -> list[tuple[str, str]]:
    """Plain DuckDB SQL over the tables' Parquet files: only the hits of every subscription."""
    import duckdb
    from deltalake import DeltaTable

    def files(name: str) -> list[str]:
        return DeltaTable(str(store.table_path(name))).file_uris()

    con = duckdb.connect()
    t = time.perf_counter()
    journal, codes, targets = files("journal"), files("codes"), files("targets")
    n = con.execute("""
        WITH window_persons AS (
            SELECT DISTINCT person FROM read_parquet($j)
            WHERE batch > $w AND batch <= $u AND outcome IN ('applied', 'released')),
        window_codes AS (
            SELECT code, person FROM read_parquet($c)
            WHERE kind = 2 AND person IN (SELECT person FROM window_persons))
        SELECT count(*) FROM read_parquet($t, hive_partitioning = true) t
        JOIN window_codes USING (code)
    """, {"j": journal, "c": codes, "t": targets, "w": _base_batch(store), "u": upto}).fetchone()
    s = time.perf_counter() - t
    hits = n[0] if n else 0
    return [("baseline: DuckDB SQL, hits only (no records, files or provisions)",
             f"{s:.1f} s ({hits:,} hits vs {delivered:,} rows delivered; "
             f"{s / push_s:.2f} of push's time)")]  # fmt: skip


def _base_batch(store: Store) -> int:
    """The watermark the subscriptions started from (the initial load's last batch)."""
    from engine.subscriptions import read_subscriptions

    return min(s.watermark for s in read_subscriptions(store).values())


def _changes_each(store: Store, out: Path, sets: list[np.ndarray], since: dt.datetime,
                  until: dt.datetime, push_s: float) -> list[tuple[str, str]]:  # fmt: skip
    """`juki changes` once per subscription over the same window (target files as agencies
    send them: text My Numbers)."""
    paths = []
    for i, codes in enumerate(sets):
        path = out / f"targets-{i + 1:02d}.parquet"
        pl.DataFrame({"my_number": codes}).select(
            pl.col("my_number").cast(pl.String).str.zfill(12)).write_parquet(path)
        paths.append(path)
    t = time.perf_counter()
    rows = 0
    for i, path in enumerate(paths):
        who = Requester("JPS", "pension-change", OutputOptions(out / f"changes-{i + 1:02d}.parquet"),
                        None, dt.datetime.now(dt.UTC))  # fmt: skip
        rows += run_changes(store, path, who, since=since, until=until).rows
    s = time.perf_counter() - t
    return [(f"baseline: `juki changes` once per subscription ({len(paths)} calls)",
             f"{s:.1f} s ({rows:,} rows; push is {s / push_s:.1f}x faster)")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    def number(s: str) -> int:
        return int(s.replace("_", ""))

    parser.add_argument("--residents", type=number, default=1_000_000)
    parser.add_argument("--targets", type=number, default=3_000_000)
    parser.add_argument("--subscriptions", type=int, default=30)
    parser.add_argument("--event-rate", type=float, default=None,
                        help="default: about 60 k change rows in the month (a national day)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/juki-push-scale"))
    parser.add_argument("--reuse", action="store_true", help="reuse the built store in --out")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--prepared", type=Path, default=None,
                        help="a loaded store (e.g. the scale runner's 125 M <out>/loaded) whose "
                             "change files are in --out/files: the day is the first half-month "
                             "files up to --day-rows rows")  # fmt: skip
    parser.add_argument("--day-rows", type=number, default=60_000)
    args = parser.parse_args()
    # a 10 M population at 12.4x gives ~1.7 M rows a month: ~60 k rows ≈ 0.44x for 10 M
    rate = args.event_rate or 0.44 * 10_000_000 / args.residents
    rows = run(args.residents, args.subscriptions, args.targets, args.out, seed=args.seed,
               event_rate=rate, reuse=args.reuse, baselines=not args.skip_baselines,
               prepared=args.prepared, day_rows=args.day_rows if args.prepared else 0)  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"juki push scale run: {args.residents:,} residents, {args.subscriptions} "
          f"subscriptions, {args.targets:,} targets, event rate {rate:.2f}x")  # fmt: skip
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    import os
    import sys

    main()
    sys.stdout.flush()
    os._exit(0)

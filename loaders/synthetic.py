"""Deterministic synthetic population: change-notification files (SPEC §4) that `juki ingest`
applies in full, for tests, demos and benchmarks at any size up to the national 125 M.

`generate(out_dir, residents=N, months=M)` writes, per prefecture PP (01–47):

- `0000-00-initial-PP.parquet`: the initial population as A4 rows (ex officio entry) dated the
  first day of the `start` month, everyone born before that day;
- for each month `YYYY-MM` from `start`: `YYYY-MM-1-PP.parquet` with every reason but A2, then
  `YYYY-MM-2-PP.parquet` with the A2 move-ins (their D1 is in a `-1-` file of the same month,
  possibly another prefecture's). A prefecture with no rows in a month gets no file.

Plain lexicographic order of the names is the causal order and the order to ingest them: the
initial files, then month by month all `-1-` files before all `-2-` files. In that order `seq`
runs 1, 2, 3, … per municipality without gaps and every row passes the rules of SPEC §3/§4, so
`juki ingest` of the sorted files applies every row. Files whose names follow this scheme are
removed from `out_dir` first, so a directory never mixes two runs. The same arguments give
byte-identical files.

Realism follows reference/population.md (see `synthetic_figures`); people live as compact NumPy
columns (`synthetic_people`), text is rendered by Arrow (`synthetic_files`). Throughput check:
`python -m loaders.synthetic --residents 2000000 --months 1 --out /tmp/gen`.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from engine.errors import UsageError
from loaders import synthetic_figures as fig
from loaders.synthetic_codes import CodeIssuer
from loaders.synthetic_events import OFFICE_HOURS_S, Month, simulate_month
from loaders.synthetic_files import (
    FILE_NAME,
    FileFormat,
    NotificationWriter,
    Renderer,
    initial_file_name,
    month_file_name,
    timestamps_us,
)
from loaders.synthetic_names import NameTables, build_tables
from loaders.synthetic_people import (
    REGISTERED,
    People,
    draw_age_sex,
    draw_kind,
    draw_persons,
)
from loaders.synthetic_places import Geography, build_geography
from loaders.synthetic_rows import RowBatch, sequence, split_by_prefecture

CHUNK = 1 << 20  # persons per row group of an initial file: bounds memory at any size
WORKERS = 2  # files are rendered and written on two threads (Arrow and NumPy release the GIL)


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote: paths in ingest order, total rows, and how long it took."""

    residents: int
    months: int
    files: list[str]
    rows: int
    seconds: float

    def to_json(self) -> dict:
        return {**asdict(self), "rows_per_second": round(self.rows / max(self.seconds, 1e-9))}


@dataclass
class _Run:
    """Everything shared by the steps of one run."""

    out: Path
    seed: int
    event_rate: float
    file_format: FileFormat
    names: NameTables
    geo: Geography
    renderer: Renderer
    issuer: CodeIssuer
    people: People
    last_seq: np.ndarray  # per municipality: the last seq sent
    first_day: int  # the registration date of the initial population (days since the epoch)


def generate(
    out_dir: str | Path,
    *,
    residents: int,
    months: int,
    seed: int = 1,
    start: str = "2024-01",
    file_format: Literal["parquet", "csv"] = "parquet",
    progress: Callable[[int, int], None] | None = None,
    event_rate: float = 1.0,
) -> GenerateSummary:
    """Write the initial population of `residents` persons and `months` months of changes.

    `event_rate` multiplies the monthly event volumes: a 10 M population at 12.5x gives the
    ~1.7 M change rows of one national month (the ingest benchmark's workload)."""
    began = time.perf_counter()
    start_month = _check_arguments(residents, months, start, file_format)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if FILE_NAME.match(stale.name):
            stale.unlink()
    names, geo = build_tables(), build_geography()
    run = _Run(
        out=out,
        seed=seed,
        event_rate=event_rate,
        file_format=file_format,
        names=names,
        geo=geo,
        renderer=Renderer(names, geo),
        issuer=CodeIssuer(seed),
        people=People(residents + months * _expected_new_persons(residents)),
        last_seq=np.zeros(len(geo.code), dtype=np.int64),
        first_day=int(start_month.astype("datetime64[D]").astype(np.int64)),
    )
    monthly = int(residents * 20_000_000 / fig.REFERENCE_POPULATION / 12)  # ~20 M rows a year
    total = residents + months * monthly
    report = progress or (lambda done, total: None)
    with ThreadPoolExecutor(WORKERS) as pool:
        written = _write_initial(run, pool, residents, lambda done: report(done, total))
        for i in range(months):
            written += _write_month(run, pool, start_month, i)
            report(residents + (i + 1) * monthly, total)
    report(total, total)
    files = sorted(written, key=lambda f: f[0])
    return GenerateSummary(
        residents=residents,
        months=months,
        files=[str(out / name) for name, _ in files],
        rows=sum(rows for _, rows in files),
        seconds=time.perf_counter() - began,
    )


def _check_arguments(residents: int, months: int, start: str, file_format: str) -> np.datetime64:
    if residents < 1:
        raise UsageError(f"--residents {residents}: must be at least 1")
    if months < 0:
        raise UsageError(f"--months {months}: must not be negative")
    if file_format not in ("parquet", "csv"):
        raise UsageError(f"--format {file_format}: must be parquet or csv")
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", start):
        raise UsageError(f"--start {start!r}: must be a month YYYY-MM")
    return np.datetime64(start, "M")


def _expected_new_persons(residents: int) -> int:
    """Births and arrivals a month, with room to spare (the arrays grow if it is exceeded)."""
    yearly = fig.YEARLY["birth"] + fig.YEARLY["abroad_in"]
    return int(yearly / 12 * residents / fig.REFERENCE_POPULATION * 1.5) + 16


def _prefecture_counts(residents: int, shares: np.ndarray) -> np.ndarray:
    """Residents per prefecture in proportion to the 2020 census (largest remainders)."""
    exact = residents * shares
    counts = np.floor(exact).astype(np.int64)
    rest = residents - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def _initial_plan(run: _Run, residents: int) -> tuple[np.ndarray, np.ndarray]:
    """(first person id of each prefecture, plus the total; residents per municipality)."""
    geo = run.geo
    pref_counts = _prefecture_counts(residents, geo.prefecture_share)
    rng = np.random.default_rng([run.seed, 1])
    muni_counts = np.zeros(len(geo.code), dtype=np.int64)
    for p in range(47):
        lo, hi = geo.first[p], geo.first[p + 1]
        muni_counts[lo:hi] = rng.multinomial(pref_counts[p], geo.weight_in_prefecture[lo:hi])
    return np.concatenate([[0], np.cumsum(pref_counts)]), muni_counts


def _write_initial(
    run: _Run, pool: ThreadPoolExecutor, residents: int, report: Callable[[int], None]
) -> list[tuple[str, int]]:
    """The A4 files, one per prefecture, written by the pool (largest first, to balance it)."""
    person_start, muni_counts = _initial_plan(run, residents)
    run.people.add(residents)
    for kind in ("resident_code", "my_number"):  # the initial person ids are the code counters
        run.issuer.reserve(kind, residents)
    ages = fig.initial_age_table(np.datetime64(run.first_day, "D"))
    foreign_p = fig.foreign_probability(fig.band_population(ages))
    done: queue.Queue[int] = queue.Queue()
    futures = []
    for p in np.argsort(-np.diff(person_start), kind="stable"):
        if person_start[p + 1] > person_start[p]:
            counts = muni_counts[run.geo.first[p] : run.geo.first[p + 1]]
            args = (run, int(p), int(person_start[p]), counts, ages, foreign_p, done.put)
            futures.append(pool.submit(_initial_file, *args))
    _drain(futures, done, report)
    run.last_seq += muni_counts
    return [f.result() for f in futures]


def _drain(futures: list[Future], done: queue.Queue[int], report: Callable[[int], None]) -> None:
    """Pass the workers' progress on from this thread until every future has finished."""
    finished = 0
    while True:
        try:
            finished += done.get(timeout=0.1)
            report(finished)
        except queue.Empty:
            if all(f.done() for f in futures):
                break
    for f in futures:
        f.result()  # re-raise a worker's error here


def _initial_file(
    run: _Run,
    p: int,
    first_person: int,
    counts: np.ndarray,
    ages: tuple[np.ndarray, ...],
    foreign_p: np.ndarray,
    report: Callable[[int], None],
) -> tuple[str, int]:
    """Write prefecture p's initial file in chunks; persons go municipality by municipality, so
    the file is sorted by (municipality_code, seq) and seq is the rank within the municipality."""
    first_muni = run.geo.first[p]
    municipality = np.repeat(np.arange(first_muni, first_muni + len(counts)), counts).astype(
        np.int16
    )
    n = len(municipality)
    seq = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    name = initial_file_name(p, run.file_format)
    with NotificationWriter(run.out / name, run.file_format) as writer:
        for chunk, lo in enumerate(range(0, n, CHUNK)):
            hi = min(n, lo + CHUNK)
            rng = np.random.default_rng([run.seed, 2, p, chunk])
            ids = slice(first_person + lo, first_person + hi)
            rows = _initial_rows(run, rng, ids, municipality[lo:hi], seq[lo:hi], ages, foreign_p)
            writer.write(run.renderer.table(rows))
            report(hi - lo)
    return name, n


def _initial_rows(
    run: _Run,
    rng: np.random.Generator,
    ids: slice,
    municipality: np.ndarray,
    seq: np.ndarray,
    ages: tuple[np.ndarray, ...],
    foreign_p: np.ndarray,
) -> RowBatch:
    """Draw persons ids.start..ids.stop-1 into the people arrays; their A4 rows."""
    day, n = run.first_day, len(municipality)
    birth, sex = draw_age_sex(rng, n, ages, day)
    kind = draw_kind(rng, birth, day, foreign_p)
    record = draw_persons(rng, birth, sex, kind, municipality, day, run.names, run.geo)
    counters = np.arange(ids.start, ids.stop, dtype=np.int64)
    run.people.set(
        ids,
        **record,
        state=REGISTERED,
        resident_code=run.issuer.codes("resident_code", counters),
        my_number=run.issuer.codes("my_number", counters),
    )
    notified = timestamps_us(np.full(n, day), rng.integers(0, OFFICE_HOURS_S, n))
    return RowBatch.of(
        run.people.snapshot(ids),
        reason="A4",
        change_date=day,
        notified_at=notified,
        person=counters,
        seq=seq,
    )


def _write_month(
    run: _Run, pool: ThreadPoolExecutor, start: np.datetime64, index: int
) -> list[tuple[str, int]]:
    """Simulate month `start + index` and write its `-1-` and `-2-` files per prefecture."""
    month = start + index
    first = month.astype("datetime64[D]")
    days = int(((month + 1).astype("datetime64[D]") - first) / np.timedelta64(1, "D"))
    rng = np.random.default_rng([run.seed, 3, index])
    state = Month(
        run.people, run.names, run.geo, run.issuer, rng, int(first.astype(np.int64)), days,
        run.event_rate,
    )
    jobs = []
    for part, rows in enumerate(simulate_month(state), start=1):
        rows = sequence(rows, run.last_seq)  # -1- rows take their seqs before -2- rows
        for p, pref_rows in split_by_prefecture(rows, run.geo.first):
            name = month_file_name(month, part, p, run.file_format)
            jobs.append(pool.submit(_write_rows, run, name, pref_rows))
    return [j.result() for j in jobs]


def _write_rows(run: _Run, name: str, rows: RowBatch) -> tuple[str, int]:
    with NotificationWriter(run.out / name, run.file_format) as writer:
        writer.write(run.renderer.table(rows))
    return name, len(rows)


def main(argv: list[str] | None = None) -> None:
    """Throughput check by hand (not a test): generate, then print the summary and rows/s."""
    parser = argparse.ArgumentParser(prog="python -m loaders.synthetic", description=main.__doc__)
    parser.add_argument("--residents", type=int, default=2_000_000)
    parser.add_argument("--months", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", default="2024-01")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--out", required=True)
    a = parser.parse_args(argv)
    summary = generate(
        a.out,
        residents=a.residents,
        months=a.months,
        seed=a.seed,
        start=a.start,
        file_format=a.format,
    )
    result = summary.to_json()
    result["files"] = len(summary.files)
    result["residents_per_second"] = round(summary.residents / summary.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The demo's month cycle as scheduled jobs (SPEC §5b): a jobs file, a registry and a target
file written into the demo's store, then each job run through `juki job run` in a real process.

The generated months are simulated (2024-…), the recording clock is real: the demo back-fills
the months before the cycle as recorded at the end of their month (`loaders/demo.py`), and the
cycle month's files arrive today. So the pension change check, a window on `recorded_at`, runs
for this calendar month and sees exactly the cycle month's notifications; the base-date extract
and the pyramid are for the last day of the simulated month; the nightly check and the daily push
(JPS's subscription of the same targets) are tonight's.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.current import scan_current
from engine.dates import parse_month
from engine.job_runs import juki_argv, juki_env
from engine.store import Store
from engine.subscriptions import add_subscription, read_subscriptions
from loaders.push import read_targets

REGISTRY = """# juki demo registry (SPEC §5)
[[agency]]
code = "JPS"
name = "日本年金機構"
scope = "national"

[[agency]]
code = "TOKYO"
name = "東京都"
scope = "prefecture"
prefecture = "13"

[[agency]]
code = "MIC"
name = "総務省統計局"
scope = "national"

[[affair]]
code = "pension-change"
name = "国民年金等の被保険者等の異動情報の確認"
basis = "住基法別表第一"
agencies = ["JPS"]
functions = ["lookup", "changes", "push"]
columns = ["resident_code", "my_number", "surname", "given_name", "surname_kana",
           "given_name_kana", "birth_date", "sex", "address", "municipality_code", "status"]
protected_access = false

[[affair]]
code = "benefit"
name = "特定公的給付の支給"
basis = "公金受取口座登録法"
agencies = ["TOKYO"]
functions = ["extract"]
columns = ["resident_code", "surname", "given_name", "birth_date", "address",
           "municipality_code", "status"]
protected_access = false

[[affair]]
code = "statistics"
name = "人口統計"
basis = "統計法"
agencies = ["MIC"]
functions = ["stats"]
columns = []
"""

JOBS = """# juki demo: a month's cycle (SPEC §5b). Relative paths resolve against this file's directory.
[[job]]
name = "ingest-monthly"
schedule = "monthly"
command = ["ingest", "{samples}/{{period}}-*.parquet", "--rejects", "outputs/rejects/{{period}}"]

[[job]]
name = "check-nightly"
schedule = "daily"
command = ["check", "--out", "outputs/check/check-{{period}}.parquet"]

[[job]]
name = "pension-monthly"
schedule = "monthly"
command = ["changes", "targets/jps.parquet", "--agency", "JPS", "--affair", "pension-change",
           "--since", "{{period_start}}", "--until", "{{period_end}}",
           "--out", "outputs/JPS/pension-change-{{period}}.parquet"]

[[job]]
name = "base-date-tokyo"
schedule = "daily"
command = ["extract", "base-date", "--date", "{{period}}", "--prefecture", "13",
           "--agency", "TOKYO", "--affair", "benefit",
           "--out", "outputs/TOKYO/base-date-{{period}}.parquet"]

[[job]]
name = "population-pyramid"
schedule = "daily"
command = ["stats", "--date", "{{period}}", "--by", "age5,sex", "--agency", "MIC",
           "--affair", "statistics", "--out", "outputs/MIC/age5-sex-{{period}}.parquet",
           "--plot", "outputs/MIC/pyramid-{{period}}.png"]

[[job]]
name = "push-daily"
schedule = "daily"
command = ["push", "run", "--outbox", "outputs/push"]
"""


PUSH_SUBSCRIPTION = "jps-pension-daily"


@dataclass(frozen=True)
class JobLine:
    """One job run by the demo: its name, period, exit code and the runner's summary line."""

    job: str
    period: str
    exit_code: int
    line: str


def cycle(store: Store, *, samples: Path, month: str, today: dt.date,
          now: dt.datetime) -> list[tuple[str, str]]:  # fmt: skip
    """Write the demo's jobs file, registry and JPS targets into the store; the (job, period)
    pairs of the month's cycle, in the order they run."""
    from engine.access import load_registry

    store.path.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(samples.absolute(), store.path.absolute())).as_posix()
    (store.path / "jobs.toml").write_text(JOBS.format(samples=relative), encoding="utf-8")
    registry = store.path / "registry.toml"
    registry.write_text(REGISTRY, encoding="utf-8")
    load_registry(store, registry, now=now)
    targets = store.path / "targets" / "jps.parquet"
    targets.parent.mkdir(exist_ok=True)
    scan_current(store).select("resident_code").sort("resident_code").collect().write_parquet(
        targets)  # fmt: skip
    # JPS also subscribes the same targets to daily push (SPEC §5a) before the month arrives.
    if PUSH_SUBSCRIPTION not in read_subscriptions(store):
        add_subscription(store, read_targets(targets), agency="JPS", affair="pension-change",
                         interval="daily", name=PUSH_SUBSCRIPTION, now=now)  # fmt: skip
    base_day = parse_month(month)[1].isoformat()
    return [
        ("ingest-monthly", month),
        ("check-nightly", today.isoformat()),
        ("push-daily", today.isoformat()),
        ("pension-monthly", today.isoformat()[:7]),
        ("base-date-tokyo", base_day),
        ("population-pyramid", base_day),
    ]


def run_cycle(store: Store, jobs: list[tuple[str, str]]) -> list[JobLine]:
    """Run each job through `juki job run` (a real process: exit codes as cron sees them)."""
    env = juki_env(store)
    done = []
    for job, period in jobs:
        result = subprocess.run(
            juki_argv(["job", "run", job, "--period", period, "--store", str(store.path)]),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        done.append(JobLine(job, period, result.returncode, lines[-1] if lines else ""))
    return done


"""`juki check` (SPEC §8): a store built only by ingest passes; every rule finds exactly the
violations seeded past ingest, straight into the history; exit codes in real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from builders import my_number, resident_code
from check_seeds import (
    CITY,
    Findings,
    People,
    append,
    append_code,
    build_clean_store,
    history,
    last_version,
    normal,
    summary,
    version_of,
)

from engine.check import RULES, CheckReport, run_check, select_rules, write_report
from engine.errors import UsageError
from engine.store import Store

TODAY = dt.date(2026, 11, 25)
_BIN = Path(sys.executable).parent / "juki"
JUKI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "engine.cli"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clean_store(tmp_path_factory.mktemp("check"))


@pytest.fixture
def store(clean: Path, tmp_path: Path) -> Store:
    """A private copy of the clean store, to seed."""
    shutil.copytree(clean, tmp_path / "store")
    return Store(tmp_path / "store")


def run_juki(*args: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JUKI_STORE"}
    return subprocess.run([*JUKI, *map(str, args)], check=False, env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def bad_digit(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


# -- a store built only by ingest ------------------------------------------------------------
def test_a_store_built_only_by_ingest_has_no_violation(clean: Path) -> None:
    report = run_check(Store(clean), today=TODAY)
    assert report.violations.is_empty(), report.violations.to_dicts()
    assert report.exit_code == 0
    assert [c["rule"] for c in report.counts()] == list(RULES)


def test_the_story_reads_as_reads_do(clean: Path) -> None:
    """The inline story is in the store: X1s, M4, M5, a move-out and its move-in."""
    h = history(Store(clean))
    assert set(h.filter(pl.col("file").str.contains("story"))["reason"]) >= {
        "A4", "M4", "M5", "X1", "D1", "A2", "D3", "M2"}  # fmt: skip


# -- seeded violations: each rule finds exactly them ----------------------------------------
Seed = Callable[[Store, People], Findings]


def seed_duplicate_current(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    append(store, [version_of(store, b, "M3", resident_code=a)])
    return {"code-duplicate-current": [(a, [1]), (a, [2])],
            "code-shared": [(a, [1]), (a, [2])]}  # fmt: skip


def seed_shared_retired_code(store: Store, people: People) -> Findings:
    """Person 1 of the story retired resident_code(1) by M5; another person takes it."""
    (b,) = people.take(1)
    append(store, [version_of(store, b, "M5", resident_code=resident_code(1),
                              previous_resident_code=b)])  # fmt: skip
    return {"code-shared": [(resident_code(1), [2]), (resident_code(101), [1, 2])]}


def seed_shared_in_registry(store: Store, people: People) -> Findings:
    """The registry says another person was issued a code that the history gives to one."""
    a, b = people.take(2)
    append_code(store, 2, last_version(store, a)["my_number"], owner_of=b)
    return {"code-shared": [(a, [1]), (b, [])]}


def seed_not_issued(store: Store, people: People) -> Findings:
    (a,) = people.take(1)
    append(store, [version_of(store, a, "M4", my_number=my_number(777))])
    return {"code-not-issued": [(a, [2])]}


def seed_check_digit(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    mc = last_version(store, a)["municipality_code"]
    append(store, [version_of(store, a, "M1", municipality_code=bad_digit(mc)),
                   version_of(store, b, "M3", municipality_code="13A01", prefecture_code="13")])  # fmt: skip
    return {"check-digit": [(a, [2]), (b, [2])]}


def seed_version_order(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    late = last_version(store, b)["recorded_at"] - dt.timedelta(days=1)
    append(store, [version_of(store, a, "M3", version=3),
                   version_of(store, b, "M3", recorded_at=late)])  # fmt: skip
    return {"version-order": [(a, [3]), (b, [2])]}


def seed_after_death(store: Store, people: People) -> Findings:
    (a,) = people.take(1)
    death = version_of(store, a, "D3")
    append(store, [death, {**death, "reason": "M2", "version": 3, "seq": death["seq"] + 1,
                           "surname": "田中"}])  # fmt: skip
    return {"after-death": [(a, [3])]}


def seed_a2_without_d1(store: Store, people: People) -> Findings:
    (a,) = people.take(1)
    append(store, [version_of(store, a, "A2", municipality_code=CITY, prefecture_code="13")])
    return {"a2-without-d1": [(a, [2])]}


def seed_status_reason(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    d2 = version_of(store, b, "D2")
    append(store, [version_of(store, a, "D2", status=1), d2,
                   {**d2, "reason": "M3", "version": 3, "seq": d2["seq"] + 1, "status": 1}])  # fmt: skip
    return {"status-reason": [(a, [2]), (b, [3])]}


def seed_birth_after_change(store: Store, people: People) -> Findings:
    (a,) = people.take(1)
    append(store, [version_of(store, a, "M3", change_date=dt.date(2024, 5, 1),
                              birth_date=dt.date(2024, 6, 1))])  # fmt: skip
    return {"birth-after-change": [(a, [2])]}


def seed_prefecture_mismatch(store: Store, people: People) -> Findings:
    (a,) = people.take(1)
    other = "01" if last_version(store, a)["municipality_code"].startswith("47") else "47"
    append(store, [version_of(store, a, "M3", prefecture_code=other)])
    return {"prefecture-mismatch": [(a, [2])]}


def seed_former_surname_rules(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    (f,) = people.take(1, kind=2)
    append(store, [
        version_of(store, a, "M6", former_surname="佐藤"),
        version_of(store, b, "M7", alias="通称"),
        version_of(store, f, "M6", former_surname="佐藤", former_surname_kana="サトウ"),
    ])  # fmt: skip
    return {"former-surname-pair": [(a, [2])], "alias-japanese": [(b, [2])],
            "former-surname-foreign": [(f, [2])]}  # fmt: skip


def seed_kana(store: Store, people: People) -> Findings:
    a, b, c = people.take(3)
    append(store, [
        version_of(store, a, "M2", surname_kana="ﾔﾏﾀﾞ"),  # half-width
        version_of(store, b, "M2", given_name_kana="タロウ・ジロウ"),  # ・ in a Japanese name
        version_of(store, c, "M2", surname_kana="やまだ"),  # hiragana
    ])  # fmt: skip
    return {"kana": [(a, [2]), (b, [2]), (c, [2])]}


def seed_move_in_late(store: Store, people: People) -> Findings:
    a, b, c = people.take(3)
    d1 = version_of(store, b, "D1", change_date=dt.date(2024, 5, 1))
    append(store, [
        version_of(store, a, "D1", change_date=dt.date(2024, 5, 1)),
        d1,  # b moves in too late
        {**d1, "reason": "A2", "version": 3, "seq": d1["seq"] + 1, "status": 1,
         "change_date": dt.date(2024, 5, 16), "municipality_code": CITY, "prefecture_code": "13"},
        version_of(store, c, "D1", change_date=TODAY - dt.timedelta(days=14)),  # not yet due
    ])  # fmt: skip
    return {"move-in-late": [(a, [2]), (b, [2])]}


def seed_change_after_recorded(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    stamp = history(store)["recorded_at"].max()
    jst_day = (stamp + dt.timedelta(hours=9)).date()
    append(store, [
        version_of(store, a, "M3", change_date=jst_day + dt.timedelta(days=1)),
        version_of(store, b, "D1", change_date=jst_day + dt.timedelta(days=7)),  # planned move
    ])  # fmt: skip
    return {"change-after-recorded": [(a, [2])]}


def seed_over_120(store: Store, people: People) -> Findings:
    a, b = people.take(2)
    append(store, [version_of(store, a, "M3", birth_date=dt.date(1900, 1, 1)),
                   version_of(store, b, "D4", birth_date=dt.date(1900, 1, 1))])  # fmt: skip
    return {"over-120": [(a, [2])]}


def seed_derived_behind(store: Store, people: People) -> Findings:
    (a,) = people.take(1)
    append(store, [version_of(store, a, "M3", new_batch=True, address="東京都どこか1")])
    return {"derived-behind": [(None, [])]}


def seed_cancelled_violation(store: Store, people: People) -> Findings:
    """A violation cancelled by an X1 is skipped, as reads skip it."""
    (a,) = people.take(1)
    bad = version_of(store, a, "M3", birth_date=dt.date(2030, 1, 1))
    base = last_version(store, a)
    cancel = {"reason": "X1", "version": 3, "person": base["person"], "seq": bad["seq"] + 1,
              "municipality_code": bad["municipality_code"], "outcome": "applied",
              "resident_code": a, "my_number": base["my_number"],
              "cancels_municipality_code": bad["municipality_code"], "cancels_seq": bad["seq"],
              "change_date": dt.date(2024, 5, 2)}  # fmt: skip
    append(store, [bad, cancel])
    return {}


SEEDS: dict[str, Seed] = {
    "code-duplicate-current": seed_duplicate_current,
    "code-shared (a retired code)": seed_shared_retired_code,
    "code-shared (registry)": seed_shared_in_registry,
    "code-not-issued": seed_not_issued,
    "check-digit": seed_check_digit,
    "version-order": seed_version_order,
    "after-death": seed_after_death,
    "a2-without-d1": seed_a2_without_d1,
    "status-reason": seed_status_reason,
    "birth-after-change": seed_birth_after_change,
    "prefecture-mismatch": seed_prefecture_mismatch,
    "former-surname rules and alias": seed_former_surname_rules,
    "kana": seed_kana,
    "move-in-late": seed_move_in_late,
    "change-after-recorded": seed_change_after_recorded,
    "over-120": seed_over_120,
    "derived-behind": seed_derived_behind,
    "cancelled by X1": seed_cancelled_violation,
}


@pytest.fixture(scope="module")
def seeded(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Findings]:
    """One copy of the clean store with every seed written into it (distinct persons), and the
    findings they should give, merged by rule."""
    store = Store(tmp_path_factory.mktemp("seeded") / "store")
    shutil.copytree(clean, store.path)
    people = People(store)
    expected: Findings = {}
    for seed in SEEDS.values():
        for rule, rows in seed(store, people).items():
            expected.setdefault(rule, []).extend(rows)
    return store, normal(expected)


@pytest.fixture(scope="module")
def seeded_report(seeded: tuple[Store, Findings]) -> CheckReport:
    return run_check(seeded[0], today=TODAY)


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_finds_exactly_the_seeded_violations(
    seeded: tuple[Store, Findings], seeded_report: CheckReport, rule: str
) -> None:
    found = summary(seeded_report.violations.filter(pl.col("rule") == rule))
    assert found.get(rule, []) == seeded[1].get(rule, [])
    assert found.get(rule), f"no seed for {rule}"


def test_the_seeded_store_fails_and_clean_rules_stay_silent(seeded_report: CheckReport) -> None:
    assert seeded_report.exit_code == 1
    assert seeded_report.errors == sum(1 for r in seeded_report.violations["severity"] if r == "error")


def test_slicing_changes_no_finding(seeded: tuple[Store, Findings],
                                    seeded_report: CheckReport) -> None:  # fmt: skip
    sliced = run_check(seeded[0], today=TODAY, rows_per_pass=700)
    assert summary(sliced.violations) == summary(seeded_report.violations)


def test_messages_name_the_version_the_value_and_the_rule(seeded_report: CheckReport) -> None:
    v = seeded_report.violations
    messages = v["message"].to_list()
    assert any("municipality_code '13A01': not 6 digits" in m for m in messages)
    assert any(": municipality_code '" in m and "check digit should be" in m for m in messages)
    assert any("version 2: surname_kana 'ﾔﾏﾀﾞ' is not full-width katakana" in m for m in messages)
    assert any("version 2: D1 dated 2024-05-01 with no A2 dated by 2024-05-15" == m
               for m in messages)  # fmt: skip
    assert v.columns == ["rule", "severity", "resident_code", "versions", "message"]
    assert dict(v.select("rule", "severity").unique().iter_rows()) == {
        r: s for r, s in RULES.items() if r in set(v["rule"])}  # fmt: skip


def test_the_report_is_parquet_with_the_spec_columns(seeded_report: CheckReport,
                                                     tmp_path: Path) -> None:  # fmt: skip
    out = write_report(seeded_report, tmp_path / "r" / "report.parquet")
    frame = pl.read_parquet(out)
    assert frame.schema == pl.Schema({"rule": pl.String, "severity": pl.String,
                                      "resident_code": pl.String, "versions": pl.List(pl.Int32),
                                      "message": pl.String})  # fmt: skip
    assert frame.filter(pl.col("rule") == "derived-behind")["versions"].to_list() == [[]]
    assert frame.height == seeded_report.violations.height
    assert not list(out.parent.glob(".*tmp"))


def test_move_in_late_waits_until_the_fourteen_days_are_over(store: Store) -> None:
    (a,) = People(store).take(1)
    append(store, [version_of(store, a, "D1", change_date=dt.date(2024, 5, 1))])
    due = dt.date(2024, 5, 15)
    assert run_check(store, today=due, rules=["move-in-late"]).violations.is_empty()
    late = run_check(store, today=due + dt.timedelta(days=1), rules=["move-in-late"])
    assert summary(late.violations) == {"move-in-late": [(a, [2])]}


def test_a_chosen_subset_runs_only_those_rules_in_spec_order(seeded: tuple[Store, Findings]) -> None:
    report = run_check(seeded[0], today=TODAY, rules=["over-120", "kana"])
    assert [c["rule"] for c in report.counts()] == ["kana", "over-120"]
    assert [c["count"] for c in report.counts()] == [3, 1]


def test_an_unknown_rule_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--rules: unknown rule 'no-such-rule'"):
        select_rules(["kana", "no-such-rule"])


def test_story_persons_are_known_by_their_current_codes(store: Store) -> None:
    """Findings name a person by the current resident code (M5 changed person 1's)."""
    append(store, [version_of(store, resident_code(101), "M3", birth_date=dt.date(2030, 1, 1))])
    v = summary(run_check(store, today=TODAY, rules=["birth-after-change"]).violations)
    assert v == {"birth-after-change": [(resident_code(101), [4])]}


# -- the command, in real processes -----------------------------------------------------------
def test_check_exits_0_on_a_clean_store_and_prints_every_rule_as_json(clean: Path) -> None:
    for _ in range(2):
        result = run_juki("check", "--json", "--store", clean)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [
            {"rule": r, "severity": s, "count": 0} for r, s in RULES.items()
        ]
        assert result.stdout.count("\n") == 1


def test_check_exits_1_on_errors_and_writes_the_report(seeded: tuple[Store, Findings],
                                                       tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "report.parquet"
    result = run_juki("check", "--store", seeded[0].path, "--out", out, "--rules", "kana")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "kana" in result.stderr
    assert pl.read_parquet(out).height == 3


def test_check_exits_0_on_warnings_alone(seeded: tuple[Store, Findings]) -> None:
    result = run_juki("check", "--store", seeded[0].path, "--rules", "over-120,derived-behind",
                      "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"rule": "over-120", "severity": "warning", "count": 1},
        {"rule": "derived-behind", "severity": "warning", "count": 1},
    ]


def test_check_refuses_an_unknown_rule_and_a_missing_store(tmp_path: Path, clean: Path) -> None:
    result = run_juki("check", "--store", clean, "--rules", "kana,nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"--rules: unknown rule 'nope' (rules: {', '.join(RULES)})"]  # fmt: skip
    result = run_juki("check", "--store", tmp_path / "nothing-here")
    assert result.returncode == 5
    assert len(result.stderr.strip().splitlines()) == 1

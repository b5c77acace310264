"""Push-type change notification (SPEC §5a): subscriptions, due runs, the outbox, redelivery and
catch-up pulls, against `juki changes` and in stories spelled out."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import polars as pl
import pytest
from agency import NOW, load, requester, run_juki, write_request
from builders import my_number, person, resident_code, row, write_csv
from hypothesis import given
from pushing import T0, T1, T2, World, delivered, everyone, push, subscribe
from read_oracle import History
from read_oracle import changes as oracle_changes
from stories import Story, ingest_at, property_settings, stories
from test_lookup import junk, story_codes

from engine.access import authorize, load_registry
from engine.errors import AccessRefused, UsageError
from engine.provision import records_of
from engine.push import is_due, period_of, read_runs, run_id_of
from engine.requests import list_requests
from engine.resolve import batch_stamp
from engine.store import Store
from engine.subscriptions import (
    add_subscription,
    read_subscriptions,
    remove_subscription,
    replace_targets,
)
from loaders.outputs import OutputOptions
from loaders.push import PushRefused, pull, read_targets, redeliver, run_push
from loaders.services import run_changes

HOUR = dt.timedelta(hours=1)
JST = dt.timezone(dt.timedelta(hours=9))


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("registered"))
    w.register()
    return w


@pytest.fixture()
def world(registered: World, tmp_path: Path) -> World:
    return registered.copy(tmp_path)


def test_a_run_delivers_the_rows_juki_changes_gives_for_the_window(world: World) -> None:
    sub = subscribe(world, [my_number(9), *everyone(), "123"])
    world.changes_batch()

    summary = push(world, T1 + HOUR)

    got = delivered(world, summary, sub.name)
    targets = write_request(world.root / "same.csv", "my_number", [my_number(9), *everyone(), "123"])
    out = world.root / "changes.parquet"
    run_changes(world.store, targets, requester("JPS", "pension-change", out),
                since=batch_stamp(world.store, 1), until=batch_stamp(world.store, 2))  # type: ignore[arg-type]
    assert got.equals(pl.read_parquet(out))
    assert got["request_row"].to_list() == [2, 3, 4, 5, 6]


def test_deaths_code_changes_and_cancellations_are_delivered_like_any_change(world: World) -> None:
    sub = subscribe(world, everyone())
    world.changes_batch()

    got = delivered(world, push(world, T1 + HOUR), sub.name)

    by_row = {r["request_row"]: r for r in got.to_dicts()}
    assert (by_row[2]["reasons"], by_row[2]["status"]) == (["D3"], 9)  # death
    assert (by_row[3]["reasons"], by_row[3]["my_number"]) == (["M4"], my_number(103))
    assert (by_row[4]["reasons"], by_row[4]["resident_code"]) == (["M5"], resident_code(104))
    assert by_row[5]["reasons"] == ["M2", "X1"] and by_row[5]["surname"] == "山田"  # cancelled
    assert 6 not in by_row  # no change


def test_after_a_my_number_change_the_old_target_still_finds_the_person(world: World) -> None:
    sub = subscribe(world, [my_number(3)])
    world.changes_batch()
    push(world, T1 + HOUR)
    world.ingest([row(world.chiyoda, "M1", "2024-01-15",
                      person(3, my_number=my_number(103), address="東京都千代田区2"))], T2)  # fmt: skip

    got = delivered(world, push(world, T2 + HOUR), sub.name)

    assert got.select("request_row", "my_number", "reasons").rows() == [
        (1, my_number(103), ["M1"])]


def test_the_file_lies_in_the_outbox_under_agency_subscription_and_run_id(world: World) -> None:
    sub = subscribe(world, everyone(), name="jps-daily")
    world.changes_batch()
    at = dt.datetime(2024, 1, 10, 18, 30, 5, tzinfo=dt.UTC)  # 2024-01-11 03:30:05 in Japan

    summary = push(world, at, outbox=world.root / "outbox")

    file = world.root / "outbox" / "JPS" / "jps-daily" / "20240111T033005.parquet"
    assert summary.run_id == "20240111T033005" and file.is_file()
    manifest = json.loads(file.with_name(file.name + ".manifest.json").read_text("utf-8"))
    assert (manifest["function"], manifest["rows"], manifest["agency"]) == ("push", 5, "JPS")
    assert manifest["parameters"]["subscription"] == sub.name
    assert manifest["parameters"]["upto_batch"] == 2
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


def test_a_run_with_nothing_to_deliver_writes_a_zero_row_file_with_the_columns(world: World) -> None:
    sub = subscribe(world, everyone())
    world.changes_batch()
    first = delivered(world, push(world, T1 + HOUR), sub.name)

    empty = delivered(world, push(world, T1 + 24 * HOUR), sub.name)

    assert empty.height == 0 and empty.schema == first.schema


def test_a_new_subscription_starts_at_the_last_applied_notification(world: World) -> None:
    world.changes_batch()
    sub = subscribe(world, everyone())
    assert sub.watermark == 2

    assert delivered(world, push(world, T1 + HOUR), sub.name).height == 0


def test_a_batch_recorded_after_ts_waits_for_the_next_run(world: World) -> None:
    sub = subscribe(world, everyone())
    world.changes_batch(T1)
    world.move_six(T1 + 2 * HOUR)

    first = delivered(world, push(world, T1 + HOUR), sub.name)
    second = delivered(world, push(world, T1 + 25 * HOUR), sub.name)

    assert 6 not in first["request_row"].to_list()
    assert second.select("request_row", "reasons").rows() == [(6, ["M1"])]


def test_a_row_held_then_released_after_a_run_is_delivered_by_the_next_run(world: World) -> None:
    sub = subscribe(world, everyone())
    chi = world.chiyoda
    gap = chi.next()  # a seq that arrives late
    world.ingest([row(chi, "M1", "2024-01-03", person(1, address="東京都千代田区9"))], T1)  # held
    assert push(world, T1 + HOUR).delivered[0].rows == 0
    world.ingest([row(chi, "M1", "2024-01-02", person(2, address="東京都千代田区8"), seq=gap)],
                 T1 + 2 * HOUR)  # fmt: skip

    got = delivered(world, push(world, T1 + 25 * HOUR), sub.name)

    assert got.select("request_row", "reasons", "address").rows() == [
        (1, ["M1"], "東京都千代田区9"), (2, ["M1"], "東京都千代田区8")]


def test_due_means_no_run_yet_in_the_japan_day_iso_week_or_month_containing_ts() -> None:
    late_sunday = dt.datetime(2024, 1, 7, 14, 59, tzinfo=dt.UTC)  # Sun 23:59 in Japan
    monday = dt.datetime(2024, 1, 7, 15, 0, tzinfo=dt.UTC)  # Mon 00:00 in Japan
    assert period_of("daily", late_sunday) != period_of("daily", monday)
    assert period_of("weekly", late_sunday) != period_of("weekly", monday)
    assert period_of("weekly", monday) == period_of("weekly", monday + 6 * 24 * HOUR)
    assert period_of("monthly", dt.datetime(2024, 1, 31, 15, tzinfo=dt.UTC)) == (2024, 2)
    assert run_id_of(monday) == "20240108T000000"


@pytest.mark.parametrize(("interval", "again", "due"), [
    ("daily", dt.datetime(2024, 1, 10, 14, 59, tzinfo=dt.UTC), False),
    ("daily", dt.datetime(2024, 1, 10, 15, 0, tzinfo=dt.UTC), True),
    ("weekly", dt.datetime(2024, 1, 14, 14, 59, tzinfo=dt.UTC), False),
    ("weekly", dt.datetime(2024, 1, 14, 15, 0, tzinfo=dt.UTC), True),
    ("monthly", dt.datetime(2024, 1, 31, 14, 59, tzinfo=dt.UTC), False),
    ("monthly", dt.datetime(2024, 1, 31, 15, 0, tzinfo=dt.UTC), True),
])  # fmt: skip
def test_a_subscription_runs_once_per_period(world: World, interval: str, again: dt.datetime,
                                             due: bool) -> None:  # fmt: skip
    sub = subscribe(world, everyone(), interval=interval)
    push(world, dt.datetime(2024, 1, 10, 1, tzinfo=dt.UTC))  # Wed 10 Jan, 10:00 in Japan

    runs = read_runs(world.store)
    assert is_due(read_subscriptions(world.store)[sub.name], runs, again) is due
    assert len(push(world, again).delivered) == int(due)


def test_default_names_count_per_agency_and_affair_and_are_never_reused(world: World) -> None:
    first = subscribe(world, everyone())
    tokyo = subscribe(world, everyone(), agency="TOKYO")
    remove_subscription(world.store, first.name, now=NOW)
    second = subscribe(world, everyone())

    assert (first.name, tokyo.name, second.name) == (
        "JPS-pension-change-1", "TOKYO-pension-change-1", "JPS-pension-change-2")
    with pytest.raises(UsageError, match="--name 'JPS-pension-change-1': already used"):
        subscribe(world, everyone(), name="JPS-pension-change-1")
    with pytest.raises(UsageError, match="--name '../x'"):
        subscribe(world, everyone(), name="../x")


def test_an_affair_without_push_is_refused_and_the_refusal_recorded(world: World) -> None:
    with pytest.raises(AccessRefused, match="does not allow the function 'push'"):
        subscribe(world, everyone(), affair="benefit")

    (refusal,) = list_requests(world.store)
    assert (refusal["status"], refusal["function"], refusal["affair"]) == (
        "refused", "push", "benefit")
    assert read_subscriptions(world.store) == {}


def test_a_removed_subscription_is_no_longer_delivered(world: World) -> None:
    sub = subscribe(world, everyone())
    remove_subscription(world.store, sub.name, now=NOW)
    world.changes_batch()

    assert push(world, T1 + HOUR).delivered == []
    with pytest.raises(UsageError, match="removed"):
        remove_subscription(world.store, sub.name, now=NOW)


def test_replaced_targets_take_effect_at_the_next_run(world: World) -> None:
    sub = subscribe(world, [my_number(1)])
    path = write_request(world.root / "new.csv", "resident_code", [resident_code(2)])
    replace_targets(world.store, sub.name, read_targets(path), now=NOW)
    world.changes_batch()

    got = delivered(world, push(world, T1 + HOUR), sub.name)

    assert got.select("request_row", "reasons").rows() == [(1, ["D3"])]


def test_a_prefecture_scoped_agency_gets_only_its_residents(world: World) -> None:
    tokyo = subscribe(world, everyone(), agency="TOKYO")
    jps = subscribe(world, everyone())
    world.move_six(T1)

    summary = push(world, T1 + HOUR)

    assert delivered(world, summary, tokyo.name).height == 0
    assert delivered(world, summary, jps.name)["request_row"].to_list() == [6]


def test_provision_records_carry_function_push_and_the_run_instant(world: World) -> None:
    subscribe(world, everyone())
    world.changes_batch()
    push(world, T1 + HOUR)

    records = records_of(world.store, [resident_code(2)]).to_pylist()
    assert [(r["function"], r["provided_at"], r["agency"]) for r in records] == [
        ("push", T1 + HOUR, "JPS")]


def test_redelivery_is_byte_identical_and_recorded_again(world: World, tmp_path: Path) -> None:
    sub = subscribe(world, everyone())
    world.changes_batch()
    summary = push(world, T1 + HOUR)
    original = world.store.path / summary.delivered[0].file

    again = redeliver(world.store, sub.name, summary.run_id, out=tmp_path / "again.parquet",
                      now=NOW)  # fmt: skip

    assert (tmp_path / "again.parquet").read_bytes() == original.read_bytes()
    manifest = json.loads((tmp_path / "again.parquet.manifest.json").read_text("utf-8"))
    assert manifest["request_id"] == again.request_id != summary.delivered[0].file
    records = records_of(world.store, [resident_code(2)]).to_pylist()
    assert sorted(r["provided_at"] for r in records) == [T1 + HOUR, NOW]
    assert len({r["request_id"] for r in records}) == 2
    with pytest.raises(UsageError, match="--run '20990101T000000'"):
        redeliver(world.store, sub.name, "20990101T000000", out=None, now=NOW)


def test_pull_gives_the_rows_of_the_runs_delivered_after_since(world: World) -> None:
    sub = subscribe(world, everyone())
    push(world, T0 + HOUR)
    world.changes_batch()
    first = delivered(world, push(world, T1 + HOUR), sub.name)
    world.move_six(T2)
    second = delivered(world, push(world, T2 + HOUR), sub.name)
    out = world.root / "missed.parquet"

    result = pull(world.store, sub.name, since=T0 + 2 * HOUR, output=OutputOptions(out), now=NOW)

    assert pl.read_parquet(out).equals(pl.concat([first, second]))
    assert result.runs == [run_id_of(T1 + HOUR), run_id_of(T2 + HOUR)]
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text("utf-8"))
    assert [r["rows"] for r in manifest["parameters"]["runs"]] == [5, 1]
    assert result.recorded == 6
    nothing = world.root / "nothing.parquet"
    pull(world.store, sub.name, since=T2 + HOUR, output=OutputOptions(nothing), now=NOW)
    assert pl.read_parquet(nothing).schema == first.schema


def test_a_subscription_no_longer_allowed_is_refused_while_the_others_are_delivered(
    world: World,
) -> None:
    jps = subscribe(world, everyone())
    subscribe(world, everyone(), agency="TOKYO")
    registry = (world.root / "registry.toml").read_text("utf-8")
    narrowed = world.root / "narrowed.toml"
    narrowed.write_text(registry.replace('agencies = ["JPS", "TOKYO"]\nfunctions = ["lookup", '
                                         '"changes", "push"]',
                                         'agencies = ["JPS"]\nfunctions = ["lookup", "changes", '
                                         '"push"]'), "utf-8")  # fmt: skip
    load_registry(world.store, narrowed, now=NOW)
    world.changes_batch()

    with pytest.raises(PushRefused, match="TOKYO-pension-change-1: refused") as caught:
        push(world, T1 + HOUR)

    assert [d.subscription for d in caught.value.summary.delivered] == [jps.name]
    refused = [r for r in list_requests(world.store) if r["status"] == "refused"]
    assert [(r["agency"], r["function"]) for r in refused] == [("TOKYO", "push")]


# -- the command line, in real processes (exit codes) -----------------------------------------------
def test_the_commands_in_real_processes_exit_with_the_spec_codes(world: World) -> None:
    write_request(world.root / "t.csv", "my_number", everyone())
    store = ["--store", "store"]

    def juki(*args: str) -> tuple[int, str]:
        result = run_juki(*args, *store, cwd=world.root)
        return result.returncode, result.stderr.strip()

    add = ["subscribe", "add", "--agency", "JPS", "--interval", "daily", "--targets"]
    assert juki(*add, "t.csv", "--affair", "benefit") == (
        3, "refused: --affair 'benefit': does not allow the function 'push'")
    assert juki(*add, "missing.csv", "--affair", "pension-change") == (
        2, "missing.csv: no such file")
    assert juki(*add, "t.csv", "--affair", "pension-change", "--name", "jps")[0] == 0
    world.changes_batch()
    code, line = juki("push", "run", "--now", "2024-01-10T10:00:00")
    assert code == 0 and line.startswith("push run 20240110T100000: 1 run(s) delivered (5 rows")
    assert (world.store.path / "outbox/JPS/jps/20240110T100000.parquet").is_file()
    result = run_juki("push", "run", "--store", "elsewhere", cwd=world.root)
    assert result.returncode == 5 and len(result.stderr.strip().splitlines()) == 1


def test_the_commands_through_the_cli_runner(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    monkeypatch.chdir(world.root)
    write_request(world.root / "t.csv", "my_number", everyone())
    runner = CliRunner()

    def juki(*args: str) -> Any:
        return runner.invoke(app, [*args, "--store", "store"])

    bad = juki("subscribe", "add", "--agency", "JPS", "--affair", "pension-change", "--targets",
               "t.csv", "--interval", "hourly")  # fmt: skip
    assert bad.exit_code == 2 and "--interval" in bad.output
    assert juki("subscribe", "add", "--agency", "JPS", "--affair", "pension-change", "--targets",
                "t.csv", "--interval", "daily", "--name", "jps").exit_code == 0  # fmt: skip
    world.changes_batch()
    assert juki("push", "run", "--now", "2024-01-10T10:00:00", "--json").exit_code == 0
    again = juki("push", "redeliver", "--subscription", "jps", "--run", "20240110T100000",
                 "--out", "again.parquet")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (world.root / "again.parquet").read_bytes() == (
        world.store.path / "outbox/JPS/jps/20240110T100000.parquet").read_bytes()
    missing = juki("push", "redeliver", "--subscription", "nope", "--run", "20240110T100000")
    assert isinstance(missing.exception, UsageError)
    assert str(missing.exception) == "--subscription 'nope': no such subscription"
    pulled = juki("push", "pull", "--subscription", "jps", "--since", "2024-01-01",
                  "--out", "missed.csv", "--format", "csv")  # fmt: skip
    assert pulled.exit_code == 0 and (world.root / "missed.csv").read_text().count("\n") == 6
    assert juki("subscribe", "remove", "--subscription", "jps").exit_code == 0
    listed = juki("subscribe", "list", "--all", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["jps"]


def test_a_second_push_run_while_one_holds_the_lock_exits_5(world: World) -> None:
    subscribe(world, everyone())
    with world.store.writer("juki push run (held by the test)", lock=".push.lock"):
        result = run_juki("push", "run", "--store", "store", cwd=world.root)
    assert result.returncode == 5
    assert "held by the test" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_subscribe_list_shows_watermark_and_last_run(world: World) -> None:
    from loaders.push import subscription_rows

    subscribe(world, everyone(), name="jps")
    world.changes_batch()
    push(world, T1 + HOUR)

    (listed,) = subscription_rows(world.store)
    assert (listed["name"], listed["watermark"], listed["last_run"], listed["runs"]) == (
        "jps", 2, run_id_of(T1 + HOUR), 1)


def test_a_million_targets_are_stored_as_codes_and_matched(world: World) -> None:
    import numpy as np

    from engine.codes import with_check_digit

    bodies = np.arange(20_000_000_000, 20_001_000_000, dtype=np.int64)
    codes = pl.Series(with_check_digit(bodies, "my_number")).cast(pl.String).str.zfill(12)
    path = world.root / "million.parquet"
    pl.DataFrame({"my_number": codes}).with_columns(
        my_number=pl.when(pl.int_range(pl.len()) == 765_432).then(pl.lit(my_number(2)))
        .otherwise(pl.col("my_number"))).write_parquet(path)  # fmt: skip
    sub = subscribe(world, [], name="million")
    replace_targets(world.store, sub.name, read_targets(path), now=NOW)
    world.changes_batch()

    got = delivered(world, push(world, T1 + HOUR), sub.name)

    assert read_subscriptions(world.store)[sub.name].targets == 1_000_000
    stored = pl.scan_delta(str(world.store.table_path("targets"))).collect()
    assert stored.schema["code"] == pl.Int64 and stored.height == 1_000_000
    assert got.select("request_row", "reasons").rows() == [(765_433, ["D3"])]


@property_settings(6)
@given(story=stories(max_batches=4), data=st.data())
def test_every_run_agrees_with_the_changes_oracle_over_its_window(
    story: Story, data: st.DataObject
) -> None:
    """Runs between the batches of a random story (births, moves, code changes, deaths, X1s):
    each file holds what the independent oracle of `juki changes` gives over the run's window."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store(root / "store")
        kind = data.draw(st.sampled_from(["my_number", "resident_code"]))
        agency = data.draw(st.sampled_from(["JPS", "TOKYO"]))
        codes = data.draw(st.lists(st.sampled_from(story_codes(story, kind) + junk(kind)),
                                   min_size=1, max_size=10))  # fmt: skip
        stamps = [*story.stamps]
        for i, (stamp, batch) in enumerate(zip(stamps, story.batches, strict=True)):
            ingest_at(store, write_csv(root / f"b{i}.csv", batch), stamp)
            if i == 0:
                load(store, root)
                path = write_request(root / "targets.csv", kind, codes)
                sub = add_subscription(store, read_targets(path), agency=agency,
                                       affair="pension-change", interval="daily", name=None,
                                       now=NOW)  # fmt: skip
                continue
            summary = run_push(store, at=stamp + HOUR)
            got = pl.read_parquet(store.path / summary.delivered[0].file)
            grant = authorize(store, agency=agency, affair="pension-change", function="push",
                              columns=None, parameters={}, now=NOW)  # fmt: skip
            expected = oracle_changes(History(store), kind, codes, since=stamps[i - 1],
                                      until=stamp, columns=list(grant.columns),
                                      prefecture=grant.prefecture,
                                      protected_access=grant.protected_access)  # fmt: skip
            assert got.to_dicts() == expected, f"{agency} {kind} run {i}\n{story.describe()}"
        assert sub.name == f"{agency}-pension-change-1"

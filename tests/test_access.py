"""The registry and refusals (SPEC §5, §7): a refused request exits 3, writes nothing but its
refusal record, and `juki audit requests` lists it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from agency import REGISTRY, listing, load, run_juki, write_request
from builders import CHIYODA, Municipality, my_number, person, row, write_csv
from stories import ingest_at

from engine.access import parse_registry, read_registry, refusal_reason
from engine.errors import InputRejected
from engine.requests import list_requests
from engine.store import Store

REPEATS = 2


@pytest.fixture()
def store_dir(tmp_path: Path) -> Path:
    chiyoda = Municipality(CHIYODA)
    store = Store(tmp_path / "store")
    rows = [row(chiyoda, "A4", "2024-01-01", person(1))]
    ingest_at(store, write_csv(tmp_path / "a.csv", rows), dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    load(store, tmp_path)
    write_request(tmp_path / "req.csv", "my_number", [my_number(1)])
    return tmp_path


def test_the_registry_round_trips_through_its_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    path = load(store, tmp_path)
    assert read_registry(store) == parse_registry(path)
    jps = read_registry(store).agencies["JPS"]
    assert (jps.name, jps.scope, jps.prefecture) == ("日本年金機構", "national", "")
    assert read_registry(store).affairs["dv-support"].protected_access is True


@pytest.mark.parametrize(
    ("agency", "affair", "function", "columns", "reason"),
    [
        ("NOPE", "pension-change", "lookup", None, "--agency 'NOPE': unknown agency"),
        ("JPS", "nope", "lookup", None, "--affair 'nope': unknown affair"),
        ("CITY", "pension-change", "lookup", None,
         "--agency 'CITY': not an agency of affair 'pension-change'"),
        ("JPS", "pension-change", "extract", None,
         "--affair 'pension-change': does not allow the function 'extract'"),
        ("JPS", "pension-change", "lookup", ["surname", "alias"],
         "--columns 'alias': not among the columns of affair 'pension-change'"),
        ("JPS", "pension-change", "lookup", ["surname", "no_such_column"],
         "--columns 'no_such_column': not among the columns of affair 'pension-change'"),
    ],
)  # fmt: skip
def test_each_refusal_names_its_reason(
    agency: str, affair: str, function: str, columns: list[str] | None, reason: str
) -> None:
    registry = parse_registry_text(REGISTRY)
    assert refusal_reason(registry, agency=agency, affair=affair, function=function,
                          columns=columns) == reason  # fmt: skip


def parse_registry_text(text: str) -> object:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "registry.toml"
        path.write_text(text, encoding="utf-8")
        return parse_registry(path)


def test_the_protected_column_and_an_allowed_subset_are_not_refused() -> None:
    registry = parse_registry_text(REGISTRY)
    assert refusal_reason(registry, agency="TOKYO", affair="pension-change", function="changes",
                          columns=["surname", "protected"]) is None  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[agency]]\ncode = 'A'\nname = 'x'\nscope = 'city'\n", "scope 'city'"),
        ("[[agency]]\ncode = 'A'\nname = 'x'\nscope = 'prefecture'\nprefecture = '48'\n",
         "prefecture '48' must be 01–47"),
        ("[[affair]]\ncode = 'f'\nname = 'x'\nagencies = ['Z']\n", "`agencies` has 'Z'"),
        ("[[affair]]\ncode = 'f'\nname = 'x'\nfunctions = ['delete']\n", "`functions` has 'delete'"),
        ("[[affair]]\ncode = 'f'\nname = 'x'\ncolumns = ['person']\n", "`columns` has 'person'"),
        ("[[agency]]\ncode = 'A'\nname = 'x'\nscope = 'national'\n" * 2, "not unique"),
        ("this is = not toml [", "not a TOML file"),
    ],
)  # fmt: skip
def test_a_bad_registry_file_is_rejected_naming_the_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputRejected, match=message.replace("[", r"\[")):
        parse_registry(path)


def test_registry_load_and_show_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "registry.toml").write_text(REGISTRY, encoding="utf-8")
    loaded = run_juki("registry", "load", "registry.toml", "--store", "st", cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == ""
    shown = run_juki("registry", "show", "--json", "--store", "st", cwd=tmp_path)
    assert shown.returncode == 0
    body = json.loads(shown.stdout)
    assert [a["code"] for a in body["agency"]] == ["JPS", "TOKYO", "CITY"]
    assert body["affair"][0]["functions"] == ["lookup", "changes", "push"]
    bad = run_juki("registry", "load", "missing.toml", "--store", "st", cwd=tmp_path)
    assert (bad.returncode, bad.stderr.strip()) == (2, "missing.toml: no such file")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--agency", "NOPE", "--affair", "pension-change"],
         "refused: --agency 'NOPE': unknown agency"),
        (["--agency", "JPS", "--affair", "pension-change", "--columns", "surname,alias"],
         "refused: --columns 'alias': not among the columns of affair 'pension-change'"),
        (["--agency", "CITY", "--affair", "statistics"],
         "refused: --agency 'CITY': not an agency of affair 'statistics'"),
    ],
)  # fmt: skip
def test_a_refused_lookup_exits_3_writes_nothing_and_is_recorded(
    store_dir: Path, args: list[str], line: str
) -> None:
    store = Store(store_dir / "store")
    for attempt in range(REPEATS):
        before = {k: v for k, v in listing(store_dir).items() if not k.startswith("store/requests")}
        result = run_juki("lookup", "req.csv", *args, "--out", "out/answer.parquet",
                          "--store", "store", cwd=store_dir)  # fmt: skip
        assert (result.returncode, result.stderr.strip(), result.stdout) == (3, line, "")
        after = {k: v for k, v in listing(store_dir).items() if not k.startswith("store/requests")}
        assert after == before
        refusals = list_requests(store)
        assert len(refusals) == attempt + 1
        assert (refusals[0]["status"], "refused: " + refusals[0]["refused_reason"]) == (
            "refused", line)
        assert refusals[0]["agency"] == args[1] and refusals[0]["function"] == "lookup"


def test_audit_requests_lists_provided_and_refused_requests_newest_first(store_dir: Path) -> None:
    ok = run_juki("lookup", "req.csv", "--agency", "JPS", "--affair", "pension-change",
                  "--out", "answer.csv", "--format", "csv", "--store", "store", cwd=store_dir)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    no = run_juki("lookup", "req.csv", "--agency", "CITY", "--affair", "pension-change",
                  "--out", "x.csv", "--store", "store", cwd=store_dir)  # fmt: skip
    assert no.returncode == 3
    listed = run_juki("audit", "requests", "--json", "--store", "store", cwd=store_dir)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["agency"], r["status"]) for r in rows] == [("CITY", "refused"), ("JPS", "provided")]
    manifest = json.loads((store_dir / "answer.csv.manifest.json").read_text(encoding="utf-8"))
    provided = rows[1]
    assert (provided["rows"], provided["output_sha256"], provided["request_id"]) == (
        1, manifest["sha256"], manifest["request_id"])
    assert provided["parameters"]["file"] == "req.csv"


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["missing.csv"], 2, "missing.csv: no such file"),
        (["bad.csv"], 4, "bad.csv: missing required column: my_number or resident_code"),
        (["req.csv", "--encoding", "cp932"], 2, "--encoding cp932: only for --format csv"),
        (["req.csv", "--as-of", "2024-13-01"], 2, "--as-of '2024-13-01': not a date YYYY-MM-DD"),
        (["req.csv", "--store", "nowhere"], 5,
         "nowhere: no juki store here (run `juki ingest` first)"),
    ],
)  # fmt: skip
def test_lookup_exit_codes_follow_the_spec(
    store_dir: Path, args: list[str], code: int, line: str
) -> None:
    (store_dir / "bad.csv").write_text("code\n123\n", encoding="utf-8")
    for _ in range(REPEATS):
        result = run_juki("lookup", *args, "--agency", "JPS", "--affair", "pension-change",
                          "--out", "answer.parquet", *([] if "--store" in args else
                                                      ["--store", "store"]), cwd=store_dir)  # fmt: skip
        assert (result.returncode, result.stderr.splitlines(), result.stdout) == (code, [line], "")
        assert not (store_dir / "answer.parquet").exists()


@pytest.mark.parametrize(
    ("target", "line"),
    [
        ("bad.csv", "bad.csv: missing required column: my_number or resident_code"),
        ("fake.parquet", "fake.parquet: not a readable Parquet file (no magic bytes)"),
    ],
)
def test_changes_rejects_an_unreadable_target_file_with_exit_4_and_one_line(
    store_dir: Path, target: str, line: str
) -> None:
    # `juki changes` reads the file's header first (to read the window's codes of that kind
    # while it parses the file): the errors are the same one line as a whole read gives
    (store_dir / "bad.csv").write_text("code\n123\n", encoding="utf-8")
    (store_dir / "fake.parquet").write_text("my_number\n123\n", encoding="utf-8")
    result = run_juki("changes", target, "--since", "2024-01-01T00:00:00+09:00", "--agency",
                      "JPS", "--affair", "pension-change", "--out", "answer.parquet",
                      "--store", "store", cwd=store_dir)  # fmt: skip
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (4, [line], "")
    assert not (store_dir / "answer.parquet").exists()

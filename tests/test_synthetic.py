"""The synthetic population generator writes SPEC §4 files that ingest applies in full.

Small runs (3,000 residents for three months; 20,000 for six) are read back in file-name order
and checked against the rules of SPEC §2–§4, against the row-by-row oracle of tests/oracle.py,
and for the realism the reference figures ask for.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from oracle import Oracle

from engine.codes import check_digits_valid
from engine.errors import UsageError
from loaders.synthetic import GenerateSummary, generate
from loaders.synthetic_places import PREFECTURES, build_geography

START = "2024-01"
KANA = r"^[ァ-ヶー・]+$"
ALL_REASONS = {"A1", "A2", "A3", "A4", "D1", "D2", "D3", "D4",
               "M1", "M2", "M3", "M4", "M5", "M6", "M7", "X1"}  # fmt: skip


def read_rows(summary: GenerateSummary) -> pl.DataFrame:
    """Every row in ingest order, with its file, its place in the file and a global position."""
    frames = [
        pl.read_parquet(f).with_columns(
            pl.lit(Path(f).name).alias("file"), pl.int_range(pl.len()).alias("row")
        )
        for f in summary.files
    ]
    return pl.concat(frames).with_row_index("position")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, pl.DataFrame]:
    summary = generate(tmp_path_factory.mktemp("small"), residents=3_000, months=3, seed=1)
    return summary, read_rows(summary)


@pytest.fixture(scope="module")
def half_year(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, pl.DataFrame]:
    summary = generate(tmp_path_factory.mktemp("half"), residents=20_000, months=6, seed=3)
    return summary, read_rows(summary)


def test_file_names_sort_in_ingest_order(small: tuple[GenerateSummary, pl.DataFrame]) -> None:
    summary, _ = small
    names = [Path(f).name for f in summary.files]
    assert names == sorted(names)
    pattern = re.compile(r"^(0000-00-initial|2024-0[1-3]-[12])-\d{2}\.parquet$")
    assert all(pattern.match(n) for n in names)
    assert sum(n.startswith("0000-00-initial-") for n in names) == 47
    months = [n[:9] for n in names if not n.startswith("0000")]
    assert months == sorted(months)  # per month: every -1- file before every -2- file
    assert sorted(p.name for p in Path(summary.files[0]).parent.iterdir()) == names


def test_summary_counts_rows_and_files(small: tuple[GenerateSummary, pl.DataFrame]) -> None:
    summary, rows = small
    assert summary.rows == rows.height
    assert (summary.residents, summary.months) == (3_000, 3)
    out = summary.to_json()
    assert out["rows"] == rows.height and out["rows_per_second"] > 0


def test_parquet_columns_are_typed_as_in_spec(small: tuple[GenerateSummary, pl.DataFrame]) -> None:
    summary, _ = small
    schema = pl.read_parquet_schema(summary.files[-1])
    assert schema["seq"] == pl.Int64 and schema["cancels_seq"] == pl.Int64
    assert schema["change_date"] == pl.Date and schema["birth_date"] == pl.Date
    assert schema["sex"] == pl.Int8 and schema["resident_kind"] == pl.Int8
    assert schema["protected"] == pl.Boolean
    assert schema["notified_at"] == pl.Datetime("us", "UTC")
    for c in ("municipality_code", "resident_code", "my_number", "previous_resident_code"):
        assert schema[c] == pl.String


@pytest.mark.parametrize(
    ("column", "kind", "width"),
    [
        ("resident_code", "resident_code", 11),
        ("previous_resident_code", "resident_code", 11),
        ("my_number", "my_number", 12),
        ("municipality_code", "municipality_code", 6),
        ("cancels_municipality_code", "municipality_code", 6),
    ],
)
def test_every_code_has_a_valid_check_digit(
    small: tuple[GenerateSummary, pl.DataFrame], column: str, kind: str, width: int
) -> None:
    codes = small[1][column].drop_nulls()
    assert codes.len() > 0
    assert codes.str.contains(rf"^\d{{{width}}}$").all()
    assert check_digits_valid(codes.cast(pl.Int64).to_numpy(), kind).all()  # type: ignore[arg-type]


def test_kana_are_full_width_katakana(half_year: tuple[GenerateSummary, pl.DataFrame]) -> None:
    rows = half_year[1]
    for column in ("surname_kana", "given_name_kana", "former_surname_kana"):
        assert rows[column].drop_nulls().str.contains(KANA).all(), column
    foreign = rows.filter(pl.col("resident_kind") == 2)
    assert foreign["given_name_kana"].str.contains("・").any()  # foreign names use the middle dot
    assert foreign["surname"].str.contains(r"^[A-Z ]+$").all()


def test_former_surname_comes_in_pairs_for_japanese_only(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    rows = half_year[1]
    assert (rows["former_surname"].is_null() == rows["former_surname_kana"].is_null()).all()
    with_former = rows.filter(pl.col("former_surname").is_not_null())
    assert with_former.height > 0 and (with_former["resident_kind"] == 1).all()


def test_alias_only_for_foreign_residents(half_year: tuple[GenerateSummary, pl.DataFrame]) -> None:
    with_alias = half_year[1].filter(pl.col("alias").is_not_null())
    assert with_alias.height > 0 and (with_alias["resident_kind"] == 2).all()


def test_seq_is_consecutive_per_municipality_in_file_order(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    rows = half_year[1].sort("position")
    seqs = rows.group_by("municipality_code", maintain_order=True).agg("seq")
    for seq in seqs["seq"]:
        assert seq.to_list() == list(range(1, len(seq) + 1))


def test_every_a2_follows_an_open_d1_within_14_days(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    rows = half_year[1]
    moves = rows.filter(pl.col("reason").is_in(["D1", "A2"])).sort("position")
    a2 = moves.filter(pl.col("reason") == "A2")
    previous = moves.group_by("resident_code", maintain_order=True).agg(
        pl.col("reason"), pl.col("change_date"), pl.col("file"), pl.col("municipality_code")
    )
    assert a2.height > 0
    for _, reasons, dates, files, munis in previous.iter_rows():
        assert reasons[::2] == ["D1"] * len(reasons[::2]) and reasons[1::2] == ["A2"] * (
            len(reasons) // 2
        )
        for i in range(1, len(reasons), 2):
            assert 0 <= (dates[i] - dates[i - 1]).days <= 14
            assert files[i - 1] < files[i]  # the D1 is in an earlier file
            assert munis[i - 1] != munis[i]  # a move-in from another municipality


def test_nothing_but_x1_follows_a_death(half_year: tuple[GenerateSummary, pl.DataFrame]) -> None:
    rows = half_year[1]
    dead = rows.filter(pl.col("reason") == "D3").select("resident_code", died=pl.col("position"))
    later = rows.join(dead, on="resident_code").filter(pl.col("position") > pl.col("died"))
    assert dead.height > 0 and later.filter(pl.col("reason") != "X1").height == 0


def test_codes_are_never_shared_between_persons(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    """Replay: a row names its person by resident code (M5: the previous one); a code, once
    seen, belongs to that person for good; a person is new only on A1, A3 or A4."""
    owner: dict[tuple[str, str], int] = {}
    person_of: dict[str, int] = {}
    persons = 0
    rows = half_year[1].sort("position")
    for r in rows.iter_rows(named=True):
        named = r["previous_resident_code"] if r["reason"] == "M5" else r["resident_code"]
        person = person_of.get(named)
        if person is None:
            assert r["reason"] in ("A1", "A3", "A4"), r
            person, persons = persons, persons + 1
        for kind in ("resident_code", "my_number"):
            assert owner.setdefault((kind, r[kind]), person) == person, (kind, r)
        person_of[r["resident_code"]] = person
    assert persons > 20_000


def test_x1_cancels_the_persons_last_notification(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    rows = half_year[1].sort("position")
    x1 = rows.filter(pl.col("reason") == "X1")
    assert x1.height > 0
    for x in x1.iter_rows(named=True):
        before = rows.filter(
            (pl.col("resident_code") == x["resident_code"]) & (pl.col("position") < x["position"])
        )
        last = before.row(-1, named=True)
        assert last["reason"] in ("M1", "M2")
        assert (last["municipality_code"], last["seq"]) == (
            x["cancels_municipality_code"],
            x["cancels_seq"],
        )
        assert x["municipality_code"] == last["municipality_code"]
        assert x["change_date"] >= last["change_date"]


def test_m1_and_d1_keep_the_municipality(half_year: tuple[GenerateSummary, pl.DataFrame]) -> None:
    rows = half_year[1].sort("position")
    with_previous = rows.with_columns(
        pl.col("municipality_code").shift(1).over("resident_code").alias("before")
    )
    kept = with_previous.filter(pl.col("reason").is_in(["M1", "D1"]))
    assert kept.height > 0 and (kept["before"] == kept["municipality_code"]).all()


def test_dates_are_consistent(half_year: tuple[GenerateSummary, pl.DataFrame]) -> None:
    rows = half_year[1]
    assert (rows["birth_date"] <= rows["change_date"]).all()
    assert (rows["notified_at"].dt.date() >= rows["change_date"]).all()
    initial = rows.filter(pl.col("file").str.starts_with("0000-"))
    assert (initial["reason"] == "A4").all()
    assert (initial["change_date"] == date(2024, 1, 1)).all()
    births = rows.filter(pl.col("reason") == "A1")
    assert (births["birth_date"] == births["change_date"]).all()


def test_all_reasons_appear_in_a_20000_resident_half_year(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    assert set(half_year[1]["reason"].unique().to_list()) == ALL_REASONS


def test_the_oracle_applies_every_row_with_nothing_held(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    summary, _ = half_year
    oracle = Oracle()
    for f in summary.files:
        text = pl.read_parquet(f).with_columns(pl.all().cast(pl.String))
        result = oracle.ingest_file(f, text.to_dicts())
        assert result.rejects == {}, f
        assert result.counts() == {
            "applied": text.height,
            "rejected": 0,
            "duplicate": 0,
            "held": 0,
            "released": 0,
        }


def test_prefecture_sizes_follow_the_2020_census(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    initial = half_year[1].filter(pl.col("file").str.starts_with("0000-"))
    counts = initial.group_by(pl.col("municipality_code").str.slice(0, 2)).len()
    census = np.array([p for _, p in PREFECTURES], dtype=np.float64)
    expected = 20_000 * census / census.sum()
    got = dict(counts.iter_rows())
    for i, e in enumerate(expected):
        assert abs(got.get(f"{i + 1:02d}", 0) - e) <= 1
    assert got["13"] > got["27"] > got["01"] > got["31"]  # Tokyo, Osaka, Hokkaido, Tottori


def test_population_mix_is_plausible(half_year: tuple[GenerateSummary, pl.DataFrame]) -> None:
    initial = half_year[1].filter(pl.col("file").str.starts_with("0000-"))
    foreign = (initial["resident_kind"] == 2).mean()
    assert 0.02 < foreign < 0.035  # 住基 2024: 2.7%
    age = (pl.date(2024, 1, 1) - pl.col("birth_date")).dt.total_days() / 365.25
    ages = initial.select(age.alias("age"))["age"]
    assert 0.25 < (ages >= 65).mean() < 0.33  # 住基 2024: 29.4% of Japanese residents
    assert 0.45 < (initial["sex"] == 2).mean() < 0.55
    assert initial["protected"].sum() < 0.005 * initial.height
    deaths = half_year[1].filter(pl.col("reason") == "D3")
    died = deaths.select((pl.col("change_date") - pl.col("birth_date")).dt.total_days() / 365.25)
    assert died.to_series().median() > 70  # deaths skew old


def test_addresses_begin_with_prefecture_and_municipality(
    half_year: tuple[GenerateSummary, pl.DataFrame],
) -> None:
    geo = build_geography()
    heads = pl.DataFrame(
        {
            "municipality_code": geo.code_text(),
            "head": [geo.prefecture_name[p] + n for p, n in zip(geo.prefecture, geo.name)],
        }
    )
    rows = half_year[1].filter(pl.col("reason") != "X1").join(heads, on="municipality_code")
    assert rows.height == half_year[1].filter(pl.col("reason") != "X1").height
    assert rows.select(pl.col("address").str.starts_with(pl.col("head")).all()).item()
    assert dict(zip(heads["municipality_code"], heads["head"]))["131016"] == "東京都千代田区"


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    runs = [
        generate(tmp_path / name, residents=500, months=2, seed=seed)
        for name, seed in (("a", 5), ("b", 5), ("c", 6))
    ]
    names = [[Path(f).name for f in r.files] for r in runs]
    assert names[0] == names[1]
    for x, y in zip(runs[0].files, runs[1].files, strict=True):
        assert Path(x).read_bytes() == Path(y).read_bytes()
    differ = [
        Path(x).read_bytes() != Path(y).read_bytes()
        for x, y in zip(runs[0].files, runs[2].files, strict=False)
    ]
    assert any(differ)


def test_csv_holds_the_same_rows_as_parquet(tmp_path: Path) -> None:
    parquet = generate(tmp_path / "p", residents=400, months=2, seed=2)
    csv = generate(tmp_path / "c", residents=400, months=2, seed=2, file_format="csv")
    assert [Path(f).stem for f in parquet.files] == [Path(f).stem for f in csv.files]
    raw = Path(csv.files[0]).read_text(encoding="utf-8")
    assert raw.startswith('"municipality_code","seq","reason"')
    for p, c in zip(parquet.files, csv.files, strict=True):
        typed = pl.read_parquet(p)
        text = pl.read_csv(c, infer_schema=False)
        stamps = pl.col("notified_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%:z", time_zone="UTC")
        assert text.select(stamps).to_series().equals(typed["notified_at"], check_names=False)
        expected = (
            typed.drop("notified_at")
            .with_columns(pl.col(pl.Boolean).cast(pl.String).str.to_lowercase())
            .with_columns(pl.all().cast(pl.String))
        )
        assert text.drop("notified_at").equals(expected)


def test_progress_reaches_the_total(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    generate(tmp_path, residents=300, months=1, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_tiny_run_still_works_and_stale_files_are_replaced(tmp_path: Path) -> None:
    stale = tmp_path / "2099-01-1-13.parquet"
    stale.write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    summary = generate(tmp_path, residents=1, months=1)
    assert not stale.exists() and (tmp_path / "notes.txt").exists()
    assert read_rows(summary).filter(pl.col("reason") == "A4").height >= 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"residents": 0, "months": 1}, "--residents 0"),
        ({"residents": 10, "months": -1}, "--months -1"),
        ({"residents": 10, "months": 1, "start": "2024-13"}, "--start '2024-13'"),
        ({"residents": 10, "months": 1, "file_format": "xlsx"}, "--format xlsx"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        generate(tmp_path, **arguments)


@pytest.mark.slow
def test_juki_ingest_applies_every_generated_row(tmp_path: Path) -> None:
    from engine.store import Store
    from loaders.ingest import ingest_files

    summary = generate(tmp_path / "files", residents=2_000, months=2)
    report = ingest_files(Store(tmp_path / "store"), summary.files)
    totals = {k: report.total(k) for k in ("applied", "rejected", "held", "duplicate")}
    assert totals == {"applied": summary.rows, "rejected": 0, "held": 0, "duplicate": 0}

"""As-of reads (SPEC §1): the fast path (current + corrections) agrees with the oracle that reads
the journal literally, for any date and any `--known-at` bound."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from builders import (
    CHIYODA,
    SHIBUYA,
    Municipality,
    my_number,
    person,
    resident_code,
    row,
    write_csv,
)
from hypothesis import given
from read_oracle import History
from stories import Story, ingest_at, ingest_story, property_settings, stories

from engine.history import as_of
from engine.resolve import known_batch
from engine.store import Store

PROPERTY = property_settings(10)
DAYS = st.dates(dt.date(2023, 5, 1), dt.date(2027, 8, 1))


def fast(store: Store, day: dt.date, at: dt.datetime | None) -> dict[int, int]:
    frame = as_of(store, date=day, upto_batch=known_batch(store, at)).collect()
    return dict(zip(frame["person"].to_list(), frame["version"].to_list(), strict=True))


def slow(history: History, day: dt.date, at: dt.datetime | None) -> dict[int, int]:
    out = {}
    for p in history.persons:
        v = history.version_on(p, day, at)
        if v is not None:
            out[p] = v["version"]
    return out


@PROPERTY
@given(story=stories(), data=st.data())
def test_the_version_in_effect_agrees_with_the_oracle_for_any_date_and_bound(
    story: Story, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        ingest_story(store, story, Path(tmp) / "files")
        history = History(store)
        bounds = [None, *story.stamps, story.stamps[0] - dt.timedelta(seconds=1),
                  story.stamps[-1] - dt.timedelta(seconds=1)]  # fmt: skip
        for _ in range(4):
            day = data.draw(DAYS)
            at = data.draw(st.sampled_from(bounds))
            assert fast(store, day, at) == slow(history, day, at), story.describe()


def test_a_planned_move_out_takes_effect_on_its_date_and_a_cancelled_one_never(
    tmp_path: Path,
) -> None:
    chiyoda = Municipality(CHIYODA)
    codes = {"resident_code": resident_code(1), "my_number": my_number(1)}
    store = Store(tmp_path / "store")
    t1 = dt.datetime(2025, 1, 10, tzinfo=dt.UTC)
    t2 = dt.datetime(2025, 2, 10, tzinfo=dt.UTC)
    first = [row(chiyoda, "A4", "2024-01-01", person(1)),
             row(chiyoda, "D1", "2025-03-31", person(1))]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "a.csv", first), t1)
    statuses = {d: fast(store, dt.date.fromisoformat(d), None) for d in ("2025-03-30", "2025-03-31")}
    assert statuses == {"2025-03-30": {0: 1}, "2025-03-31": {0: 2}}
    cancel = [row(chiyoda, "X1", "2025-02-10", codes, cancels_municipality_code=CHIYODA,
                  cancels_seq=2)]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "b.csv", cancel), t2)
    assert fast(store, dt.date(2025, 4, 1), None) == {0: 1}
    # a read bounded before the X1 still sees the move-out
    assert fast(store, dt.date(2025, 4, 1), t2 - dt.timedelta(seconds=1)) == {0: 2}


def test_a_late_correction_with_an_older_change_date_wins_from_its_date_on(tmp_path: Path) -> None:
    """Application order decides, not change_date: the M3 recorded last is in effect from its
    own (earlier) date, and the M1 before it is no longer the version on any later date."""
    chiyoda, shibuya = Municipality(CHIYODA), Municipality(SHIBUYA)
    store = Store(tmp_path / "store")
    rows = [row(chiyoda, "A4", "2024-01-01", person(1)),
            row(chiyoda, "M1", "2024-06-01", person(1, address="東京都千代田区2")),
            row(chiyoda, "M3", "2024-03-01", person(1, address="東京都千代田区2",
                                                    given_name="訂正"))]  # fmt: skip
    ingest_at(store, write_csv(tmp_path / "a.csv", rows), dt.datetime(2024, 7, 1, tzinfo=dt.UTC))
    assert shibuya.code != chiyoda.code
    assert fast(store, dt.date(2024, 2, 1), None) == {0: 1}
    assert fast(store, dt.date(2024, 4, 1), None) == {0: 3}
    assert fast(store, dt.date(2024, 7, 1), None) == {0: 3}

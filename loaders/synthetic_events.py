"""One month of life in the synthetic population: who is born, dies, moves, marries, … and the rows.

Each registered person has at most one main event a month (a `busy` mask), chosen by rejection
sampling: draw random persons, keep each with the probability its age band, sex and kind give the
event. Volumes are the reference's yearly figures scaled to the registered population, and every
reason occurs at least once a month (where anyone qualifies) so that small runs exercise them all.
A few main events have a follow-up row in the same month: the A2 that closes a D1 (within 14 days,
in the month's move-in file), the M6 that records or clears 旧氏 after a marriage or divorce, and
the X1 that cancels an M1 or M2. Nothing follows a D3; removed persons get no M*/D* rows; every
month ends with nobody in status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loaders import synthetic_figures as fig
from loaders.synthetic_codes import CodeIssuer
from loaders.synthetic_files import timestamps_us
from loaders.synthetic_names import NameTables
from loaders.synthetic_people import (
    ABROAD,
    DEAD,
    MOVING_OUT,
    REGISTERED,
    REMOVED_EX_OFFICIO,
    People,
    draw_address,
    draw_given_name,
    draw_other_surname,
    draw_persons,
)
from loaders.synthetic_places import Geography, pick_municipality
from loaders.synthetic_rows import RowBatch

OFFICE_HOURS_S = 8 * 3600  # notified 09:00–17:00 Japan time = 00:00–08:00 UTC


def profile(
    age: np.ndarray,
    *,
    male: float | np.ndarray = 1.0,
    female: float | np.ndarray = 1.0,
    japanese: float = 1.0,
    foreign: float = 1.0,
) -> np.ndarray:
    """Acceptance probabilities indexed [age band, sex, resident kind], the largest being 1."""
    table = np.zeros((fig.BANDS, 3, 3))
    for sex, ws in ((1, male), (2, female)):
        for kind, wk in ((1, japanese), (2, foreign)):
            table[:, sex, kind] = age * ws * wk
    return table / table.max()


_OLDER_MEN = np.where(np.arange(fig.BANDS) >= 8, fig.MALE_MORTALITY_FACTOR, 1.0)
PROFILES = {
    "death": profile(fig.MORTALITY, male=_OLDER_MEN),
    "birth": profile(fig.MOTHER, male=0.0),
    "move_out": profile(fig.MOVE, foreign=fig.FOREIGN_MOVE_FACTOR),
    "abroad_out": profile(fig.ABROAD_OUT, foreign=fig.FOREIGN_ABROAD_OUT_FACTOR),
    "ex_officio_removal": profile(fig.ADULT),
    "marriage": profile(fig.MARRIAGE, male=1 - fig.WIFE_TAKES_NAME, female=fig.WIFE_TAKES_NAME,
                        foreign=0.0),
    "divorce": profile(fig.DIVORCE, male=0.1, female=0.9, foreign=0.0),
    "move_within": profile(fig.MOVE_WITHIN, foreign=fig.FOREIGN_MOVE_FACTOR),
    "correction": profile(fig.ANY),
    "my_number_change": profile(fig.ANY),
    "resident_code_change": profile(fig.ANY),
    "former_surname": profile(fig.MARRIED_AGE, foreign=0.0),
    "alias": profile(fig.ANY, japanese=0.0),
}  # fmt: skip


@dataclass
class Month:
    """What one month's simulation works on (the people arrays are changed in place)."""

    people: People
    names: NameTables
    geo: Geography
    issuer: CodeIssuer
    rng: np.random.Generator
    first_day: int  # days since the epoch
    days: int  # days in the month
    foreign_p: np.ndarray  # P(foreign | age band) for new persons

    def __post_init__(self) -> None:
        self.busy = np.zeros(self.people.count, dtype=bool)
        registered = np.count_nonzero(self.people["state"] == REGISTERED)
        self.scale = registered / fig.REFERENCE_POPULATION / 12

    @property
    def last_day(self) -> int:
        return self.first_day + self.days - 1

    def volume(self, event: str, share: float = 1.0) -> int:
        """This month's count of an event: Poisson around the scaled yearly figure, at least 1."""
        return max(1, int(self.rng.poisson(fig.YEARLY[event] * share * self.scale)))

    def choose(self, event: str, count: int | None = None) -> np.ndarray:
        """Up to `count` distinct registered, not yet busy persons for `event`; marks them busy."""
        return self.choose_by(PROFILES[event], self.volume(event) if count is None else count)

    def choose_by(self, table: np.ndarray, count: int) -> np.ndarray:
        people, rng = self.people, self.rng
        chosen: list[np.ndarray] = []
        need, rate = count, 0.05
        for _ in range(40):
            if need <= 0:
                break
            draws = int(min(need / rate * 1.3 + 64, 4 * people.count + 64))
            ids = rng.integers(0, people.count, draws)
            ids = ids[(people.columns["state"][ids] == REGISTERED) & ~self.busy[ids]]
            band = fig.age_band(people.columns["birth_date"][ids], self.first_day)
            p = table[band, people.columns["sex"][ids], people.columns["resident_kind"][ids]]
            ids = ids[rng.random(len(ids)) < p]
            _, first = np.unique(ids, return_index=True)
            ids = ids[np.sort(first)][:need]
            self.busy[ids] = True
            chosen.append(ids)
            need -= len(ids)
            rate = max(len(ids) / draws, 1e-4)
        return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)

    def dates(self, n: int) -> np.ndarray:
        return (self.first_day + self.rng.integers(0, self.days, n)).astype(np.int32)

    def notified(self, change_date: np.ndarray, max_delay_days: int = 3) -> np.ndarray:
        """Notification instants: on the change date or a few days later, in office hours."""
        n = len(change_date)
        day = change_date.astype(np.int64) + self.rng.integers(0, max_delay_days + 1, n)
        return timestamps_us(day, self.rng.integers(0, OFFICE_HOURS_S, n))

    def rows(self, ids: np.ndarray, reason: str, change_date: np.ndarray, **extra) -> RowBatch:
        """Rows carrying these persons' records as they are now."""
        notified = extra.pop("notified_at", None)
        if notified is None:
            notified = self.notified(change_date)
        return RowBatch.of(
            self.people.snapshot(ids),
            reason=reason,
            change_date=change_date,
            notified_at=notified,
            person=ids,
            **extra,
        )

    def new_address(self, ids: np.ndarray, municipality: np.ndarray) -> None:
        self.people.set(ids, municipality=municipality, **draw_address(self.geo, municipality, self.rng))


def _other_municipality(month: Month, current: np.ndarray) -> np.ndarray:
    """A municipality other than `current`: in the same prefecture for the reference's share of
    moves (2,684,497 of 5,207,746 in 2024), else in another prefecture, by population."""
    geo, rng = month.geo, month.rng
    pref = geo.prefecture[current].astype(np.int64)
    other = rng.random(len(current)) >= fig.INTRA_PREFECTURE_MOVES
    drawn = _pick_prefecture(rng, geo, len(current))
    clash = drawn == pref
    drawn[clash] = (drawn[clash] + 1 + rng.integers(0, 46, int(clash.sum()))) % 47
    target = np.where(other, drawn, pref)
    out = pick_municipality(geo, target, rng)
    for _ in range(8):  # redraw the few that landed on the municipality they leave
        same = np.flatnonzero(out == current)
        if not len(same):
            break
        out[same] = pick_municipality(geo, target[same], rng)
    same = out == current  # still the same: take the next municipality of the prefecture
    lo, hi = geo.first[target[same]], geo.first[target[same] + 1]
    out[same] = (lo + (out[same] - lo + 1) % (hi - lo)).astype(np.int16)
    return out


def _pick_prefecture(rng: np.random.Generator, geo: Geography, n: int) -> np.ndarray:
    """Prefectures drawn by their 2020 census share."""
    p = np.searchsorted(np.cumsum(geo.prefecture_share), rng.random(n), side="right")
    return np.minimum(p, 46).astype(np.int64)


def simulate_month(month: Month) -> tuple[RowBatch, RowBatch]:
    """Change the people by one month; return (rows of the `-1-` files, A2 rows of the `-2-`)."""
    main: list[RowBatch] = []
    follow: list[RowBatch] = []
    step: list[Callable[[Month, list[RowBatch], list[RowBatch]], None]] = [
        _deaths, _births, _moves_out, _removals, _name_changes, _moves_within, _record_changes,
        _entries,
    ]  # fmt: skip
    moves: list[RowBatch] = []
    for s in step:
        s(month, main, follow if s is not _moves_out else moves)
    main_rows = RowBatch.concat(main)
    cancellations = _cancellations(month, main_rows)
    file_1 = RowBatch.concat([main_rows, *follow, *cancellations])
    file_2 = RowBatch.concat(moves) if moves else RowBatch.concat([main_rows.take(slice(0, 0))])
    return file_1, file_2


def _deaths(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """D3, weighted to old age (vital statistics 2024: 1,605,378 deaths)."""
    ids = month.choose("death")
    month.people.set(ids, state=DEAD)
    main.append(month.rows(ids, "D3", month.dates(len(ids))))


def _births(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """A1: a baby born this month, registered with the mother (aged 20–44) at her address."""
    people, rng = month.people, month.rng
    mothers = month.choose("birth")
    n = len(mothers)
    birth = month.dates(n)
    ids = people.add(n)
    mother = people.snapshot(mothers)
    sex = np.where(rng.random(n) < 105 / 205, 1, 2).astype(np.int8)
    kind = mother["resident_kind"]
    people.set(
        ids,
        **{f: mother[f] for f in ("municipality", "surname", "town", "block", "go", "protected")},
        birth_date=birth,
        sex=sex,
        resident_kind=kind,
        given_name=draw_given_name(rng, sex, kind, birth, mother["surname"], month.names),
        former_surname=-1,
        alias=-1,
        resident_code=month.issuer.issue("resident_code", n),
        my_number=month.issuer.issue("my_number", n),
        state=REGISTERED,
    )
    # A birth is notified within 14 days (出生届).
    main.append(month.rows(ids, "A1", birth, notified_at=month.notified(birth, 13)))


def _moves_out(month: Month, main: list[RowBatch], moves: list[RowBatch]) -> None:
    """D1 at the old municipality, then A2 at the new one within 14 days (same month)."""
    ids = month.choose("move_out")
    out = month.dates(len(ids))
    month.people.set(ids, state=MOVING_OUT)
    d1 = month.rows(ids, "D1", out)
    main.append(d1)
    delay = np.minimum(month.rng.integers(0, 15, len(ids)), month.last_day - out)
    arrive = (out + delay).astype(np.int32)
    current = month.people.columns["municipality"][ids]
    month.new_address(ids, _other_municipality(month, current))
    month.people.set(ids, state=REGISTERED)
    notified = np.maximum(month.notified(arrive), d1["notified_at"] + 3_600_000_000)
    moves.append(month.rows(ids, "A2", arrive, notified_at=notified))


def _removals(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """D2 (to abroad, mostly foreign residents) and D4 (ex officio removal)."""
    for event, reason, state in (("abroad_out", "D2", ABROAD), ("ex_officio_removal", "D4", REMOVED_EX_OFFICIO)):
        ids = month.choose(event)
        month.people.set(ids, state=state)
        main.append(month.rows(ids, reason, month.dates(len(ids))))


def _name_changes(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """M2 on marriage (new surname; sometimes M6 records the old one as 旧氏) and on divorce (back
    to the 旧氏 when one is recorded, then M6 clears it; else another surname)."""
    people, rng, names = month.people, month.rng, month.names
    ids = month.choose("marriage")
    old = people.columns["surname"][ids]
    people.set(ids, surname=draw_other_surname(rng, old, names))
    date = month.dates(len(ids))
    m2 = month.rows(ids, "M2", date)
    main.append(m2)
    keep = (rng.random(len(ids)) < fig.MARRIAGE_FORMER_SURNAME) & (people.columns["former_surname"][ids] < 0)
    keep[: 1 if len(ids) and not keep.any() and people.columns["former_surname"][ids[0]] < 0 else 0] = True
    k = np.flatnonzero(keep)
    people.set(ids[k], former_surname=old[k])
    follow.append(month.rows(ids[k], "M6", date[k], phase=1, notified_at=m2["notified_at"][k] + 60_000_000))
    month.married_without_follow_up = m2.take(np.flatnonzero(~keep))

    ids = month.choose("divorce")
    former = people.columns["former_surname"][ids]
    has = former >= 0
    people.set(ids, surname=np.where(has, former, draw_other_surname(rng, people.columns["surname"][ids], names)))
    date = month.dates(len(ids))
    m2 = month.rows(ids, "M2", date)
    main.append(m2)
    k = np.flatnonzero(has)
    people.set(ids[k], former_surname=-1)
    follow.append(month.rows(ids[k], "M6", date[k], phase=1, notified_at=m2["notified_at"][k] + 60_000_000))


def _moves_within(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """M1: a new address in the same municipality (転居)."""
    ids = month.choose("move_within")
    month.moved_within = month.rows(ids, "M1", month.dates(len(ids)))  # before the change, for X1
    month.new_address(ids, month.people.columns["municipality"][ids])
    main.append(month.rows(ids, "M1", month.moved_within["change_date"],
                           notified_at=month.moved_within["notified_at"]))


def _record_changes(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """M3 (given name corrected), M4 (new My Number), M5 (new resident code), M6 (旧氏 recorded or
    removed on its own), M7 (通称 recorded or removed)."""
    people, rng, names = month.people, month.rng, month.names
    c = people.columns
    ids = month.choose("correction")
    people.set(ids, given_name=draw_given_name(rng, c["sex"][ids], c["resident_kind"][ids],
                                               c["birth_date"][ids], c["surname"][ids], names))
    main.append(month.rows(ids, "M3", month.dates(len(ids))))

    ids = month.choose("my_number_change")
    people.set(ids, my_number=month.issuer.issue("my_number", len(ids)))
    main.append(month.rows(ids, "M4", month.dates(len(ids))))

    ids = month.choose("resident_code_change")
    previous = c["resident_code"][ids].copy()
    people.set(ids, resident_code=month.issuer.issue("resident_code", len(ids)))
    main.append(month.rows(ids, "M5", month.dates(len(ids)), previous_resident_code=previous))

    ids = month.choose("former_surname")
    cleared = c["former_surname"][ids] >= 0
    new = draw_other_surname(rng, c["surname"][ids], names)
    people.set(ids, former_surname=np.where(cleared, -1, new))
    main.append(month.rows(ids, "M6", month.dates(len(ids))))

    ids = month.choose("alias")
    had = c["alias"][ids] >= 0
    new = (rng.random(len(ids)) * len(names.alias)).astype(np.int16)
    people.set(ids, alias=np.where(had, -1, new))
    main.append(month.rows(ids, "M7", month.dates(len(ids))))


def _entries(month: Month, main: list[RowBatch], follow: list[RowBatch]) -> None:
    """A3 from abroad (returning persons removed by D2, and new persons, mostly foreign) and A4 of
    persons removed ex officio (registered again in their prefecture)."""
    people, rng = month.people, month.rng
    total = month.volume("abroad_in")
    pool = np.flatnonzero(people["state"] == ABROAD)
    k = min(len(pool), max(1, int(round(total * fig.ABROAD_IN_RETURNING))))
    ids = np.sort(rng.choice(pool, k, replace=False)) if k else pool[:0]
    month.new_address(ids, pick_municipality(month.geo, _pick_prefecture(rng, month.geo, k), rng))
    people.set(ids, state=REGISTERED)
    main.append(month.rows(ids, "A3", month.dates(k)))

    pool = np.flatnonzero(people["state"] == REMOVED_EX_OFFICIO)
    k = min(len(pool), month.volume("ex_officio_entry"))
    ids = np.sort(rng.choice(pool, k, replace=False)) if k else pool[:0]
    pref = month.geo.prefecture[people.columns["municipality"][ids]]
    month.new_address(ids, pick_municipality(month.geo, pref, rng))
    people.set(ids, state=REGISTERED)
    main.append(month.rows(ids, "A4", month.dates(k)))

    main.append(_arrivals(month, max(1, total - len(ids))))


def _arrivals(month: Month, n: int) -> RowBatch:
    """A3 for new persons from abroad: young adults mostly, 85% foreign residents (assumption)."""
    people, rng, geo = month.people, month.rng, month.geo
    date = month.dates(n)
    cum = np.cumsum(fig.ARRIVAL_BANDS)
    band = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), fig.BANDS - 1)
    years = band * 5 + rng.random(n) * 5
    birth = (date - 1 - (years * fig.DAYS_PER_YEAR).astype(np.int64)).astype(np.int32)
    sex = np.where(rng.random(n) < 0.55, 1, 2).astype(np.int8)
    kind = np.where(rng.random(n) < fig.ABROAD_IN_NEW_FOREIGN, 2, 1).astype(np.int8)
    municipality = pick_municipality(geo, _pick_prefecture(rng, geo, n), rng)
    ids = people.add(n)
    people.set(ids, **draw_persons(rng, birth, sex, kind, municipality, month.first_day, month.names, geo))
    people.set(ids, resident_code=month.issuer.issue("resident_code", n),
               my_number=month.issuer.issue("my_number", n), state=REGISTERED)  # fmt: skip
    return month.rows(ids, "A3", date)


def _cancellations(month: Month, main_rows: RowBatch) -> list[RowBatch]:
    """X1 cancelling this month's M1 or M2 (one without a follow-up) of a few persons: the record
    reverts to what it was, and the X1 row carries that record."""
    rng = month.rng
    candidates = RowBatch.concat([month.moved_within, month.married_without_follow_up])
    k = min(len(candidates), month.volume("cancellation"))
    if not k:
        return []
    before = candidates.take(np.sort(rng.choice(len(candidates), k, replace=False)))
    ids = before["person"]
    order = np.argsort(main_rows["person"], kind="stable")
    target = order[np.searchsorted(main_rows["person"], ids, sorter=order)]
    month.people.set(ids, **{f: before[f] for f in ("town", "block", "go", "surname")})
    cancelled = main_rows["change_date"][target].astype(np.int64)
    date = (cancelled + rng.integers(0, month.last_day - cancelled + 1)).astype(np.int32)
    notified = np.maximum(month.notified(date), main_rows["notified_at"][target] + 3_600_000_000)
    return [month.rows(ids, "X1", date, phase=1, notified_at=notified, target=target)]

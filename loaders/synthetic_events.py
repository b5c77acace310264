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
    event_rate: float = 1.0  # multiplies every event volume (benchmarks: national volumes)

    def __post_init__(self) -> None:
        # Only persons who exist at the start of the month take part; newborns and arrivals wait.
        self.existing = self.people.count
        self.busy = np.zeros(self.existing, dtype=bool)
        registered = np.count_nonzero(self.people["state"] == REGISTERED)
        self.scale = registered / fig.REFERENCE_POPULATION / 12 * self.event_rate

    @property
    def last_day(self) -> int:
        return self.first_day + self.days - 1

    def volume(self, event: str) -> int:
        """This month's count of an event: Poisson around the scaled yearly figure, at least 1."""
        return max(1, int(self.rng.poisson(fig.YEARLY[event] * self.scale)))

    def choose(self, event: str) -> np.ndarray:
        """Distinct registered persons, not yet busy this month, for `event`; marks them busy."""
        table, need, rate = PROFILES[event], self.volume(event), 0.05
        c, rng = self.people.columns, self.rng
        chosen: list[np.ndarray] = []
        for _ in range(40):
            if need <= 0:
                break
            draws = int(min(need / rate * 1.3 + 64, 4 * self.existing + 64))
            ids = rng.integers(0, self.existing, draws)
            ids = ids[(c["state"][ids] == REGISTERED) & ~self.busy[ids]]
            band = fig.age_band(c["birth_date"][ids], self.first_day)
            ids = ids[rng.random(len(ids)) < table[band, c["sex"][ids], c["resident_kind"][ids]]]
            _, first = np.unique(ids, return_index=True)
            ids = ids[np.sort(first)][:need]
            self.busy[ids] = True
            chosen.append(ids)
            need -= len(ids)
            rate = max(len(ids) / draws, 1e-4)
        return np.concatenate(chosen)

    def removed(self, state: int, count: int) -> np.ndarray:
        """Up to `count` persons removed (in `state`) before this month, sorted."""
        pool = np.flatnonzero((self.people.columns["state"][: self.existing] == state) & ~self.busy)
        k = min(len(pool), count)
        ids = np.sort(self.rng.choice(pool, k, replace=False)) if k else pool[:0]
        self.busy[ids] = True
        return ids

    def dates(self, n: int) -> np.ndarray:
        return (self.first_day + self.rng.integers(0, self.days, n)).astype(np.int32)

    def notified(self, change_date: np.ndarray, max_delay_days: int = 3) -> np.ndarray:
        """Notification instants: on the change date or a few days later, in office hours."""
        n = len(change_date)
        day = change_date.astype(np.int64) + self.rng.integers(0, max_delay_days + 1, n)
        return timestamps_us(day, self.rng.integers(0, OFFICE_HOURS_S, n))

    def rows(
        self,
        ids: np.ndarray,
        reason: str,
        change_date: np.ndarray,
        notified_at: np.ndarray | None = None,
        *,
        phase: int = 0,
        **extra: np.ndarray,
    ) -> RowBatch:
        """Rows carrying these persons' records as they are now."""
        return RowBatch.of(
            self.people.snapshot(ids),
            reason=reason,
            change_date=change_date,
            notified_at=self.notified(change_date) if notified_at is None else notified_at,
            person=ids,
            phase=phase,
            **extra,
        )

    def move(self, ids: np.ndarray, municipality: np.ndarray) -> None:
        """A new address (town, house number) in the given municipalities."""
        address = draw_address(self.geo, municipality, self.rng)
        self.people.set(ids, municipality=municipality, **address)


@dataclass
class MonthRows:
    """A month's rows: main rows, follow-ups (M6, X1) and move-ins (A2), plus the rows an X1
    may cancel with the records from before them."""

    main: list[RowBatch]
    follow: list[RowBatch]
    move_in: list[RowBatch]
    cancellable: list[tuple[RowBatch, dict[str, np.ndarray]]]


def simulate_month(month: Month) -> tuple[RowBatch, RowBatch]:
    """Change the people by one month; return (rows of the `-1-` files, A2 rows of the `-2-`)."""
    out = MonthRows([], [], [], [])
    _deaths(month, out)
    _births(month, out)
    _moves_out(month, out)
    _removals(month, out)
    _name_changes(month, out)
    _moves_within(month, out)
    _record_changes(month, out)
    _entries(month, out)
    main = RowBatch.concat(out.main)
    return RowBatch.concat([main, *out.follow, *_cancellations(month, main, out)]), RowBatch.concat(
        out.move_in
    )


def _deaths(month: Month, out: MonthRows) -> None:
    """D3, weighted to old age (vital statistics 2024: 1,605,378 deaths)."""
    ids = month.choose("death")
    month.people.set(ids, state=DEAD)
    out.main.append(month.rows(ids, "D3", month.dates(len(ids))))


def _births(month: Month, out: MonthRows) -> None:
    """A1: a baby born this month, registered with the mother (aged 20–44) at her address."""
    people, rng = month.people, month.rng
    mother = people.snapshot(month.choose("birth"))
    n = len(mother["sex"])
    birth = month.dates(n)
    sex = np.where(rng.random(n) < 105 / 205, 1, 2).astype(np.int8)
    kind = mother["resident_kind"]
    ids = people.add(n)
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
    # 出生届 is due within 14 days of the birth.
    out.main.append(month.rows(ids, "A1", birth, month.notified(birth, 13)))


def _moves_out(month: Month, out: MonthRows) -> None:
    """D1 at the old municipality, then A2 at the new one within 14 days (same month)."""
    ids = month.choose("move_out")
    leave = month.dates(len(ids))
    month.people.set(ids, state=MOVING_OUT)
    d1 = month.rows(ids, "D1", leave)
    out.main.append(d1)
    delay = np.minimum(month.rng.integers(0, 15, len(ids)), month.last_day - leave)
    arrive = (leave + delay).astype(np.int32)
    month.move(ids, _other_municipality(month, month.people.columns["municipality"][ids]))
    month.people.set(ids, state=REGISTERED)
    notified = np.maximum(month.notified(arrive), d1["notified_at"] + 3_600_000_000)
    out.move_in.append(month.rows(ids, "A2", arrive, notified))


def _removals(month: Month, out: MonthRows) -> None:
    """D2 (to abroad, mostly foreign residents) and D4 (ex officio removal)."""
    for event, reason, state in (
        ("abroad_out", "D2", ABROAD),
        ("ex_officio_removal", "D4", REMOVED_EX_OFFICIO),
    ):
        ids = month.choose(event)
        month.people.set(ids, state=state)
        out.main.append(month.rows(ids, reason, month.dates(len(ids))))


def _name_changes(month: Month, out: MonthRows) -> None:
    """M2 on marriage (new surname; sometimes an M6 records the old one as 旧氏) and on divorce
    (back to the 旧氏 when one is recorded, and an M6 clears it; else another surname)."""
    people, rng, names = month.people, month.rng, month.names
    c = people.columns
    ids = month.choose("marriage")
    before = people.snapshot(ids)
    people.set(ids, surname=draw_other_surname(rng, before["surname"], names))
    m2 = month.rows(ids, "M2", month.dates(len(ids)))
    out.main.append(m2)
    with_m6 = (rng.random(len(ids)) < fig.MARRIAGE_FORMER_SURNAME) & (before["former_surname"] < 0)
    k = np.flatnonzero(with_m6)
    people.set(ids[k], former_surname=before["surname"][k])
    out.follow.append(_follow_up(month, m2.take(k), "M6"))
    alone = np.flatnonzero(~with_m6)
    out.cancellable.append((m2.take(alone), {f: v[alone] for f, v in before.items()}))

    ids = month.choose("divorce")
    former = c["former_surname"][ids]
    back = former >= 0
    other = draw_other_surname(rng, c["surname"][ids], names)
    people.set(ids, surname=np.where(back, former, other))
    m2 = month.rows(ids, "M2", month.dates(len(ids)))
    out.main.append(m2)
    k = np.flatnonzero(back)
    people.set(ids[k], former_surname=-1)
    out.follow.append(_follow_up(month, m2.take(k), "M6"))


def _follow_up(month: Month, main: RowBatch, reason: str) -> RowBatch:
    """A row notified a minute after its main row, same date, ordered after it (phase 1)."""
    return month.rows(
        main["person"], reason, main["change_date"], main["notified_at"] + 60_000_000, phase=1
    )


def _moves_within(month: Month, out: MonthRows) -> None:
    """M1: a new address in the same municipality (転居)."""
    ids = month.choose("move_within")
    before = month.people.snapshot(ids)
    month.move(ids, before["municipality"])
    m1 = month.rows(ids, "M1", month.dates(len(ids)))
    out.main.append(m1)
    out.cancellable.append((m1, before))


def _record_changes(month: Month, out: MonthRows) -> None:
    """M3 (given name corrected), M4 (new My Number), M5 (new resident code), M6 (旧氏 recorded or
    removed on its own), M7 (通称 recorded or removed)."""
    people, rng, names = month.people, month.rng, month.names
    c = people.columns
    ids = month.choose("correction")
    given = draw_given_name(
        rng, c["sex"][ids], c["resident_kind"][ids], c["birth_date"][ids], c["surname"][ids], names
    )
    people.set(ids, given_name=given)
    out.main.append(month.rows(ids, "M3", month.dates(len(ids))))

    ids = month.choose("my_number_change")
    people.set(ids, my_number=month.issuer.issue("my_number", len(ids)))
    out.main.append(month.rows(ids, "M4", month.dates(len(ids))))

    ids = month.choose("resident_code_change")
    previous = c["resident_code"][ids]
    people.set(ids, resident_code=month.issuer.issue("resident_code", len(ids)))
    out.main.append(month.rows(ids, "M5", month.dates(len(ids)), previous_resident_code=previous))

    ids = month.choose("former_surname")
    recorded = c["former_surname"][ids] >= 0
    new = draw_other_surname(rng, c["surname"][ids], names)
    people.set(ids, former_surname=np.where(recorded, -1, new))
    out.main.append(month.rows(ids, "M6", month.dates(len(ids))))

    ids = month.choose("alias")
    had = c["alias"][ids] >= 0
    new = (rng.random(len(ids)) * len(names.alias)).astype(np.int16)
    people.set(ids, alias=np.where(had, -1, new))
    out.main.append(month.rows(ids, "M7", month.dates(len(ids))))


def _entries(month: Month, out: MonthRows) -> None:
    """A3 from abroad (persons who left by D2 coming back, and new persons, mostly foreign) and
    A4 of persons removed ex officio (registered again in their prefecture)."""
    people, rng, geo = month.people, month.rng, month.geo
    total = month.volume("abroad_in")
    back = month.removed(ABROAD, max(1, round(total * fig.ABROAD_IN_RETURNING)))
    month.move(back, pick_municipality(geo, _pick_prefecture(rng, geo, len(back)), rng))
    people.set(back, state=REGISTERED)
    out.main.append(month.rows(back, "A3", month.dates(len(back))))

    found = month.removed(REMOVED_EX_OFFICIO, month.volume("ex_officio_entry"))
    prefecture = geo.prefecture[people.columns["municipality"][found]]
    month.move(found, pick_municipality(geo, prefecture, rng))
    people.set(found, state=REGISTERED)
    out.main.append(month.rows(found, "A4", month.dates(len(found))))

    out.main.append(_arrivals(month, max(1, total - len(back))))


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
    record = draw_persons(rng, birth, sex, kind, municipality, month.first_day, month.names, geo)
    ids = people.add(n)
    people.set(ids, **record, state=REGISTERED)
    people.set(
        ids,
        resident_code=month.issuer.issue("resident_code", n),
        my_number=month.issuer.issue("my_number", n),
    )
    return month.rows(ids, "A3", date)


def _cancellations(month: Month, main: RowBatch, out: MonthRows) -> list[RowBatch]:
    """X1 cancelling this month's M1 or M2 (one without a follow-up) of a few persons: the
    record reverts to what it was before, and the X1 row carries that record."""
    rng = month.rng
    rows = RowBatch.concat([r for r, _ in out.cancellable])
    before = {f: np.concatenate([b[f] for _, b in out.cancellable]) for f in out.cancellable[0][1]}
    k = min(len(rows), month.volume("cancellation"))
    if not k:
        return []
    pick = np.sort(rng.choice(len(rows), k, replace=False))
    ids = rows["person"][pick]
    month.people.set(ids, **{f: v[pick] for f, v in before.items()})
    order = np.argsort(main["person"], kind="stable")
    target = order[np.searchsorted(main["person"], ids, sorter=order)]
    cancelled = main["change_date"][target].astype(np.int64)
    date = (cancelled + rng.integers(0, month.last_day - cancelled + 1)).astype(np.int32)
    notified = np.maximum(month.notified(date), main["notified_at"][target] + 3_600_000_000)
    return [month.rows(ids, "X1", date, notified, phase=1, target=target)]


def _other_municipality(month: Month, current: np.ndarray) -> np.ndarray:
    """A municipality other than `current`: in the same prefecture for the reference's share of
    moves (2,684,497 of 5,207,746 in 2024), else in another prefecture, by population."""
    geo, rng = month.geo, month.rng
    pref = geo.prefecture[current].astype(np.int64)
    drawn = _pick_prefecture(rng, geo, len(current))
    clash = np.flatnonzero(drawn == pref)
    drawn[clash] = (drawn[clash] + 1 + rng.integers(0, 46, len(clash))) % 47
    stay = rng.random(len(current)) < fig.INTRA_PREFECTURE_MOVES
    target = np.where(stay, pref, drawn)
    new = pick_municipality(geo, target, rng)
    for _ in range(8):  # redraw the few that landed on the municipality they leave
        same = np.flatnonzero(new == current)
        if not len(same):
            return new
        new[same] = pick_municipality(geo, target[same], rng)
    same = np.flatnonzero(new == current)  # still: the next municipality of the prefecture
    lo, hi = geo.first[target[same]], geo.first[target[same] + 1]
    new[same] = lo + (new[same] - lo + 1) % (hi - lo)
    return new


def _pick_prefecture(rng: np.random.Generator, geo: Geography, n: int) -> np.ndarray:
    """Prefectures drawn by their 2020 census share."""
    p = np.searchsorted(np.cumsum(geo.prefecture_share), rng.random(n), side="right")
    return np.minimum(p, 46).astype(np.int64)

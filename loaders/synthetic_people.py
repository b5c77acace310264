"""Per-person state of the synthetic population as compact NumPy columns, and the draws that fill it.

A person is an index into these arrays; nothing holds a Python object per person. At 125 M persons
the state takes about 40 bytes each (5 GB). Text never lives here: names, towns and house numbers
are small integers into the tables of `synthetic_names` and `synthetic_places`.
"""

from __future__ import annotations

import numpy as np

from loaders import synthetic_figures as fig
from loaders.synthetic_names import BUCKETS, NameTables, draw, inverse_cdf
from loaders.synthetic_places import URBAN, Geography

# Internal states (SPEC §1 status: 1 registered, 2 moved out, 9 removed). Removed persons keep
# why they were removed, because a death (D3) admits nothing but X1 and a D4 is undone by an A4.
REGISTERED, MOVING_OUT, DEAD, REMOVED_EX_OFFICIO, ABROAD = 1, 2, 3, 4, 9

FIELDS: dict[str, type] = {
    "resident_code": np.int64,
    "my_number": np.int64,
    "birth_date": np.int32,  # days since 1970-01-01
    "sex": np.int8,  # 1 male, 2 female
    "resident_kind": np.int8,  # 1 Japanese, 2 foreign
    "municipality": np.int16,  # index into Geography
    "surname": np.int16,  # index into NameTables.surname
    "given_name": np.int16,
    "former_surname": np.int16,  # -1: none
    "alias": np.int16,  # -1: none
    "town": np.int16,  # index into Geography.town_list (the town slot of a municipality)
    "block": np.int16,  # chome * 128 + banchi (chome 0: rural 番地 address)
    "go": np.int8,  # 0: none
    "protected": np.bool_,
    "state": np.int8,
}
SNAPSHOT = tuple(f for f in FIELDS if f != "state")  # what a notification row carries


class People:
    """Column arrays with spare capacity; `count` persons exist, ids 0..count-1."""

    def __init__(self, capacity: int) -> None:
        self.count = 0
        self.columns: dict[str, np.ndarray] = {
            f: np.zeros(capacity, dtype=t) for f, t in FIELDS.items()
        }

    def __getitem__(self, field: str) -> np.ndarray:
        return self.columns[field][: self.count]

    def add(self, n: int) -> np.ndarray:
        """Ids of `n` new persons (growing the arrays when capacity runs out)."""
        capacity = len(self.columns["state"])
        if self.count + n > capacity:
            grown = max(self.count + n, capacity + capacity // 8 + 1024)
            for f, a in self.columns.items():
                bigger = np.zeros(grown, dtype=a.dtype)
                bigger[: self.count] = a[: self.count]
                self.columns[f] = bigger
        ids = np.arange(self.count, self.count + n, dtype=np.int64)
        self.count += n
        return ids

    def set(self, ids: np.ndarray | slice, **values: np.ndarray | int) -> None:
        for f, v in values.items():
            self.columns[f][ids] = v

    def snapshot(self, ids: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The record columns of these persons now (copies for id arrays, views for slices)."""
        return {f: self.columns[f][ids] for f in SNAPSHOT}


def draw_age_sex(
    rng: np.random.Generator, n: int, table: tuple[np.ndarray, ...], day: int
) -> tuple[np.ndarray, np.ndarray]:
    """Birth dates (before `day`) and sexes from an age table of `initial_age_table`'s shape."""
    low, width, male, female = table
    weights = np.concatenate([male, female])
    cat = draw(inverse_cdf(np.cumsum(weights) / weights.sum()), rng.random(n)).astype(np.int64)
    sex = np.where(cat < len(male), 1, 2).astype(np.int8)
    band = cat % len(male)
    w = width[band]
    years = low[band] + rng.random(n) * w
    tail = np.flatnonzero(w < 0)  # the oldest band: an exponential tail of mean -w years
    years[tail] = low[band[tail]] + np.minimum(rng.exponential(-w[tail]), 20.0)
    birth = day - 1 - (years * fig.DAYS_PER_YEAR).astype(np.int64)
    return birth.astype(np.int32), sex


def draw_kind(rng: np.random.Generator, birth: np.ndarray, day: int, p: np.ndarray) -> np.ndarray:
    """Resident kind (1 Japanese, 2 foreign) with the age-dependent foreign probability `p`."""
    band = fig.age_band(birth, day)
    return np.where(rng.random(len(birth)) < p[band], 2, 1).astype(np.int8)


def draw_surname(rng: np.random.Generator, kind: np.ndarray, names: NameTables) -> np.ndarray:
    """Japanese surnames by a Zipf-like frequency; foreign ones by origin group, then uniformly."""
    u = rng.random(len(kind))
    out = draw(names.surname_table, u)
    foreign = np.flatnonzero(kind == 2)
    group = np.searchsorted(np.cumsum(names.group_share), u[foreign], side="right")
    group = np.minimum(group, len(names.group_share) - 1)
    bounds = np.array(names.group_surnames)
    start, size = bounds[group, 0], bounds[group, 1] - bounds[group, 0]
    out[foreign] = start + (rng.random(len(foreign)) * size).astype(np.int64)
    return out.astype(np.int16)


def _era(birth: np.ndarray) -> np.ndarray:
    """0: born before 1960, 1: 1960–1989, 2: 1990 on (given names follow fashions)."""
    return (birth >= -3652).astype(np.int64) + (birth >= 7305)  # 1960-01-01, 1990-01-01


def draw_given_name(
    rng: np.random.Generator,
    sex: np.ndarray,
    kind: np.ndarray,
    birth: np.ndarray,
    surname: np.ndarray,
    names: NameTables,
) -> np.ndarray:
    """Given names by sex and birth era (Japanese) or by sex and the surname's origin (foreign)."""
    s = sex.astype(np.int64) - 1
    group = names.surname_group[surname].astype(np.int64)
    category = np.where(kind == 1, s * 3 + _era(birth), 6 + group * 2 + s)
    bucket = (rng.random(len(sex)) * BUCKETS).astype(np.int64)
    return names.given_table[category, bucket]


def draw_other_surname(
    rng: np.random.Generator, current: np.ndarray, names: NameTables
) -> np.ndarray:
    """A Japanese surname different from `current` (for marriages and 旧氏)."""
    n = len(current)
    new = draw(names.surname_table, rng.random(n))
    same = new == current
    new[same] = (new[same] + 1) % names.japanese_surnames
    return new.astype(np.int16)


def draw_optional(rng: np.random.Generator, eligible_share: np.ndarray, choices: int) -> np.ndarray:
    """-1 or a uniform index below `choices`, the index with per-row probability `eligible_share`."""
    n = len(eligible_share)
    pick = (rng.random(n) * choices).astype(np.int16)
    return np.where(rng.random(n) < eligible_share, pick, -1).astype(np.int16)


def draw_address(
    geo: Geography, municipality: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A town slot and house number in each municipality (urban 三丁目12番5号, rural 45番地)."""
    n = len(municipality)
    m = municipality.astype(np.int64)
    town = geo.town_start[m] + (rng.random(n) * geo.town_count[m]).astype(np.int64)
    urban = geo.style[m] == URBAN
    chome = np.where(urban, rng.integers(1, 7, n), 0)
    banchi = np.where(urban, rng.integers(1, 41, n), rng.integers(1, 121, n))
    go = np.where(urban, rng.integers(1, 31, n), 0)
    return {
        "town": town.astype(np.int16),
        "block": (chome * 128 + banchi).astype(np.int16),
        "go": go.astype(np.int8),
    }


def draw_persons(
    rng: np.random.Generator,
    birth: np.ndarray,
    sex: np.ndarray,
    kind: np.ndarray,
    municipality: np.ndarray,
    day: int,
    names: NameTables,
    geo: Geography,
) -> dict[str, np.ndarray]:
    """Every record field of new persons but their codes, given who they are and where they live."""
    n = len(birth)
    surname = draw_surname(rng, kind, names)
    band = fig.age_band(birth, day)
    share = np.where(sex == 1, fig.FORMER_SURNAME_SHARE[0], fig.FORMER_SURNAME_SHARE[1])
    share = np.where((kind == 1) & (band >= 5), share, 0.0)
    former = draw_optional(rng, share, names.japanese_surnames)
    former = np.where(former == surname, (former + 1) % names.japanese_surnames, former)
    former = np.where(former < 0, -1, former).astype(np.int16)
    alias = draw_optional(rng, np.where(kind == 2, fig.ALIAS_SHARE, 0.0), len(names.alias))
    return {
        "birth_date": birth,
        "sex": sex,
        "resident_kind": kind,
        "municipality": municipality.astype(np.int16),
        "surname": surname,
        "given_name": draw_given_name(rng, sex, kind, birth, surname, names),
        "former_surname": former,
        "alias": alias,
        **draw_address(geo, municipality, rng),
        "protected": rng.random(n) < fig.PROTECTED_SHARE,
    }

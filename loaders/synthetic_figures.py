"""Public figures and assumed shapes that drive the synthetic population (reference/population.md).

Every number taken from the reference names its source in a comment; every number that is an
assumption says so. Ages are grouped in 21 bands of 5 years (0–4 … 95–99, 100+).
"""

from __future__ import annotations

import numpy as np

DAYS_PER_YEAR = 365.2425
BANDS = 21  # 0-4, 5-9, ..., 95-99, 100+
CENSUS_DAY = np.datetime64("2020-10-01")

# fmt: off
# 2020 census, age × sex in 5-year bands (0-4 … 80-84, 85+), via e-Stat (reference table 3c).
CENSUS_MALE = [2_311_189, 2_606_651, 2_742_131, 2_880_029, 3_017_869, 3_074_087, 3_297_031,
               3_696_855, 4_189_446, 4_862_990, 4_277_003, 3_865_303, 3_592_903, 3_910_060,
               4_249_286, 3_092_860, 2_196_093, 1_896_652]
CENSUS_FEMALE = [2_204_893, 2_482_442, 2_608_386, 2_737_411, 2_913_437, 2_957_877, 3_187_563,
                 3_614_712, 4_101_631, 4_787_303, 4_262_848, 3_902_179, 3_704_287, 4_165_208,
                 4_762_509, 3_838_068, 3_100_635, 4_124_434]
# fmt: on
# Births since the census: 2024 vital statistics count 686,173 births against ~903k a year behind
# the census 0-4 band, so the cohorts born after the census are ~0.8 of that band's density.
BIRTHS_SINCE_CENSUS_FACTOR = 0.8
OLDEST_TAIL_YEARS = 4.0  # assumption: ages past 85 at census decay with this mean (years)

# 住基 2024-01-01: 3,323,374 foreign residents of 124,885,175 (reference table 3a): 2.7%.
FOREIGN_SHARE = 3_323_374 / 124_885_175
# fmt: off
# Assumption: relative likelihood of being a foreign resident by age band (working ages dominate).
FOREIGN_BY_BAND = np.array([0.6, 0.5, 0.5, 1.0, 3.5, 3.5, 2.6, 1.9, 1.4, 1.2, 1.0, 0.9, 0.7, 0.5,
                            0.35, 0.25, 0.2, 0.15, 0.1, 0.1, 0.1])
# fmt: on
PROTECTED_SHARE = 0.0005  # brief: ~0.05% under DV等支援措置
FORMER_SURNAME_SHARE = (0.001, 0.01)  # assumption: 旧氏 registered, (men, women) aged 25+
ALIAS_SHARE = 0.10  # assumption: foreign residents with a registered 通称

REFERENCE_POPULATION = 124_000_000  # the yearly volumes below are for a population this size

# Yearly volumes (reference table 3d, 2024 unless noted). Assumed volumes say so.
YEARLY = {
    "birth": 686_173,  # vital statistics 2024 (確定)
    "death": 1_605_378,  # vital statistics 2024 (確定)
    "move_out": 5_207_746,  # 住民基本台帳人口移動報告 2024: inter-municipality moves (D1 → A2)
    "move_within": 4_500_000,  # assumption: no public 転居 figure; the reference suggests 4–5 M
    "marriage": 485_092,  # vital statistics 2024: one spouse changes surname
    "divorce": 185_904 * 0.5,  # vital statistics 2024; assumption: half change their surname
    "abroad_out": 371_615,  # 住民基本台帳人口移動報告 2024: to abroad
    "abroad_in": 735_883,  # 住民基本台帳人口移動報告 2024: from abroad
    "correction": 60_000,  # assumption (M3)
    "my_number_change": 10_000,  # assumption (M4)
    "resident_code_change": 10_000,  # assumption (M5)
    "former_surname": 30_000,  # assumption (M6 on its own: 旧氏 registered or removed)
    "alias": 20_000,  # assumption (M7)
    "ex_officio_removal": 80_000,  # assumption (D4)
    "ex_officio_entry": 20_000,  # assumption (A4 of a person removed ex officio)
    "cancellation": 20_000,  # assumption (X1)
}
# 2024: 2,684,497 of the 5,207,746 inter-municipality moves stayed within the prefecture.
INTRA_PREFECTURE_MOVES = 2_684_497 / 5_207_746
MARRIAGE_FORMER_SURNAME = 0.10  # assumption: share of marriages that also record 旧氏 (M6)
ABROAD_IN_RETURNING = 0.25  # assumption: share of entries from abroad that are returning persons
ABROAD_IN_NEW_FOREIGN = 0.85  # assumption: share of new persons from abroad who are foreign
WIFE_TAKES_NAME = 0.95  # assumption: in ~95% of marriages the wife takes the husband's surname


def _bands(values: dict[tuple[int, int], float], default: float = 0.0) -> np.ndarray:
    """A 21-band array from {(first band, last band): value}."""
    out = np.full(BANDS, default)
    for (lo, hi), v in values.items():
        out[lo : hi + 1] = v
    return out


# Assumed age profiles (relative, per person of the band): the reference gives totals only, plus
# the peak of inter-prefecture movers at 20–34 (s-housing, 2024), which the move profile follows.
# fmt: off
MORTALITY = np.array([0.4, 0.07, 0.08, 0.25, 0.4, 0.45, 0.5, 0.7, 1.0, 1.6, 2.6, 4.0, 6.3, 10.0,
                      15.0, 25.0, 45.0, 85.0, 160.0, 290.0, 450.0])  # per 1,000, life-table shape
MOVE = np.array([3.0, 2.0, 1.5, 3.0, 10.0, 9.5, 6.5, 4.5, 3.3, 2.7, 2.3, 2.0, 1.8, 1.5, 1.3, 1.3,
                 1.4, 1.5, 1.5, 1.5, 1.5])
# fmt: on
MOVE_WITHIN = np.sqrt(MOVE)  # assumption: 転居 is less concentrated on young adults
MOTHER = _bands({(4, 4): 0.3, (5, 5): 1.0, (6, 6): 1.1, (7, 7): 0.6, (8, 8): 0.12})
MARRIAGE = _bands({(4, 4): 0.5, (5, 5): 1.0, (6, 6): 0.7, (7, 7): 0.35, (8, 8): 0.2, (9, 9): 0.1})
DIVORCE = _bands({(6, 6): 0.7, (7, 7): 1.0, (8, 8): 1.0, (9, 9): 0.8, (10, 11): 0.5})
ABROAD_OUT = _bands({(0, 3): 0.3, (4, 7): 1.0, (8, 12): 0.6, (13, 20): 0.2})
ADULT = _bands({(4, 12): 1.0, (13, 20): 0.5})
ANY = np.ones(BANDS)
MARRIED_AGE = _bands({(5, 12): 1.0, (13, 16): 0.5})
# Assumption: age bands of new foreign residents arriving from abroad (students, workers).
ARRIVAL_BANDS = _bands(
    {
        (0, 2): 0.02,
        (3, 3): 0.1,
        (4, 4): 0.35,
        (5, 5): 0.25,
        (6, 6): 0.12,
        (7, 7): 0.07,
        (8, 9): 0.04,
        (10, 12): 0.02,
    }
)
# Assumption: foreign residents move house and emigrate far more often than Japanese residents
# (foreign nationals were 334,659 of 2,523,249 inter-prefecture movers in 2024, 13% of movers
# for 2.7% of the population).
FOREIGN_MOVE_FACTOR = 3.0
FOREIGN_ABROAD_OUT_FACTOR = 40.0
MALE_MORTALITY_FACTOR = 1.4  # assumption: men die younger (applies from 40 on)


def initial_age_table(
    start: np.datetime64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Age categories of the initial population on `start`: (low age, width, male, female counts).

    The 2020 census bands are shifted by the years since the census (reference: "shift the bands
    by ~5 years" for 2025), and a band of the cohorts born since the census is added in front.
    """
    shift = max(0.0, float((start - CENSUS_DAY) / np.timedelta64(1, "D")) / DAYS_PER_YEAR)
    male = np.array(CENSUS_MALE, dtype=np.float64)
    female = np.array(CENSUS_FEMALE, dtype=np.float64)
    low = np.arange(18) * 5.0 + shift
    width = np.full(18, 5.0)
    width[-1] = -OLDEST_TAIL_YEARS  # negative width marks the exponential tail
    # Deaths since the census thin each cohort (MORTALITY at its age now, per 1,000 a year).
    now = np.minimum((low + 2.5) // 5, BANDS - 1).astype(np.int64)
    survival = np.exp(-MORTALITY[now] / 1000 * shift)
    male, female = male * survival, female * survival
    if shift > 0:
        young = shift / 5.0 * BIRTHS_SINCE_CENSUS_FACTOR
        low = np.concatenate([[0.0], low])
        width = np.concatenate([[shift], width])
        male = np.concatenate([[male[0] * young], male])
        female = np.concatenate([[female[0] * young], female])
    return low, width, male, female


def band_population(table: tuple[np.ndarray, ...]) -> np.ndarray:
    """Persons per 5-year band (by the middle age of each category) of an initial age table."""
    low, width, male, female = table
    middle = low + np.abs(width) / 2
    band = np.minimum(middle // 5, BANDS - 1).astype(np.int64)
    return np.bincount(band, weights=male + female, minlength=BANDS)


def age_band(birth_date: np.ndarray, day: int) -> np.ndarray:
    """5-year band (0..20) of the age on `day` (days since 1970-01-01), from int32 birth dates."""
    years = (day - birth_date.astype(np.int64)) / DAYS_PER_YEAR
    return np.clip(years // 5, 0, BANDS - 1).astype(np.int64)


def foreign_probability(band_population: np.ndarray) -> np.ndarray:
    """P(foreign | band), scaled so the population-weighted mean is FOREIGN_SHARE."""
    mean = float((band_population * FOREIGN_BY_BAND).sum() / band_population.sum())
    return np.minimum(1.0, FOREIGN_SHARE * FOREIGN_BY_BAND / mean)

"""The synthetic geography: 47 prefectures, ~1,700 municipalities with valid codes, towns, addresses.

The geography does not depend on the run's seed (it is drawn from a fixed stream), so two runs
with different seeds share municipality codes and names; persons are what the seed changes.
Municipality codes follow the layout of 全国地方公共団体コード (SPEC §2.3): `PP CCC D`, with wards of
a designated city at 1xx (Tokyo's 23 special wards at 101–123, as in reality), cities from 201,
towns and villages from 301; the check digit comes from `engine.codes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.codes import with_check_digit

# fmt: off
# 2020 census population by prefecture (reference/population.md, table 3b).
PREFECTURES: list[tuple[str, int]] = [
    ("北海道", 5_224_614), ("青森県", 1_237_984), ("岩手県", 1_210_534), ("宮城県", 2_301_996),
    ("秋田県", 959_502), ("山形県", 1_068_027), ("福島県", 1_833_152), ("茨城県", 2_867_009),
    ("栃木県", 1_933_146), ("群馬県", 1_939_110), ("埼玉県", 7_344_765), ("千葉県", 6_284_480),
    ("東京都", 14_047_594), ("神奈川県", 9_237_337), ("新潟県", 2_201_272), ("富山県", 1_034_814),
    ("石川県", 1_132_526), ("福井県", 766_863), ("山梨県", 809_974), ("長野県", 2_048_011),
    ("岐阜県", 1_978_742), ("静岡県", 3_633_202), ("愛知県", 7_542_415), ("三重県", 1_770_254),
    ("滋賀県", 1_413_610), ("京都府", 2_578_087), ("大阪府", 8_837_685), ("兵庫県", 5_465_002),
    ("奈良県", 1_324_473), ("和歌山県", 922_584), ("鳥取県", 553_407), ("島根県", 671_126),
    ("岡山県", 1_888_432), ("広島県", 2_799_702), ("山口県", 1_342_059), ("徳島県", 719_559),
    ("香川県", 950_244), ("愛媛県", 1_334_841), ("高知県", 691_527), ("福岡県", 5_135_214),
    ("佐賀県", 811_442), ("長崎県", 1_312_317), ("熊本県", 1_738_301), ("大分県", 1_123_852),
    ("宮崎県", 1_069_576), ("鹿児島県", 1_588_256), ("沖縄県", 1_467_480),
]

# One designated city (政令指定都市) per prefecture that has one, with its number of wards.
DESIGNATED_CITIES: dict[int, tuple[str, int]] = {
    1: ("札幌市", 10), 4: ("仙台市", 5), 11: ("さいたま市", 10), 12: ("千葉市", 6),
    14: ("横浜市", 18), 15: ("新潟市", 8), 22: ("静岡市", 3), 23: ("名古屋市", 16),
    26: ("京都市", 11), 27: ("大阪市", 24), 28: ("神戸市", 9), 33: ("岡山市", 4),
    34: ("広島市", 8), 40: ("福岡市", 7), 43: ("熊本市", 5),
}
TOKYO_WARDS = [
    "千代田区", "中央区", "港区", "新宿区", "文京区", "台東区", "墨田区", "江東区",
    "品川区", "目黒区", "大田区", "世田谷区", "渋谷区", "中野区", "杉並区",
    "豊島区", "北区", "荒川区", "板橋区", "練馬区", "足立区", "葛飾区", "江戸川区",
]
WARD_NAMES = [
    "中央区", "北区", "東区", "西区", "南区", "中区", "港区", "緑区", "青葉区",
    "若葉区", "泉区", "旭区", "栄区", "清田区", "手稲区", "白石区", "豊平区",
    "天白区", "昭和区", "瑞穂区", "熱田区", "守山区", "名東区", "千種区",
]
_HEAD = list("大小高上下中新東西南北長松竹梅桜山川石岩金白青赤富福吉平豊三八千美若朝日星花鹿鶴亀神宮本古")
_TAIL = list("田川山野原沢島浜崎岡森井津谷瀬尾坂里浦江台丘木見倉橋部根") + ["ヶ丘", "ノ宮"]
TOWN_NAMES = [
    "本町", "栄町", "中央", "緑町", "旭町", "桜町", "東町", "西町", "南町",
    "北町", "新町", "元町", "幸町", "寿町", "宮町", "大手町", "錦町", "若葉",
    "青葉台", "桜丘", "松が丘", "富士見", "日の出町", "曙町", "朝日町", "昭和町",
    "大和町", "八幡町", "天神", "港町", "浜町", "川端町", "田町", "駅前",
    "城東", "城西", "城南", "城北", "平和町", "泉町", "清水町", "花園",
    "弥生町", "春日町", "住吉町", "稲荷町", "日吉町", "柳町", "松原", "梅が丘",
    "藤が丘", "桜台", "緑が丘", "光が丘", "みどり野", "つつじが丘", "美しが丘",
    "本郷", "上町", "下町", "仲町", "横町", "新田", "大通", "山手", "川原町",
    "立石", "石原", "野田", "宮前", "千代田", "東雲", "白銀", "鶴見", "亀井",
    "高砂", "常盤町", "松葉町", "竹町", "梅町", "藤見", "萩原", "菊川", "芝浦",
    "高台", "丘陵", "明神", "御幸町", "福住", "豊岡", "吉野町", "岩崎", "金山",
    "白山", "青山", "赤坂", "中島",
]
# fmt: on
KANJI_DIGITS = "〇一二三四五六七八九"

URBAN, RURAL = 0, 1  # address style: 丁目・番・号 in wards and cities, 番地 in towns and villages


@dataclass(frozen=True)
class Geography:
    """Municipalities (index order = prefecture order, then code order) and their towns."""

    prefecture_name: list[str]  # 47, index = prefecture code - 1
    prefecture_share: np.ndarray  # 2020 census share per prefecture
    code: np.ndarray  # int64 municipality code per municipality, check digit included
    prefecture: np.ndarray  # int8 prefecture index 0..46 per municipality
    name: list[str]  # e.g. 札幌市中央区, 千代田区, 桜川市, 大野町
    weight_in_prefecture: np.ndarray  # population share of the municipality within its prefecture
    cumulative: np.ndarray  # prefecture index + cumulative share within it, in (p, p + 1]
    style: np.ndarray  # int8 URBAN or RURAL
    first: np.ndarray  # int64 first municipality index of each prefecture (length 48)
    town_start: np.ndarray  # int64 per municipality: its towns are town_list[start:start+count]
    town_count: np.ndarray
    town_list: np.ndarray  # int16 indices into TOWN_NAMES

    def address_heads(self) -> list[str]:
        """Per town slot: prefecture + municipality + town name, the head of every address."""
        heads = []
        for m, (p, name) in enumerate(zip(self.prefecture, self.name, strict=True)):
            start, count = int(self.town_start[m]), int(self.town_count[m])
            for t in self.town_list[start : start + count]:
                heads.append(self.prefecture_name[p] + name + TOWN_NAMES[t])
        return heads

    def code_text(self) -> list[str]:
        return [f"{int(c):06d}" for c in self.code]


def _municipality_counts(shares: np.ndarray, total: int = 1_700, minimum: int = 12) -> np.ndarray:
    """Municipalities per prefecture in proportion to population (brief: ~1,700 in all)."""
    return np.maximum(minimum, np.round(shares * total)).astype(np.int64)


def _place_names(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """`count` distinct two- or three-character place names not in `taken`."""
    names: list[str] = []
    while len(names) < count:
        head = _HEAD[rng.integers(len(_HEAD))]
        tail = _TAIL[rng.integers(len(_TAIL))]
        mid = _HEAD[rng.integers(len(_HEAD))] if rng.random() < 0.15 else ""
        name = head + mid + tail
        if name not in taken and head != tail:
            taken.add(name)
            names.append(name)
    return names


def _prefecture_municipalities(
    rng: np.random.Generator, pref: int, count: int
) -> tuple[list[int], list[str], list[float], list[int]]:
    """Codes (5-digit bodies), names, weights and styles of one prefecture's municipalities."""
    bodies: list[int] = []
    names: list[str] = []
    weights: list[float] = []
    styles: list[int] = []
    if pref == 13:
        wards = [(101 + i, n) for i, n in enumerate(TOKYO_WARDS)]
        ward_share = 0.70  # the 23 wards hold about 70% of Tokyo
    elif pref in DESIGNATED_CITIES:
        city, n_wards = DESIGNATED_CITIES[pref]
        wards = [(101 + i, city + WARD_NAMES[i]) for i in range(n_wards)]
        ward_share = 0.35
    else:
        wards, ward_share = [], 0.0
    rest = count - len(wards)
    n_cities = min(99, max(4, int(rest * 0.45)))
    n_towns = rest - n_cities
    ward_w = rng.lognormal(0.0, 0.3, len(wards))
    city_w = rng.lognormal(0.0, 0.8, n_cities)
    town_w = rng.lognormal(0.0, 0.8, n_towns)
    taken = {n for _, n in wards}
    city_names = _place_names(rng, n_cities, taken)
    town_names = _place_names(rng, n_towns, taken)
    for (ccc, name), w in zip(wards, ward_w, strict=True):
        bodies.append(pref * 1000 + ccc)
        names.append(name)
        weights.append(ward_share * w / ward_w.sum())
        styles.append(URBAN)
    for i, (name, w) in enumerate(zip(city_names, city_w, strict=True)):
        bodies.append(pref * 1000 + 201 + i)
        names.append(name + "市")
        weights.append((1 - ward_share) * 0.78 * w / city_w.sum())
        styles.append(URBAN)
    for i, (name, w) in enumerate(zip(town_names, town_w, strict=True)):
        bodies.append(pref * 1000 + 301 + i)
        names.append(name + ("村" if i % 5 == 4 else "町"))
        weights.append((1 - ward_share) * 0.22 * w / town_w.sum())
        styles.append(RURAL)
    return bodies, names, weights, styles


def build_geography() -> Geography:
    """The fixed geography every run uses (deterministic, independent of the run's seed)."""
    rng = np.random.default_rng(20_201_001)
    pops = np.array([p for _, p in PREFECTURES], dtype=np.float64)
    shares = pops / pops.sum()
    counts = _municipality_counts(shares)
    bodies, names, weights, styles, prefs = [], [], [], [], []
    for pi, count in enumerate(counts):
        b, n, w, s = _prefecture_municipalities(rng, pi + 1, int(count))
        bodies += b
        names += n
        weights += w
        styles += s
        prefs += [pi] * len(b)
    weight = np.array(weights)
    prefecture = np.array(prefs, dtype=np.int8)
    first = np.searchsorted(prefecture, np.arange(48)).astype(np.int64)
    for pi in range(47):  # renormalise: the shares of a prefecture sum to 1
        weight[first[pi] : first[pi + 1]] /= weight[first[pi] : first[pi + 1]].sum()
    cumulative = np.empty(len(weight))
    for pi in range(47):
        lo, hi = first[pi], first[pi + 1]
        cumulative[lo:hi] = pi + np.cumsum(weight[lo:hi])
        cumulative[hi - 1] = pi + 1.0
    town_count = np.clip(np.round(6 + 30 * np.sqrt(weight)), 4, 40).astype(np.int64)
    town_start = np.concatenate([[0], np.cumsum(town_count)[:-1]]).astype(np.int64)
    town_list = np.concatenate(
        [rng.choice(len(TOWN_NAMES), size=int(k), replace=False) for k in town_count]
    ).astype(np.int16)
    return Geography(
        prefecture_name=[n for n, _ in PREFECTURES],
        prefecture_share=shares,
        code=with_check_digit(np.array(bodies, dtype=np.int64), "municipality_code"),
        prefecture=prefecture,
        name=names,
        weight_in_prefecture=weight,
        cumulative=cumulative,
        style=np.array(styles, dtype=np.int8),
        first=first,
        town_start=town_start,
        town_count=town_count,
        town_list=town_list,
    )


def pick_municipality(
    geo: Geography, prefecture: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A municipality of each given prefecture (index 0..46), weighted by population."""
    p = prefecture.astype(np.int64)
    idx = np.searchsorted(geo.cumulative, rng.random(len(p)) + p, side="right")
    return np.clip(idx, geo.first[p], geo.first[p + 1] - 1).astype(np.int16)

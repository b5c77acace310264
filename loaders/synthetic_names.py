"""Name tables of the synthetic population: surnames, given names, aliases, with kana readings.

People hold int16 indices into these tables, never strings; the files render them with an Arrow
`take`. Japanese and foreign entries share one surname table and one given-name table (foreign
entries after the Japanese ones), so one index column serves both kinds. Readings are full-width
katakana (SPEC §1); foreign names are in the alphabet with katakana readings that separate the
parts of a name with the middle dot ・. Frequencies are rough shapes, not statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Common surnames, roughly in order of frequency (the order drives a Zipf-like weight below).
_SURNAMES = """
佐藤 サトウ|鈴木 スズキ|高橋 タカハシ|田中 タナカ|伊藤 イトウ|渡辺 ワタナベ|山本 ヤマモト|中村 ナカムラ
小林 コバヤシ|加藤 カトウ|吉田 ヨシダ|山田 ヤマダ|佐々木 ササキ|山口 ヤマグチ|松本 マツモト|井上 イノウエ
木村 キムラ|林 ハヤシ|斎藤 サイトウ|清水 シミズ|山崎 ヤマザキ|森 モリ|池田 イケダ|橋本 ハシモト
阿部 アベ|石川 イシカワ|山下 ヤマシタ|中島 ナカジマ|石井 イシイ|小川 オガワ|前田 マエダ|岡田 オカダ
長谷川 ハセガワ|藤田 フジタ|後藤 ゴトウ|近藤 コンドウ|村上 ムラカミ|遠藤 エンドウ|青木 アオキ|坂本 サカモト
斉藤 サイトウ|福田 フクダ|太田 オオタ|西村 ニシムラ|藤井 フジイ|金子 カネコ|岡本 オカモト|藤原 フジワラ
中野 ナカノ|三浦 ミウラ|原田 ハラダ|中川 ナカガワ|松田 マツダ|竹内 タケウチ|小野 オノ|田村 タムラ
中山 ナカヤマ|和田 ワダ|石田 イシダ|森田 モリタ|上田 ウエダ|原 ハラ|内田 ウチダ|柴田 シバタ
酒井 サカイ|宮崎 ミヤザキ|横山 ヨコヤマ|高木 タカギ|安藤 アンドウ|宮本 ミヤモト|大野 オオノ|小島 コジマ
谷口 タニグチ|工藤 クドウ|今井 イマイ|高田 タカダ|丸山 マルヤマ|増田 マスダ|杉山 スギヤマ|村田 ムラタ
大塚 オオツカ|小山 コヤマ|藤本 フジモト|平野 ヒラノ|新井 アライ|河野 コウノ|上野 ウエノ|野口 ノグチ
武田 タケダ|松井 マツイ|千葉 チバ|岩崎 イワサキ|菅原 スガワラ|木下 キノシタ|久保 クボ|佐野 サノ
野村 ノムラ|松尾 マツオ|市川 イチカワ|菊地 キクチ|杉本 スギモト|古川 フルカワ|大西 オオニシ|島田 シマダ
水野 ミズノ|桜井 サクライ|高野 タカノ|渡部 ワタナベ|吉川 ヨシカワ|山内 ヤマウチ|西田 ニシダ|飯田 イイダ
菊池 キクチ|西川 ニシカワ|小松 コマツ|北村 キタムラ|安田 ヤスダ|五十嵐 イガラシ|川口 カワグチ|平田 ヒラタ
関 セキ|中田 ナカタ|久保田 クボタ|服部 ハットリ|東 アズマ|岩田 イワタ|土屋 ツチヤ|川崎 カワサキ
福島 フクシマ|本田 ホンダ|辻 ツジ|樋口 ヒグチ|秋山 アキヤマ|田口 タグチ|永井 ナガイ|山中 ヤマナカ
中西 ナカニシ|吉村 ヨシムラ|川上 カワカミ|石原 イシハラ|大橋 オオハシ|松岡 マツオカ|馬場 ババ|浅野 アサノ
荒木 アラキ|大久保 オオクボ|野田 ノダ|小池 コイケ|松下 マツシタ|熊谷 クマガイ|菅野 カンノ|大川 オオカワ
松浦 マツウラ|片山 カタヤマ|星野 ホシノ|黒田 クロダ|岡崎 オカザキ|川村 カワムラ|永田 ナガタ|堀 ホリ
内藤 ナイトウ|望月 モチヅキ|小西 コニシ|田辺 タナベ|早川 ハヤカワ|平井 ヒライ|岩本 イワモト|小田 オダ
上原 ウエハラ|中井 ナカイ|宮田 ミヤタ|西山 ニシヤマ|高山 タカヤマ|菅 スガ|吉野 ヨシノ|横田 ヨコタ
荒井 アライ|大谷 オオタニ|桑原 クワバラ|宮下 ミヤシタ|尾崎 オザキ|矢野 ヤノ|大石 オオイシ|小野寺 オノデラ
須藤 スドウ|今村 イマムラ|吉岡 ヨシオカ|森本 モリモト|内山 ウチヤマ|西尾 ニシオ|川田 カワダ|堀内 ホリウチ
坂口 サカグチ|榎本 エノモト|大島 オオシマ|松村 マツムラ|新田 ニッタ|荻野 オギノ|栗原 クリハラ|野崎 ノザキ
大村 オオムラ|岡 オカ|竹田 タケダ|田島 タジマ|金田 カネダ|宇野 ウノ|石橋 イシバシ|本間 ホンマ
関口 セキグチ|北川 キタガワ|若林 ワカバヤシ|佐久間 サクマ|高井 タカイ|森下 モリシタ|小沢 オザワ|川島 カワシマ
秋元 アキモト|水谷 ミズタニ|松原 マツバラ|飯塚 イイヅカ|白石 シライシ|渡邉 ワタナベ|齋藤 サイトウ|髙橋 タカハシ
"""

# Given names with the birth eras they are common in: o = before 1960, m = 1960-89, y = 1990 on.
_MALE = """
太郎 タロウ om|一郎 イチロウ o|次郎 ジロウ o|三郎 サブロウ o|清 キヨシ o|茂 シゲル o|実 ミノル o|勇 イサム o
進 ススム o|博 ヒロシ om|隆 タカシ om|修 オサム om|明 アキラ om|豊 ユタカ om|勝 マサル o|正 タダシ o
稔 ミノル o|弘 ヒロシ o|和夫 カズオ o|正男 マサオ o|幸雄 ユキオ o|義雄 ヨシオ o|敏夫 トシオ o|光男 ミツオ o
信夫 ノブオ o|武 タケシ o|昭 アキラ o|秀夫 ヒデオ o|健一 ケンイチ m|誠 マコト m|浩 ヒロシ m|秀樹 ヒデキ m
大輔 ダイスケ m|健太 ケンタ my|拓也 タクヤ m|直樹 ナオキ m|和也 カズヤ m|達也 タツヤ m|哲也 テツヤ m|雄一 ユウイチ m
大介 ダイスケ m|亮 リョウ my|健 ケン m|剛 ツヨシ m|学 マナブ m|聡 サトシ m|智也 トモヤ m|俊介 シュンスケ m
康弘 ヤスヒロ m|正人 マサト m|裕太 ユウタ my|圭 ケイ m|博之 ヒロユキ m|浩二 コウジ m|克也 カツヤ m|和彦 カズヒコ m
英樹 ヒデキ m|雅人 マサト m|慎一 シンイチ m|孝 タカシ m|修一 シュウイチ m|淳 ジュン m|功 イサオ m|徹 トオル m
翔太 ショウタ y|翔 ショウ y|蓮 レン y|陽翔 ハルト y|湊 ミナト y|悠真 ユウマ y|大翔 ヒロト y|樹 イツキ y
蒼 アオイ y|律 リツ y|朝陽 アサヒ y|颯太 ソウタ y|悠人 ユウト y|陽太 ヨウタ y|大和 ヤマト y|結翔 ユイト y
陸 リク y|海斗 カイト y|優斗 ユウト y|拓海 タクミ y|航 ワタル y|大樹 ダイキ y|悠斗 ユウト y|匠 タクミ y
駿 シュン y|颯 ハヤテ y|智 サトル my|龍之介 リュウノスケ y|晴 ハル y|碧 アオ y|奏太 ソウタ y|陽向 ヒナタ y
蒼真 ソウマ y|湊斗 ミナト y|新 アラタ y|暖 ダン y|伊吹 イブキ y|颯真 ソウマ y|健斗 ケント y|大雅 タイガ y
"""

_FEMALE = """
花子 ハナコ o|恵子 ケイコ om|幸子 サチコ o|和子 カズコ o|洋子 ヨウコ o|節子 セツコ o|京子 キョウコ o|春子 ハルコ o
秋子 アキコ o|正子 マサコ o|信子 ノブコ o|美代子 ミヨコ o|千代 チヨ o|敏子 トシコ o|悦子 エツコ o|弘子 ヒロコ o
文子 フミコ o|静子 シズコ o|久子 ヒサコ o|和江 カズエ o|久美子 クミコ m|由美子 ユミコ m|裕子 ユウコ m|直美 ナオミ m
明美 アケミ m|智子 トモコ m|陽子 ヨウコ m|真由美 マユミ m|美穂 ミホ m|恵 メグミ m|香織 カオリ m|沙織 サオリ m
友美 トモミ m|純子 ジュンコ m|典子 ノリコ m|紀子 ノリコ m|由紀 ユキ m|亜希子 アキコ m|美紀 ミキ m|理恵 リエ m
愛子 アイコ m|由香 ユカ m|麻美 アサミ m|早紀 サキ m|里美 サトミ m|美香 ミカ m|真理子 マリコ m|加奈子 カナコ m
美奈子 ミナコ m|涼子 リョウコ m|晴美 ハルミ m|絵美 エミ m|優子 ユウコ m|愛 アイ my|彩 アヤ my|舞 マイ my
麻衣 マイ my|美咲 ミサキ my|千尋 チヒロ my|瞳 ヒトミ m|静香 シズカ m|遥 ハルカ my|奈々 ナナ my|真央 マオ y
七海 ナナミ y|結衣 ユイ y|陽菜 ヒナ y|葵 アオイ y|凛 リン y|さくら サクラ y|芽依 メイ y|結菜 ユイナ y
紬 ツムギ y|陽葵 ヒマリ y|澪 ミオ y|莉子 リコ y|美桜 ミオ y|杏 アン y|結月 ユヅキ y|心春 コハル y
花 ハナ y|咲良 サクラ y|楓 カエデ y|詩 ウタ y|琴音 コトネ y|美月 ミヅキ y|彩花 アヤカ y|彩乃 アヤノ y
梨花 リカ y|美優 ミユ y|桃子 モモコ y|千夏 チナツ y|亜美 アミ y|佳奈 カナ y|萌 モエ y|未来 ミライ y
菜摘 ナツミ y|綾香 アヤカ y|菜月 ナツキ y|夏美 ナツミ my|芽衣 メイ y|杏奈 アンナ y|日葵 ヒマリ y|結愛 ユア y
"""

# fmt: off
# Foreign residents by origin (shares are a rough assumption, not from the reference figures):
# surnames, male and female given names, male and female middle names used by some persons of the
# group, and whether the middle name comes first (Vietnamese VAN/THI) or after the first name.
_FOREIGN = {
    "CN": (0.27, ("WANG ワン|LI リ|ZHANG チャン|LIU リュウ|CHEN チェン|YANG ヤン|ZHAO チャオ|"
                 "HUANG ホアン|ZHOU チョウ|WU ウー|XU シュー|SUN スン|LIN リン|GUO グオ"),
           "WEI ウェイ|JUN ジュン|HAO ハオ|QIANG チャン|MING ミン|LEI レイ|JIAN ジエン",
           "FANG ファン|MEI メイ|XIU シウ|YAN イェン|JING ジン|LING リン|XIN シン", "", "", False),
    "VN": (0.18, ("NGUYEN グエン|TRAN チャン|LE レ|PHAM ファム|HOANG ホアン|VU ヴー|DANG ダン|"
                 "BUI ブイ|DO ドー|NGO ゴー"),
           "MINH ミン|DUC ドゥック|HUNG フン|NAM ナム|TUAN トゥアン|LONG ロン|QUANG クアン",
           "LAN ラン|HOA ホア|LINH リン|MAI マイ|HUONG フオン|THAO タオ|TRANG チャン",
           "VAN ヴァン", "THI ティ", True),
    "KR": (0.14, ("KIM キム|LEE イ|PARK パク|CHOI チェ|JUNG チョン|KANG カン|CHO チョ|YOON ユン|"
                 "JANG チャン|LIM イム"),
           "MINJUN ミンジュン|JIHOON ジフン|SEOJUN ソジュン|HYUNWOO ヒョヌ|DONGHYUN ドンヒョン",
           "JIYEON ジヨン|SEOYEON ソヨン|MINJI ミンジ|SUJIN スジン|HAEUN ハウン", "", "", False),
    "PH": (0.10, ("SANTOS サントス|REYES レイエス|CRUZ クルス|BAUTISTA バウティスタ|"
                 "GARCIA ガルシア|MENDOZA メンドーサ|DELA CRUZ デラ・クルス"),
           "JOSE ホセ|MARK マーク|JOHN ジョン|PAOLO パオロ|RAMON ラモン",
           "MARIA マリア|ROSE ローズ|GRACE グレース|JOY ジョイ|CRISTINA クリスティナ",
           "ANTONIO アントニオ", "MAE メイ|ANN アン", False),
    "BR": (0.07, ("SILVA シルバ|SOUZA ソウザ|OLIVEIRA オリベイラ|PEREIRA ペレイラ|COSTA コスタ|"
                 "FERREIRA フェレイラ|DOS SANTOS ドス・サントス"),
           "LUCAS ルーカス|PAULO パウロ|CARLOS カルロス|RAFAEL ハファエル|THIAGO チアゴ",
           "ANA アナ|JULIANA ジュリアナ|FERNANDA フェルナンダ|PATRICIA パトリシア|CAMILA カミラ",
           "HENRIQUE エンリケ", "CRISTINA クリスティナ", False),
    "NP": (0.08, "SHRESTHA シュレスタ|GURUNG グルン|TAMANG タマン|RAI ライ|THAPA タパ|MAGAR マガル",
           "RAM ラム|BISHAL ビシャル|SANDEEP サンディープ|SURESH スレシュ|ANIL アニル",
           "SITA シタ|ANITA アニタ|SUNITA スニタ|PUJA プジャ|GITA ギタ",
           "BAHADUR バハドゥル", "KUMARI クマリ", False),
    "EN": (0.10, ("SMITH スミス|JOHNSON ジョンソン|WILLIAMS ウィリアムズ|BROWN ブラウン|"
                 "JONES ジョーンズ|MILLER ミラー|DAVIS デイビス|WILSON ウィルソン|TAYLOR テイラー"),
           "MICHAEL マイケル|DAVID デイビッド|JAMES ジェームズ|ROBERT ロバート|DANIEL ダニエル",
           "MARY メアリー|JENNIFER ジェニファー|SARAH サラ|EMILY エミリー|ELIZABETH エリザベス",
           "LEE リー|JAMES ジェームズ", "ANN アン|MARIE マリー", False),
    "IN": (0.06, "SINGH シン|KUMAR クマール|SHARMA シャルマ|PATEL パテル|GUPTA グプタ",
           "RAJ ラジ|AMIT アミット|RAHUL ラフル|VIKRAM ヴィクラム|ARJUN アルジュン",
           "PRIYA プリヤ|ANJALI アンジャリ|NEHA ネハ|POOJA プージャ|DIVYA ディヴィヤ",
           "KUMAR クマール", "DEVI デヴィ", False),
}
# fmt: on
FOREIGN_MIDDLE_SHARE = 0.3  # share of foreign given names that carry a middle name (assumption)


def _pairs(block: str) -> list[list[str]]:
    return [item.split() for item in block.replace("\n", "|").split("|") if item.strip()]


def _foreign_pair(item: str) -> tuple[str, str]:
    """'DELA CRUZ デラ・クルス' → ('DELA CRUZ', 'デラ・クルス'): the reading is the last word."""
    *latin, kana = item.split()
    return " ".join(latin), kana


@dataclass(frozen=True)
class NameTables:
    """Every name string and its reading, plus the index ranges sampling draws from."""

    surname: list[str]
    surname_kana: list[str]
    surname_table: np.ndarray  # inverse CDF over the Japanese surnames (Zipf-like), see below
    japanese_surnames: int  # surnames [0, japanese_surnames) are Japanese
    surname_group: np.ndarray  # per surname: foreign origin group, -1 for Japanese
    given_name: list[str]
    given_name_kana: list[str]
    # Inverse CDF over given_name per category, shape (categories, BUCKETS): categories 0–5 are
    # Japanese (sex index * 3 + era), 6 + group * 2 + sex index foreign.
    given_table: np.ndarray
    group_share: np.ndarray  # foreign origin shares, summing to 1
    group_surnames: list[tuple[int, int]]  # [start, stop) into surname per group
    alias: list[str]  # 通称: Japanese-style full names used by foreign residents


BUCKETS = 1 << 16


def inverse_cdf(cum: np.ndarray) -> np.ndarray:
    """A lookup table drawing category i with probability cum[i] - cum[i-1] (to 1/BUCKETS):
    `table[(u * BUCKETS).astype(int)]` for uniform u is one gather, no search per draw."""
    middle = (np.arange(BUCKETS) + 0.5) / BUCKETS
    return np.minimum(np.searchsorted(cum, middle, side="right"), len(cum) - 1).astype(np.int16)


def draw(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categories for uniform draws u in [0, 1) from a table of `inverse_cdf`."""
    return table[..., (u * BUCKETS).astype(np.int64)]


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """Cumulative shares ending at exactly 1.0 from the last weighted entry on."""
    cum = np.cumsum(weights) / weights.sum()
    cum[np.flatnonzero(weights)[-1] :] = 1.0
    return cum


def build_tables() -> NameTables:
    """Assemble the tables once (a few thousand strings; the generator keeps them for the run)."""
    jp_surnames = _pairs(_SURNAMES)
    surname = [s for s, _ in jp_surnames]
    surname_kana = [k for _, k in jp_surnames]
    n_jp = len(surname)
    surname_weight = 1.0 / (np.arange(n_jp) + 8.0) ** 0.9
    given_name: list[str] = []
    given_kana: list[str] = []
    sex_of: list[int] = []
    era_weight: list[list[float]] = [[], [], []]
    for sex_index, block in ((0, _MALE), (1, _FEMALE)):
        for name, kana, eras in _pairs(block):
            given_name.append(name)
            given_kana.append(kana)
            sex_of.append(sex_index)
            for era, tag in enumerate("omy"):
                era_weight[era].append(1.0 if tag in eras else 0.02)
    n_jp_given = len(given_name)
    groups = list(_FOREIGN)
    group_share = np.array([_FOREIGN[g][0] for g in groups])
    group_share = group_share / group_share.sum()
    surname_group = [-1] * n_jp
    group_surnames: list[tuple[int, int]] = []
    foreign_given: list[tuple[int, int, str, str]] = []  # (group, sex index, name, kana)
    for gi, g in enumerate(groups):
        _, surnames, male, female, male_middles, female_middles, middle_first = _FOREIGN[g]
        start = len(surname)
        for item in surnames.split("|"):
            latin, kana = _foreign_pair(item)
            surname.append(latin)
            surname_kana.append(kana)
            surname_group.append(gi)
        group_surnames.append((start, len(surname)))
        for sex_index, block, middles in ((0, male, male_middles), (1, female, female_middles)):
            middle = [_foreign_pair(m) for m in middles.split("|")] if middles else []
            for item in block.split("|"):
                first, first_kana = _foreign_pair(item)
                foreign_given.append((gi, sex_index, first, first_kana))
                for mid, mid_kana in middle:
                    parts = [(mid, mid_kana), (first, first_kana)]
                    if not middle_first:
                        parts.reverse()
                    foreign_given.append(
                        (
                            gi,
                            sex_index,
                            " ".join(p[0] for p in parts),
                            "・".join(p[1] for p in parts),
                        )
                    )
    n_given = n_jp_given + len(foreign_given)
    weights = []
    for sex_index in (0, 1):
        for era in range(3):
            w = np.zeros(n_given)
            w[:n_jp_given] = np.where(np.array(sex_of) == sex_index, era_weight[era], 0.0)
            weights.append(w)
    for gi in range(len(groups)):
        for sex_index in (0, 1):
            w = np.zeros(n_given)
            for k, (group, sex, name, _) in enumerate(foreign_given):
                if group == gi and sex == sex_index:
                    # a name with a middle name shares FOREIGN_MIDDLE_SHARE of the weight
                    w[n_jp_given + k] = FOREIGN_MIDDLE_SHARE if " " in name else 1.0
            weights.append(w)
    given_table = np.stack([inverse_cdf(_cumulative(w)) for w in weights])
    for _, _, name, kana in foreign_given:
        given_name.append(name)
        given_kana.append(kana)
    alias = [s + g for s in surname[:40] for g in given_name[:n_jp_given:3]]
    return NameTables(
        surname=surname,
        surname_kana=surname_kana,
        surname_table=inverse_cdf(_cumulative(surname_weight)),
        japanese_surnames=n_jp,
        surname_group=np.array(surname_group, dtype=np.int8),
        given_name=given_name,
        given_name_kana=given_kana,
        given_table=given_table,
        group_share=group_share,
        group_surnames=group_surnames,
        alias=alias,
    )

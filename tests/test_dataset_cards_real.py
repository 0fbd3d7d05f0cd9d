"""The real-dataset cards (datasets/*.yaml, kind "real"): they load, their joints fit the
joint sets, and the seed paper's pairs (Park et al.) can form grids."""

from __future__ import annotations

import pytest

from bench.data.cards import DatasetCard, list_dataset_cards, load_dataset_card
from bench.data.joints import JOINT_SETS, get_joint_set, get_mapping
from bench.data.pairs import SPLITS
from bench.data.schema import DATASET_SPECS, JOINT_DATASETS

HANDS = ("freihand", "stb", "rhd", "pan", "gan", "h3d", "mvhand")
BODIES = (
    "h36m",
    "h36m-mas",
    "3dpw",
    "3dhp",
    "3dhp-mas",
    "3dhp-14cam",
    "surreal",
    "humaneva",
    "lsp",
    "mpii",
    "tiktok",
)
REAL = HANDS + BODIES
CONVERTED_IMAGES = ("imagenet-val-backgrounds",)  # unlabelled images converted from a raw copy

# How the seed papers' tables name each dataset (Park et al.; Lin et al.: H3D, MVHand;
# tllib's benchmark: LSP), and the pairs of their tables.
PAPER_NAMES = {
    "freihand": "FreiHAND",
    "stb": "STB",
    "rhd": "RHD",
    "pan": "PAN",
    "gan": "GAN",
    "h36m": "H3.6M",
    "h36m-mas": "H3.6M (6 actions)",
    "3dhp-mas": "3DHP (MaS split)",
    "3dhp-14cam": "3DHP (14 cameras)",
    "humaneva": "HumanEva-I",
    "3dpw": "3DPW",
    "3dhp": "3DHP",
    "surreal": "SURREAL",
    "h3d": "H3D",
    "mvhand": "MVHand",
    "lsp": "LSP",
    "mpii": "MPII",
    "tiktok": "TikTok",
}
PAPER_PAIRS = [
    *(("freihand", t) for t in ("stb", "rhd", "pan", "gan")),
    *(("h36m", t) for t in ("3dpw", "3dhp", "surreal")),
    *(("rhd", t) for t in ("h3d", "mvhand")),  # Lin et al., Table 1
    *(("surreal", t) for t in ("h36m", "3dpw", "lsp")),  # Lin et al., Table 2; tllib
]

# The raw joint orders each converter maps from (datasets.md §4); every card's joint set
# must be reachable from them through a registered mapping.
RAW_ORDERS = {
    "freihand": ("hand21",),
    "stb": ("stb21",),
    "rhd": ("rhd21",),
    "pan": ("hand21",),
    "gan": ("hand21",),
    "h36m": ("h36m32",),
    "h36m-mas": ("h36m32",),
    "3dhp-mas": ("mpi_inf_3dhp28",),
    "3dhp-14cam": ("mpi_inf_3dhp28",),
    "humaneva": ("humaneva15",),
    "3dpw": ("smpl24",),
    "3dhp": ("mpi_inf_3dhp28", "mpi_inf_3dhp17"),
    "surreal": ("smpl24",),
    "h3d": ("hand21",),
    "mvhand": ("mvhand21",),
    "lsp": ("common14",),
    "mpii": ("mpii16",),
    "tiktok": ("h36m17",),
}


@pytest.fixture(scope="module")
def cards() -> dict[str, DatasetCard]:
    return {name: load_dataset_card(name) for name in REAL}


def _text(card: DatasetCard, key: str) -> str:
    return " ".join(str(card.extra.get(key, "")).split())


def test_every_real_card_in_the_directory_is_known():
    real = {c.name for c in list_dataset_cards() if c.kind == "real"}
    assert set(REAL) <= real
    assert real <= set(REAL), f"new real card(s) {sorted(real - set(REAL))}: add them here"


@pytest.mark.parametrize("name", REAL)
def test_card_loads_with_joint_set_root_and_units(cards, name):
    card = cards[name]
    assert card.kind == "real"
    assert card.joint_set in JOINT_SETS
    jset = get_joint_set(card.joint_set)
    assert card.root_joint in jset.joints
    # Pairs use the joint set's tree root for root-relative 3D, so the card must agree.
    assert card.root_joint == jset.root_name
    assert dict(card.units) == {"kp3d": "mm", "kp2d": "px"}
    assert card.description


@pytest.mark.parametrize("name", REAL)
def test_card_has_splits_licence_reference_and_converter(cards, name):
    card = cards[name]
    assert card.splits
    assert len(set(card.splits)) == len(card.splits)
    assert set(SPLITS) <= set(card.splits)  # every pair reads train and test shards
    assert "http" in card.licence
    assert "http" in _text(card, "reference")
    assert "read the real terms at http" in card.licence.lower()
    assert _text(card, "converter")
    assert _text(card, "raw_layout")
    assert _text(card, "notes")


@pytest.mark.parametrize("name", REAL)
def test_provides_names_shard_fields(cards, name):
    provides = cards[name].extra.get("provides")
    assert isinstance(provides, list) and provides
    assert set(provides) <= set(DATASET_SPECS), set(provides) - set(DATASET_SPECS)
    assert {"images", *JOINT_DATASETS} <= set(provides)
    assert ("cam_R" in provides) == ("cam_t" in provides)


def test_paper_names_are_the_papers_and_unique(cards):
    names = {n: cards[n].extra.get("paper_name") for n in REAL}
    assert names == PAPER_NAMES
    assert len(set(names.values())) == len(names)


def test_hands_share_hand21_and_bodies_share_one_set(cards):
    assert {cards[n].joint_set for n in HANDS} == {"hand21"}
    body_sets = {cards[n].joint_set for n in BODIES}
    assert len(body_sets) == 1
    assert body_sets == {"h36m17"}
    for source, target in PAPER_PAIRS:
        assert cards[source].joint_set == cards[target].joint_set, (source, target)


@pytest.mark.parametrize("name", REAL)
def test_raw_orders_map_onto_the_joint_set_and_notes_say_how(cards, name):
    card = cards[name]
    notes = _text(card, "notes").lower()
    for raw in RAW_ORDERS[name]:
        mapping = get_mapping(raw, card.joint_set)
        if mapping.approximate:
            assert "approximat" in notes, f"{name}: {raw} has approximate joints"
        if mapping.missing:
            assert "missing" in notes, f"{name}: {raw} lacks joints of {card.joint_set}"


def test_cards_name_their_converter_exactly_when_one_is_registered(cards):
    from bench.data.convert import CONVERTERS, get_converter

    get_converter("lsp")  # registers every converter
    converted = {**cards, **{n: load_dataset_card(n) for n in CONVERTED_IMAGES}}
    for name, card in converted.items():
        text = _text(card, "converter")
        assert (f"dabench data convert {name} RAW_DIR" in text) == (name in CONVERTERS), name
    assert set(CONVERTERS) <= set(converted)


@pytest.mark.parametrize(
    "grid",
    [
        "park-table1-hand",
        "park-table2-body",
        "lin-table1-hand",
        "lin-table2-body",
        "mas-table1-h36m",
        "mas-table2-3dhp",
    ],
)
def test_every_paper_grid_names_a_convert_command_for_each_missing_dataset(
    grid, tmp_path, monkeypatch, capsys
):
    from bench.cli import main

    monkeypatch.setenv("DABENCH_DATA", str(tmp_path))
    assert main(["grid", "show", grid]) == 0
    listed = capsys.readouterr().out.split("Shards to convert first", 1)[1].strip().splitlines()
    assert listed[1:], "an empty shard root must list the grid's datasets"
    for line in listed[1:]:
        card = line.split()[0]
        assert f": dabench data convert {card} RAW_DIR" in line, line

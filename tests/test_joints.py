"""Tests for bench.data.joints: tree structure, mirror pairs and every index table by name."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from bench.data.joints import (
    JOINT_ORDERS,
    JOINT_SETS,
    MAPPINGS,
    JointMapping,
    JointSet,
    get_joint_set,
    get_mapping,
    joint_names,
)
from bench.errors import DabenchError

BODY_GROUPS = {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "all"}
HAND_GROUPS = {"mcp", "pip", "dip", "tip", "all"}

# Where a set reuses a vocabulary word for a different anatomical point, the landmark it
# really denotes. Everything else: the name is the landmark.
LANDMARK = {
    ("h36m17", "head"): "head_top",
    ("h36m32", "head"): "head_top",
    ("h36m17", "neck"): "h36m_neck_nose",
    ("h36m32", "neck"): "h36m_neck_nose",
}

# Every documented approximate correspondence: (source set, source joint, target set,
# target joint). A slot must be flagged approximate iff it is listed here.
APPROX = {
    ("stb21", "palm", "hand21", "wrist"),
    ("mpii16", "upper_neck", "h36m17", "neck"),
    ("mpii16", "upper_neck", "common14", "neck"),
    ("mpi_inf_3dhp28", "spine", "h36m17", "spine"),
    ("mpi_inf_3dhp28", "neck", "h36m17", "thorax"),
    ("mpi_inf_3dhp28", "head", "h36m17", "neck"),
    ("mpi_inf_3dhp17", "spine", "h36m17", "spine"),
    ("mpi_inf_3dhp17", "neck", "h36m17", "thorax"),
    ("mpi_inf_3dhp17", "head", "h36m17", "neck"),
    ("smpl24", "spine2", "h36m17", "spine"),
    ("smpl24", "neck", "h36m17", "thorax"),
    ("smpl24", "head", "h36m17", "neck"),
    ("smpl24", "head", "common14", "head_top"),
    ("humaneva15", "head", "h36m17", "head"),
    ("humaneva15", "head", "common14", "head_top"),
    ("humaneva15", "thorax", "common14", "neck"),
    ("coco18", "neck", "h36m17", "thorax"),
    ("coco18", "nose", "h36m17", "neck"),
    ("h36m17", "thorax", "common14", "neck"),
    ("common14", "neck", "h36m17", "thorax"),
    ("common14", "head_top", "h36m17", "head"),
}

REQUIRED_MAPPINGS = [
    ("rhd21", "hand21"),
    ("stb21", "hand21"),
    ("hand21", "hand21"),
    ("h36m32", "h36m17"),
    ("mpi_inf_3dhp28", "h36m17"),
    ("mpi_inf_3dhp17", "h36m17"),
    ("mpii16", "h36m17"),
    ("humaneva15", "h36m17"),
    ("smpl24", "h36m17"),
    ("coco18", "h36m17"),
    ("common14", "h36m17"),  # LSP's labels
    ("h36m17", "common14"),
    ("mpi_inf_3dhp17", "common14"),
    ("mpi_inf_3dhp28", "common14"),
    ("smpl24", "common14"),
    ("mpii16", "common14"),
    ("humaneva15", "common14"),
    ("coco18", "common14"),
]

SETS = sorted(JOINT_SETS)
ALL_MAPPINGS = sorted(MAPPINGS)


def landmark(set_name: str, joint: str) -> str:
    return LANDMARK.get((set_name, joint), joint)


def side(name: str) -> tuple[str, str] | None:
    """('l'|'r', name without side prefix), or None for a centre joint."""
    m = re.match(r"^(l|r|left|right)_(.+)$", name)
    if m is None:
        return None
    return m.group(1)[0], m.group(2)


# ---------------------------------------------------------------------------- joint sets


@pytest.mark.parametrize("name", SETS)
def test_tree_is_valid(name: str) -> None:
    js = get_joint_set(name)
    k = js.num_joints
    assert js.name == name
    assert len(js.joints) == len(set(js.joints)) == k
    assert len(js.parents) == k
    assert [i for i, p in enumerate(js.parents) if p == -1] == [js.root]
    assert js.root_name == js.joints[js.root]
    for i in range(k):
        seen = {i}
        j = i
        while j != js.root:
            j = js.parents[j]
            assert 0 <= j < k, f"{name}: joint {js.joints[i]} has a dangling parent"
            assert j not in seen, f"{name}: cycle through {js.joints[i]}"
            seen.add(j)
    assert len(js.bones) == k - 1
    assert js.bones == tuple((p, c) for c, p in enumerate(js.parents) if c != js.root)
    assert sum(len(js.children(i)) for i in range(k)) == k - 1
    for p, c in js.bones:
        assert c in js.children(p)


@pytest.mark.parametrize("name", SETS)
def test_groups(name: str) -> None:
    js = get_joint_set(name)
    required = HAND_GROUPS if name == "hand21" else BODY_GROUPS
    assert required <= set(js.groups)
    for g, idx in js.groups.items():
        assert idx and all(0 <= i < js.num_joints for i in idx), g
        assert len(set(idx)) == len(idx), g
    with pytest.raises(TypeError):
        js.groups["all"] = ()  # type: ignore[index]


def test_group_contents_by_name() -> None:
    h36m = get_joint_set("h36m17")
    assert {h36m.joints[i] for i in h36m.groups["head"]} == {"neck", "head"}
    for js in (get_joint_set(n) for n in SETS if n != "hand21"):
        for g in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
            names = {js.joints[i] for i in js.groups[g]}
            assert {f"l_{g}", f"r_{g}"} <= names, (js.name, g, names)
    # tllib/RegDA "all" for MPII-16 = the 12 limb joints (metrics-reporting.md §1.10).
    mpii = get_joint_set("mpii16")
    assert set(mpii.groups["all"]) == {12, 13, 11, 14, 10, 15, 2, 3, 1, 4, 0, 5}
    assert mpii.groups["all16"] == tuple(range(16))
    # 3DHP release grouping, 1-based in the MATLAB file (metrics-reporting.md §1.7).
    hp = get_joint_set("mpi_inf_3dhp17")
    one_based = {
        "head": (1, 17),
        "neck": (2,),
        "shoulder": (3, 6),
        "elbow": (4, 7),
        "wrist": (5, 8),
        "spine": (16,),
        "hip": (9, 12, 15),
        "knee": (10, 13),
        "ankle": (11, 14),
    }
    for g, idx in one_based.items():
        assert hp.groups[g] == tuple(i - 1 for i in idx), g
    hand = get_joint_set("hand21")
    assert hand.groups["mcp"] == (1, 5, 9, 13, 17)
    assert hand.groups["tip"] == (4, 8, 12, 16, 20)
    assert hand.joints[1] == "thumb_cmc" and 1 in hand.groups["mcp"]


def test_specific_trees() -> None:
    smpl = get_joint_set("smpl24")
    smpl_parents = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
    smpl_parents += [20, 21]
    assert smpl.parents == tuple(smpl_parents)
    hand = get_joint_set("hand21")
    for finger in ("thumb", "index", "middle", "ring", "little"):
        chain = [j for j in hand.joints if j.startswith(finger)]
        assert hand.parents[hand.index(chain[0])] == hand.index("wrist")
        for a, b in itertools.pairwise(chain):
            assert hand.parents[hand.index(b)] == hand.index(a)
    assert get_joint_set("h36m17").root_name == "pelvis"
    assert get_joint_set("mpii16").root_name == "pelvis"
    assert get_joint_set("mpi_inf_3dhp17").root == 14


def test_common14_root_is_hip_midpoint() -> None:
    j14 = get_joint_set("common14")
    assert {j14.joints[i] for i in j14.eval_root_joints} == {"l_hip", "r_hip"}
    x = np.zeros((2, 14, 3))
    x[:, j14.index("r_hip")] = [1.0, 2.0, 3.0]
    x[:, j14.index("l_hip")] = [3.0, 2.0, 1.0]
    np.testing.assert_allclose(j14.root_position(x), [[2.0, 2.0, 2.0]] * 2)
    h36m = get_joint_set("h36m17")
    assert h36m.eval_root_joints == (0,)
    y = np.arange(17 * 3, dtype=float).reshape(17, 3)
    np.testing.assert_array_equal(h36m.root_position(y), y[0])
    with pytest.raises(DabenchError, match="h36m17"):
        h36m.root_position(np.zeros((14, 3)))


# ---------------------------------------------------------------------------- flips


@pytest.mark.parametrize("name", SETS)
def test_flip_pairs(name: str) -> None:
    js = get_joint_set(name)
    perm = js.flip_permutation()
    assert perm.dtype.kind == "i" and perm.shape == (js.num_joints,)
    np.testing.assert_array_equal(perm[perm], np.arange(js.num_joints))
    paired = set()
    for a, b in js.flip_pairs:
        sa, sb = side(js.joints[a]), side(js.joints[b])
        assert sa is not None and sb is not None, (name, a, b)
        assert sa[0] == "l" and sb[0] == "r", f"{name}: left index must come first"
        assert sa[1] == sb[1], (name, js.joints[a], js.joints[b])
        paired.update((a, b))
    for i, joint in enumerate(js.joints):
        if i in paired:
            assert perm[i] != i
        else:
            assert side(joint) is None, f"{name}: {joint} has a side but no partner"
            assert perm[i] == i
    # Mirroring the labels must mirror the tree: parent(flip(i)) == flip(parent(i)).
    for i, p in enumerate(js.parents):
        if p >= 0:
            assert js.parents[perm[i]] == perm[p], (name, js.joints[i])


def test_smpl_flip_covers_extremities() -> None:
    smpl = get_joint_set("smpl24")
    perm = smpl.flip_permutation()
    for part in ("collar", "hand", "foot", "hip", "shoulder"):
        assert perm[smpl.index(f"l_{part}")] == smpl.index(f"r_{part}")
    assert len(smpl.flip_pairs) == 9


def test_flip_permutation_is_a_fresh_array() -> None:
    js = get_joint_set("h36m17")
    js.flip_permutation()[:] = 0
    assert js.flip_permutation()[1] == 4


# ---------------------------------------------------------------------------- orders


def test_raw_orders() -> None:
    sizes = {
        "rhd21": 21,
        "rhd42": 42,
        "stb21": 21,
        "h36m32": 32,
        "mpi_inf_3dhp28": 28,
        "humaneva15": 15,
        "coco18": 18,
    }
    for name, k in sizes.items():
        order = JOINT_ORDERS[name]
        assert order.name == name and order.num_joints == k
        assert len(set(order.joints)) == k
    rhd21, rhd42 = JOINT_ORDERS["rhd21"].joints, JOINT_ORDERS["rhd42"].joints
    assert rhd42 == tuple(f"left_{n}" for n in rhd21) + tuple(f"right_{n}" for n in rhd21)
    assert JOINT_ORDERS["stb21"].joints[0] == "palm"
    h32 = JOINT_ORDERS["h36m32"]
    for raw_index, name in [(0, "pelvis"), (1, "r_hip"), (12, "spine"), (13, "thorax")]:
        assert h32.index(name) == raw_index
    assert (h32.index("neck"), h32.index("head")) == (14, 15)
    # Vocabulary: every side-prefixed body name uses l_/r_ (left_/right_ only for RHD blocks).
    for name, order in JOINT_ORDERS.items():
        for joint in order.joints:
            if joint.startswith(("left_", "right_")):
                assert name == "rhd42", joint


# ---------------------------------------------------------------------------- mappings


def test_required_mappings_present() -> None:
    for pair in REQUIRED_MAPPINGS:
        assert pair in MAPPINGS, pair
        m = get_mapping(*pair)
        assert (m.source, m.target) == pair
        assert m.target in JOINT_SETS


@pytest.mark.parametrize(("source", "target"), ALL_MAPPINGS)
def test_mapping_lands_every_name(source: str, target: str) -> None:
    m = get_mapping(source, target)
    src, tgt = joint_names(source), joint_names(target)
    k_src = len(src)
    x = np.broadcast_to(np.arange(k_src, dtype=float)[:, None], (k_src, 3))
    y = m.apply(x)
    assert y.shape == (len(tgt), 3)
    for i, j in enumerate(m.index):
        if j is None:
            assert np.isnan(y[i]).all()
            assert i not in m.approximate
            continue
        np.testing.assert_array_equal(y[i], j)
        key = (source, src[j], target, tgt[i])
        if key in APPROX:
            assert i in m.approximate, f"{m.label}: slot {i} ({tgt[i]}) should be approximate"
        else:
            assert i not in m.approximate, f"{m.label}: slot {i} ({tgt[i]}) flagged, not listed"
            assert landmark(source, src[j]) == landmark(target, tgt[i]), (
                f"{m.label}: target {tgt[i]!r} <- source {src[j]!r}"
            )
    # No stale APPROX entries: each listed correspondence must actually occur.
    used = {(source, src[j], target, tgt[i]) for i, j in enumerate(m.index) if j is not None}
    listed = {a for a in APPROX if a[0] == source and a[2] == target}
    assert listed <= used, listed - used


@pytest.mark.parametrize(("source", "target"), ALL_MAPPINGS)
def test_mapping_missing_slots_and_batch_shapes(source: str, target: str) -> None:
    m = get_mapping(source, target)
    k_src, k_tgt = m.num_source_joints, m.num_target_joints
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, k_src, 2)).astype(np.float32)
    y = m.apply(x)
    assert y.shape == (4, 5, k_tgt, 2) and y.dtype == np.float32
    vis = np.ones((4, 5, k_src), dtype=bool)
    v = m.apply_vis(vis)
    assert v.shape == (4, 5, k_tgt) and v.dtype == bool
    for i, j in enumerate(m.index):
        if j is None:
            assert np.isnan(y[..., i, :]).all()
            assert not v[..., i].any()
        else:
            np.testing.assert_array_equal(y[..., i, :], x[..., j, :])
            assert v[..., i].all()
    assert m.missing == tuple(i for i, j in enumerate(m.index) if j is None)
    # Visibility follows the source joint, including False.
    vis2 = rng.random((3, k_src)) > 0.5
    v2 = m.apply_vis(vis2.astype(np.int8))
    for i, j in enumerate(m.index):
        expected = np.zeros(3, dtype=bool) if j is None else vis2[:, j]
        np.testing.assert_array_equal(v2[:, i], expected)
    # Integer input still yields a float array (NaN needs one).
    assert m.apply(np.zeros((k_src, 3), dtype=np.int64)).dtype == np.float64


@pytest.mark.parametrize(("source", "target"), ALL_MAPPINGS)
def test_mapping_wrong_joint_count(source: str, target: str) -> None:
    m = get_mapping(source, target)
    k = m.num_source_joints
    with pytest.raises(DabenchError) as e:
        m.apply(np.zeros((2, k + 1, 3)))
    assert m.label in str(e.value) and str(k) in str(e.value) and str(k + 1) in str(e.value)
    with pytest.raises(DabenchError, match=re.escape(m.label)):
        m.apply_vis(np.zeros((2, k - 1), dtype=bool))
    with pytest.raises(DabenchError, match=re.escape(m.label)):
        m.apply(np.zeros(k))


def test_documented_none_slots() -> None:
    assert get_mapping("mpii16", "h36m17").missing == (7,)  # spine
    assert get_mapping("smpl24", "h36m17").missing == (10,)  # head top
    assert get_mapping("humaneva15", "h36m17").missing == (7, 9)
    assert get_mapping("coco18", "h36m17").missing == (0, 7, 10)
    assert get_mapping("coco18", "common14").missing == (13,)
    assert get_mapping("stb21", "hand21").approximate == (0,)
    assert "palm" in get_mapping("stb21", "hand21").note


# ---------------------------------------------------------------------------- published tables


def test_published_constants() -> None:
    h36m_to_j14 = [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]
    rhd_to_c21 = [0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17]
    h36m32_to_17 = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
    assert get_mapping("h36m17", "common14").index == tuple(h36m_to_j14)
    assert get_mapping("rhd21", "hand21").index == tuple(rhd_to_c21)
    assert get_mapping("h36m32", "h36m17").index == tuple(h36m32_to_17)
    # 3DHP "relevant" joints, 1-based in mpii_get_joint_set.m.
    one_based = [8, 6, 15, 16, 17, 10, 11, 12, 24, 25, 26, 19, 20, 21, 5, 4, 7]
    relevant = tuple(i - 1 for i in one_based)
    assert get_mapping("mpi_inf_3dhp28", "mpi_inf_3dhp17").index == relevant


def test_right_rhd_hand_block() -> None:
    """The documented use of rhd21 for the right hand: offset every index by 21."""
    m = get_mapping("rhd21", "hand21")
    rhd42 = JOINT_ORDERS["rhd42"].joints
    hand = get_joint_set("hand21").joints
    for i, j in enumerate(m.index):
        assert j is not None
        assert rhd42[j] == f"left_{hand[i]}"
        assert rhd42[j + 21] == f"right_{hand[i]}"


# ---------------------------------------------------------------------------- composition


def compose(first: JointMapping, second: JointMapping) -> tuple[int | None, ...]:
    assert first.target == second.source
    return tuple(None if j is None else first.index[j] for j in second.index)


def test_compose_3dhp28_via_h36m17() -> None:
    direct = get_mapping("mpi_inf_3dhp28", "common14")
    via = (get_mapping("mpi_inf_3dhp28", "h36m17"), get_mapping("h36m17", "common14"))
    assert compose(*via) == direct.index
    x = np.random.default_rng(1).normal(size=(7, 28, 3))
    np.testing.assert_array_equal(via[1].apply(via[0].apply(x)), direct.apply(x))


# Known, documented disagreement between two reference tables.
COMPOSE_EXCEPTIONS = {("mpii16", "neck")}


@pytest.mark.parametrize(
    "source", sorted(s for s, t in MAPPINGS if t == "h36m17" and (s, "common14") in MAPPINGS)
)
def test_compose_via_h36m17_where_defined(source: str) -> None:
    direct = get_mapping(source, "common14")
    composed = compose(get_mapping(source, "h36m17"), get_mapping("h36m17", "common14"))
    j14 = get_joint_set("common14").joints
    for i, (a, b) in enumerate(zip(composed, direct.index, strict=True)):
        if a is None or b is None or (source, j14[i]) in COMPOSE_EXCEPTIONS:
            continue
        assert a == b, (source, j14[i])


def test_identity_mappings() -> None:
    for name in (*JOINT_SETS, *JOINT_ORDERS):
        m = get_mapping(name, name)
        assert m.index == tuple(range(len(joint_names(name))))
        assert m.approximate == ()
        x = np.arange(len(m.index) * 2, dtype=float).reshape(-1, 2)
        np.testing.assert_array_equal(m.apply(x), x)


# ---------------------------------------------------------------------------- errors


def test_unknown_joint_set() -> None:
    with pytest.raises(DabenchError) as e:
        get_joint_set("h36m18")
    msg = str(e.value)
    assert "h36m18" in msg
    for name in JOINT_SETS:
        assert name in msg


def test_unknown_joint_name() -> None:
    js = get_joint_set("h36m17")
    with pytest.raises(DabenchError) as e:
        js.index("nose")
    msg = str(e.value)
    assert "nose" in msg and "h36m17" in msg and "l_shoulder" in msg and "pelvis" in msg
    with pytest.raises(DabenchError, match="rhd21"):
        JOINT_ORDERS["rhd21"].index("palm")
    with pytest.raises(DabenchError, match="h36m17"):
        js.children(17)


def test_unknown_mapping() -> None:
    with pytest.raises(DabenchError) as e:
        get_mapping("common14", "mpii16")
    msg = str(e.value)
    assert "common14->mpii16" in msg
    for s, t in MAPPINGS:
        assert f"{s}->{t}" in msg
    with pytest.raises(DabenchError, match="h36m17"):
        get_mapping("nonexistent", "nonexistent")


def test_broken_tables_are_rejected() -> None:
    with pytest.raises(DabenchError):
        JointMapping("rhd21", "hand21", tuple(range(20)))  # too short
    with pytest.raises(DabenchError):
        JointMapping("rhd21", "hand21", (*range(20), 21))  # out of range
    with pytest.raises(DabenchError):
        JointMapping("coco18", "common14", (*range(13), None), approximate=(13,))
    with pytest.raises(DabenchError):  # cycle: 1 <-> 2
        JointSet("x", ("a", "b", "c"), (-1, 2, 1), 0, (), {"all": (0, 1, 2)})
    with pytest.raises(DabenchError):  # two roots
        JointSet("x", ("a", "b"), (-1, -1), 0, (), {"all": (0, 1)})
    with pytest.raises(DabenchError):  # group index out of range
        JointSet("x", ("a", "b"), (-1, 0), 0, (), {"all": (0, 2)})

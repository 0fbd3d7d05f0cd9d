"""The procedural domains: labels are exact, images carry the pose, domains differ."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from bench.data.cards import list_dataset_cards, load_dataset_card
from bench.data.geometry import camera_to_world, project, projection_matrices, triangulate
from bench.data.joints import get_joint_set
from bench.data.synthetic.appearance import get_style
from bench.data.synthetic.generate import SynthSpec, generate_chunk
from bench.data.synthetic.skeleton import forward_kinematics
from bench.errors import DabenchError

SUBJECT_CARDS = [
    c.name
    for c in list_dataset_cards()
    if c.kind == "synthetic" and (c.synthetic or {}).get("labels", "3d") == "3d"
]


@functools.cache
def chunk(card: str, size: int = 64, seed: int = 0, index: int = 0, split: str = "train") -> dict:
    spec = SynthSpec.from_card(load_dataset_card(card))
    return generate_chunk(spec, split, seed, index, size)


def spec_of(card: str) -> SynthSpec:
    return SynthSpec.from_card(load_dataset_card(card))


@pytest.mark.parametrize("card", SUBJECT_CARDS)
def test_kp2d_is_the_projection_of_kp3d(card):
    out = chunk(card)
    reproj = project(out["kp3d"].astype(np.float64), out["K"].astype(np.float64))
    assert np.abs(reproj - out["kp2d"]).max() < 1e-3
    assert (out["kp3d"][..., 2] > 0).all()


@pytest.mark.parametrize("card", SUBJECT_CARDS)
@pytest.mark.parametrize("size", [32, 64])
def test_visible_joints_lie_on_the_mask(card, size):
    out = chunk(card, size)
    px = np.rint(out["kp2d"]).astype(int)
    inside = (px >= 0).all(-1) & (px < size).all(-1)
    rows = np.arange(len(px))[:, None]
    on_mask = out["masks"][rows, px[..., 1].clip(0, size - 1), px[..., 0].clip(0, size - 1)]
    checked = out["vis"] & inside
    assert checked.sum() > 0.5 * checked.size
    assert on_mask[checked].all()


@pytest.mark.parametrize("card", ["synth-hand-clean", "synth-body-wild", "synth-hand-occluded"])
def test_bones_keep_their_length_within_a_sequence(card):
    out, spec = chunk(card), spec_of(card)
    jset = get_joint_set(load_dataset_card(card).joint_set)
    parents, children = zip(*jset.bones, strict=True)
    kp = out["kp3d"].astype(np.float64)
    bones = np.linalg.norm(kp[:, list(children)] - kp[:, list(parents)], axis=-1)
    per_seq = bones.reshape(-1, spec.frames * spec.views, len(children))
    spread = per_seq.max(axis=1) - per_seq.min(axis=1)
    assert spread.max() < 0.05  # mm: float32 rounding only
    # ... while subjects differ from each other (per-subject proportions).
    assert np.ptp(per_seq[:, 0], axis=0).max() > 5.0


@pytest.mark.parametrize(
    ("card", "bound"), [("synth-hand-clean", 60.0), ("synth-body-clean", 400.0)]
)
def test_motion_is_smooth_and_bounded(card, bound):
    out, spec = chunk(card), spec_of(card)
    world = camera_to_world(
        out["kp3d"].astype(np.float64),
        out["cam_R"].astype(np.float64),
        out["cam_t"].astype(np.float64),
    )
    seq = world.reshape(-1, spec.frames, spec.views, world.shape[1], 3)[:, :, 0]
    step = np.linalg.norm(np.diff(seq, axis=1), axis=-1)
    assert step.max() < bound  # per frame, mm
    assert step.mean() > 1.0  # but it does move
    # Smooth: the per-frame step changes little between consecutive frames.
    accel = np.linalg.norm(np.diff(seq, n=2, axis=1), axis=-1)
    assert np.median(accel) < np.median(step)
    assert (
        out["frame"].reshape(-1, spec.frames, spec.views)[:, :, 0] == np.arange(spec.frames)
    ).all()


@pytest.mark.parametrize("card", ["synth-hand-wild", "synth-body-clean"])
def test_triangulating_all_views_recovers_the_world_joints(card):
    out, spec = chunk(card), spec_of(card)
    v = spec.views
    assert v >= 4
    kp3d, rot, trans = (out[k].astype(np.float64) for k in ("kp3d", "cam_R", "cam_t"))
    world = camera_to_world(kp3d, rot, trans).reshape(-1, v, kp3d.shape[1], 3)
    proj = projection_matrices(out["K"].astype(np.float64), rot, trans).reshape(-1, v, 3, 4)
    kp2d = out["kp2d"].astype(np.float64).reshape(-1, v, kp3d.shape[1], 2)
    assert np.abs(world - world[:, :1]).max() < 0.01  # every view agrees on the world
    for i in range(0, len(world), 7):
        assert np.abs(triangulate(kp2d[i], proj[i]) - world[i, 0]).max() < 0.05
    # The views really are different cameras (not one camera repeated).
    centres = -np.einsum("nji,nj->ni", rot, trans).reshape(-1, v, 3)
    assert np.linalg.norm(centres[:, 1] - centres[:, 0], axis=-1).min() > 50.0


def test_same_seed_same_samples_and_prefix_property():
    a = chunk("synth-hand-wild", 32, 0, 1)
    spec = spec_of("synth-hand-wild")
    b = generate_chunk(spec, "train", 0, 1, 32)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = chunk("synth-hand-wild", 32, 1, 1)
    assert not np.array_equal(a["images"], c["images"])
    d = chunk("synth-hand-wild", 32, 0, 1, "test")
    assert not np.array_equal(a["kp3d"], d["kp3d"])
    # Chunks index sequences globally: chunk 1 continues where chunk 0 stopped.
    assert a["seq"].min() == chunk("synth-hand-wild", 32, 0, 0)["seq"].max() + 1


def _image_stats(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    img = images.astype(np.float64) / 255.0
    bg = masks == 0
    lap = np.abs(
        4 * img[:, 1:-1, 1:-1]
        - img[:, :-2, 1:-1]
        - img[:, 2:, 1:-1]
        - img[:, 1:-1, :-2]
        - img[:, 1:-1, 2:]
    ).mean(-1)
    gray = img.mean(-1)
    return {
        "bg_std": float(np.mean([gray[i][bg[i]].std() for i in range(len(img))])),
        "hf": float(lap.mean()),
        "contrast": float(gray.reshape(len(img), -1).std(1).mean()),
        "skin_hue": float(_skin_like(img[masks == 1]).mean()),
    }


def _skin_like(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose hue is in the orange range of human skin and that are not grey."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(rgb, 0, 1))
    return (hsv[..., 0] < 0.14) & (hsv[..., 1] > 0.15)


@pytest.mark.parametrize("subject", ["hand", "body"])
def test_styles_really_differ(subject):
    clean, wild, style, occ, shift = (
        chunk(f"synth-{subject}-{s}")
        for s in ("clean", "wild", "style", "occluded", "annotation-shift")
    )
    s_clean = _image_stats(clean["images"], clean["masks"])
    s_wild = _image_stats(wild["images"], wild["masks"])
    s_style = _image_stats(style["images"], style["masks"])
    # Wild: cluttered backgrounds and sensor noise.
    assert s_wild["bg_std"] > 3 * s_clean["bg_std"] + 0.02
    assert s_wild["hf"] > 1.5 * s_clean["hf"]
    # Style: the subject's colours shift (skin is no longer skin-coloured), contrast drops.
    assert s_style["skin_hue"] < 0.5 * s_clean["skin_hue"]
    assert s_style["contrast"] < 0.85 * s_clean["contrast"]
    # Occluded: some joints are hidden, and the mask excludes the occluders.
    assert occ["vis"].mean() < 0.9 and clean["vis"].mean() > 0.99
    # Annotation shift: the very images of wild, with different labels for some joints.
    np.testing.assert_array_equal(shift["images"], wild["images"])
    moved = np.linalg.norm(shift["kp3d"] - wild["kp3d"], axis=-1).mean(0)
    assert (moved > 3.0).sum() >= 4 and (moved < 1e-3).sum() >= 5


def test_annotation_shift_moves_labels_along_bones():
    from bench.data.synthetic.hand import HAND

    wild, shift = chunk("synth-hand-wild"), chunk("synth-hand-annotation-shift")
    jset = get_joint_set("hand21")
    for joint, (towards, frac) in HAND.label_shift.items():
        i, j = jset.index(joint), jset.index(towards)
        expected = wild["kp3d"][:, i] + frac * (wild["kp3d"][:, j] - wild["kp3d"][:, i])
        np.testing.assert_allclose(shift["kp3d"][:, i], expected, atol=1e-2)


def _render_flat_hand(side: float) -> tuple[np.ndarray, np.ndarray]:
    """A flat open right hand seen from the palm (side=+1) or the back (side=-1)."""
    from bench.data.geometry import look_at
    from bench.data.synthetic.appearance import lighting, subject_colors
    from bench.data.synthetic.camera import crop_intrinsics
    from bench.data.synthetic.generate import _draw_subject
    from bench.data.synthetic.hand import HAND
    from bench.data.synthetic.render import Canvas

    num_j = get_joint_set("hand21").num_joints
    pose = np.zeros((1, len(HAND.dofs)))
    scale = np.ones((1, num_j))
    pts, frames = forward_kinematics(HAND, pose, scale, np.eye(3)[None], np.zeros((1, 3)))
    rot, trans = look_at(
        np.array([0.0, 50.0, 500.0 * side]), np.array([0.0, 50.0, 0.0]), np.array([0.0, 1.0, 0.0])
    )
    pts_cam = pts @ rot.T + trans
    frm_cam = rot @ frames
    intr = crop_intrinsics(pts_cam[:, :num_j], 64, np.array([1.4]), np.zeros((1, 2)))
    style = get_style("clean")
    colors = subject_colors(style, np.random.default_rng(0), HAND.slots, 1)
    light, ambient = lighting(style, np.random.default_rng(0), 1)
    canvas = Canvas.empty(1, 64)
    _draw_subject(canvas, HAND, pts_cam, frm_cam, intr, colors, scale, np.ones(1), light, ambient)
    rgb = np.zeros((1, 64, 64, 3), np.float32)
    mask = canvas.compose_over(rgb)[0]
    rgb = rgb[0]
    thumb_x = project(pts_cam[:, :num_j], intr)[0, get_joint_set("hand21").index("thumb_tip"), 0]
    return rgb, mask, thumb_x


def test_chirality_is_in_the_picture():
    """A right hand seen from the back, mirrored, has the silhouette of the palm view (that
    is what makes chirality ambiguous in silhouettes), but not its pixels: the palm is
    lighter than the back and the nails show only from the back."""
    palm_rgb, palm_mask, palm_thumb = _render_flat_hand(+1.0)
    back_rgb, back_mask, back_thumb = _render_flat_hand(-1.0)
    assert (palm_thumb - 31.5) * (back_thumb - 31.5) < 0  # the thumb swaps sides
    mirrored_rgb, mirrored_mask = back_rgb[:, ::-1], back_mask[:, ::-1]
    overlap = (palm_mask & mirrored_mask).sum() / (palm_mask | mirrored_mask).sum()
    assert overlap > 0.7
    both = palm_mask & mirrored_mask
    assert palm_rgb[both].mean() > mirrored_rgb[both].mean() + 0.03


def test_thumb_is_shorter_and_thicker_than_the_little_finger():
    from bench.data.synthetic.hand import HAND

    caps = {(c.a, c.b): c for c in HAND.capsules}
    assert caps[("thumb_ip", "thumb_tip")].ra > caps[("little_dip", "little_tip")].ra
    off = HAND.offsets
    thumb = sum(np.linalg.norm(off[j]) for j in ("thumb_ip", "thumb_tip"))
    little = sum(np.linalg.norm(off[j]) for j in ("little_pip", "little_dip", "little_tip"))
    assert thumb < little + 15


def test_backgrounds_card_has_images_only():
    spec = spec_of("synth-backgrounds")
    out = generate_chunk(spec, "train", 0, 0, 32)
    assert set(out) == {"images"}
    assert out["images"].shape[1:] == (32, 32, 3)
    assert out["images"].std() > 20


def test_sampled_poses_respect_joint_limits():
    from bench.data.synthetic.body import BODY
    from bench.data.synthetic.hand import HAND

    rng = np.random.default_rng(1)
    for model in (HAND, BODY):
        low, high = model.dof_limits()
        pose = model.sample_pose(rng, 2000)
        assert (pose >= low).all() and (pose <= high).all()
        # The prior is not degenerate: every DoF actually moves.
        assert (pose.std(axis=0) > 0.02).all()


def test_card_overrides_are_validated(tmp_path, monkeypatch):
    card = tmp_path / "synth-test.yaml"
    base = (
        load_dataset_card("synth-hand-clean")
        .path.read_text()
        .replace("name: synth-hand-clean", "name: synth-test")
    )
    monkeypatch.setenv("DABENCH_DATASET_CARDS", str(tmp_path))
    card.write_text(base + "  appearance: {noise_sd: [1, 2]}\n")
    with pytest.raises(DabenchError, match="noise_sd.*valid keys.*noise_std"):
        SynthSpec.from_card(load_dataset_card("synth-test"))
    card.write_text(base + "  appearance: {noise_std: 3}\n")
    with pytest.raises(DabenchError, match="noise_std.*low, high"):
        SynthSpec.from_card(load_dataset_card("synth-test"))
    card.write_text(base + "  appearance: {noise_std: [1, 2]}\n")
    spec = SynthSpec.from_card(load_dataset_card("synth-test"))
    assert spec.style.noise_std == (1.0, 2.0)
    card.write_text(base.replace("style: clean", "style: sunny"))
    with pytest.raises(DabenchError, match="sunny.*valid styles"):
        SynthSpec.from_card(load_dataset_card("synth-test"))


def test_the_2d_only_card_is_the_same_scenes_with_2d_labels_and_head_sizes():
    import dataclasses

    from bench.data.synthetic.body import BODY
    from bench.data.synthetic.generate import _head_size

    spec = spec_of("synth-body-2d")
    out = generate_chunk(spec, "test", 0, 0, 64)
    assert set(out) == {"images", "kp2d", "kp3d", "vis", "K", "subject", "head_size"}
    assert np.isnan(out["kp3d"]).all() and np.isfinite(out["kp2d"]).all()
    # the labels setting changes what is stored, not the scenes
    full = generate_chunk(dataclasses.replace(spec, labels="3d"), "test", 0, 0, 64)
    assert np.array_equal(full["images"], out["images"])
    assert np.array_equal(full["kp2d"], out["kp2d"])
    assert spec.fingerprint("test", 10, 64, 0) != dataclasses.replace(
        spec, labels="3d"
    ).fingerprint("test", 10, 64, 0)
    # head size: 0.6 x the diagonal of the skull's square, side 2 f r / Z
    names = BODY.point_names
    pts = np.zeros((1, len(names), 3))
    pts[0, names.index("skull"), 2] = 2000.0
    intr = np.diag([100.0, 100.0, 1.0])[None]
    scale = np.ones((1, BODY.jset.num_joints))
    assert _head_size(BODY, pts, intr, scale)[0] == pytest.approx(0.6 * np.sqrt(2) * 10.0)
    # in the stored crops: a few pixels at 64 px, about the head's extent
    hs = out["head_size"]
    head_to_thorax = np.linalg.norm(out["kp2d"][:, 10] - out["kp2d"][:, 8], axis=-1)
    assert (hs > 1.0).all() and 0.5 < np.median(hs / head_to_thorax) < 2.0


def test_2d_labels_are_checked(tmp_path, monkeypatch):
    base = (
        load_dataset_card("synth-body-2d")
        .path.read_text()
        .replace("name: synth-body-2d", "name: synth-test")
    )
    monkeypatch.setenv("DABENCH_DATASET_CARDS", str(tmp_path))
    card = tmp_path / "synth-test.yaml"
    card.write_text(base.replace("labels: 2d", "labels: 2D"))
    with pytest.raises(DabenchError, match="labels '2D' is not one of 3d, 2d"):
        SynthSpec.from_card(load_dataset_card("synth-test"))
    card.write_text(base.replace("views: 1", "views: 4"))
    with pytest.raises(DabenchError, match="labels 2d .* needs subject body, views 1 and frames 1"):
        SynthSpec.from_card(load_dataset_card("synth-test"))

"""Look at the data: one sample with its skeleton and mask drawn over it, and a catalogue
of the cards with the shards that exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.atomic import atomic_path
from bench.data.cards import list_dataset_cards
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset, read_shard_info
from bench.errors import DabenchError, ShardError
from bench.paths import shard_root


def resolve_shard(spec: str) -> Path:
    """A shard path, or ``CARD/SPLIT`` (e.g. ``synth-hand-wild/test``) under the shard root."""
    path = Path(spec)
    if path.suffix == ".h5" or path.exists():
        return path
    if spec.count("/") == 1:
        card, split = spec.split("/")
        return shard_root() / card / f"{split}.h5"
    raise DabenchError(
        f"{spec!r} is neither a shard file nor CARD/SPLIT (e.g. synth-hand-clean/test)"
    )


def _joint_colors(names: tuple[str, ...]) -> list[tuple[float, float, float]]:
    """Left joints blue, right joints red, fingers by finger: chirality errors stand out."""
    fingers = {
        "thumb": "#e41a1c",
        "index": "#ff7f00",
        "middle": "#4daf4a",
        "ring": "#377eb8",
        "little": "#984ea3",
    }
    out = []
    for n in names:
        finger = next((c for f, c in fingers.items() if n.startswith(f)), None)
        if finger:
            out.append(finger)
        elif n.startswith(("l_", "left")):
            out.append("#1f78b4")
        elif n.startswith(("r_", "right")):
            out.append("#e31a1c")
        else:
            out.append("#ffd92f")
    return out


def render_sample(shard: Path, index: int, out: Path, scale: int = 6) -> Path:
    """Write a PNG of sample ``index``: image, translucent mask, bones, joints (hollow
    markers for joints that are not visible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = read_shard_info(shard)
    if not 0 <= index < info.num_samples:
        raise DabenchError(
            f"--index {index} is out of range for {shard} ({info.num_samples} samples)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DabenchError(f"cannot write {out}: {exc.strerror}") from exc
    sample = ShardDataset(shard)[index]
    image = sample["images"].numpy()
    h, w = image.shape[:2]
    fig = plt.figure(figsize=(w * scale / 100, h * scale / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    if "masks" in sample:
        mask = sample["masks"].numpy().astype(float)
        overlay = np.zeros((h, w, 4))
        overlay[..., 1] = 1.0
        overlay[..., 3] = 0.18 * mask
        ax.imshow(overlay, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        if 0 < mask.sum() < mask.size:
            ax.contour(mask, levels=[0.5], colors="#00ff66", linewidths=0.8)
    title = f"{info.attrs.get('dataset', shard.stem)} #{index}"
    for key in ("seq", "frame", "view"):
        if key in sample:
            title += f" {key} {int(sample[key])}"
    if info.joint_set != "none":
        jset = get_joint_set(info.joint_set)
        kp = sample["kp2d"].numpy()
        vis = sample["vis"].numpy()
        colors = _joint_colors(jset.joints)
        for parent, child in jset.bones:
            ax.plot(
                kp[[parent, child], 0],
                kp[[parent, child], 1],
                "-",
                color=colors[child],
                lw=1.5,
                alpha=0.9,
            )
        for k in range(jset.num_joints):
            face = colors[k] if vis[k] else "none"
            ax.plot(kp[k, 0], kp[k, 1], "o", ms=4, mfc=face, mec=colors[k], mew=1.2)
    ax.text(
        1,
        1,
        title,
        color="white",
        fontsize=7,
        va="top",
        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0},
    )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100)
    except OSError as exc:
        raise DabenchError(f"cannot write {out}: {exc.strerror}") from exc
    finally:
        plt.close(fig)
    return out


def catalogue(root: Path | None = None) -> list[dict[str, str]]:
    """One row per dataset card: name, kind, joint set, shards present with sizes."""
    root = root or shard_root()
    rows = []
    for card in list_dataset_cards():
        shards = []
        for split in card.splits:
            path = root / card.name / f"{split}.h5"
            if not path.exists():
                continue
            try:
                info = read_shard_info(path)
                shards.append(f"{split}: {info.num_samples} × {info.image_size[0]}px")
            except ShardError:
                shards.append(f"{split}: INVALID")
        rows.append(
            {
                "card": card.name,
                "kind": card.kind,
                "joints": card.joint_set,
                "shards": ", ".join(shards) or "-",
            }
        )
    return rows

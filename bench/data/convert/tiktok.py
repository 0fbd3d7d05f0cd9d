"""TikTok dancing videos (Jafarian & Park): ``<video>/images/<frame>.png`` with
``<video>/masks/<frame>.png``, no keypoints. Every frame is one unlabelled sample cropped
around its mask; the video folders sorted by name, the last 10 held out as the test split.
Frames are numbered by their position in the video's sorted file list."""

from __future__ import annotations

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

HELD_OUT = 10  # the last video folders (by name) form the test split
JOINTS = 17  # h36m17, all unlabelled


@register
class TikTok(Converter):
    card = "tiktok"
    raw_joints = "h36m17"
    fields = ("masks", "seq", "frame", "subject")
    crop_from = "mask"

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        videos = sorted(p.name for p in raw.root.iterdir() if (p / "images").is_dir())
        if not videos:
            raise DabenchError(
                f"tiktok: no video folders (<video>/images/*.png) under {raw.root}; point "
                "RAW_DIR at the TikTok_dataset folder"
            )
        held = max(1, min(HELD_OUT, len(videos) - 1))
        chosen = videos[:-held] if split == "train" else videos[-held:]
        if not chosen:
            raise DabenchError(f"tiktok: {raw.root} has one video; both splits need one")
        # the file lists are the annotation: fold them into the fingerprint
        out = []
        for video in chosen:
            frames = sorted(p.name for p in (raw.root / video / "images").glob("*.png"))
            raw.note(f"{video}:{','.join(frames)}")
            seq = videos.index(video)
            for f, name in enumerate(frames):
                mask = f"{video}/masks/{name}"
                raw.path(mask, f"the mask of frame {name} of video {video}")
                out.append(
                    Item(
                        image=f"{video}/images/{name}",
                        kp2d=np.full((JOINTS, 2), np.nan),
                        vis=np.zeros(JOINTS, bool),
                        mask=mask,
                        seq=seq,
                        frame=f,
                        subject=seq,
                    )
                )
        return out

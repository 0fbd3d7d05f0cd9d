"""ImageNet (ILSVRC-2012) validation images as background images: a flat folder of
``ILSVRC2012_val_%08d.JPEG``, no labels read. Each image becomes its largest centred square
at the card's size; the last ``HELD_OUT`` files by name form the test split."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

PATTERN = "ILSVRC2012_val_*.JPEG"
HELD_OUT = 1000
NONE = np.zeros((0, 2))


@register
class ImageNetBackgrounds(Converter):
    card = "imagenet-val-backgrounds"
    version = "1"

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        names = sorted(p.name for p in raw.root.glob(PATTERN))
        if not names:
            found = sorted(p.name for p in raw.root.iterdir())[:5]
            raise DabenchError(
                f"imagenet-val-backgrounds: no {PATTERN} files in {raw.root} (found "
                f"{found or 'nothing'}); point RAW_DIR at the folder ILSVRC2012_img_val.tar "
                "unpacks into"
            )
        if len(names) < 2:
            raise DabenchError(
                f"imagenet-val-backgrounds: {raw.root} holds one image; both splits need one"
            )
        held = max(1, min(HELD_OUT, len(names) // 10))
        chosen = names[:-held] if split == "train" else names[-held:]
        raw.note(",".join(chosen))  # the file list is the annotation
        for name in chosen:
            yield Item(image=name, kp2d=NONE, vis=np.zeros(0, bool))

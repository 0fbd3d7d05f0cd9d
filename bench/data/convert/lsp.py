"""LSP (Leeds Sports Pose): ``images/im%04d.jpg`` and ``joints.mat['joints']`` 3 × 14 × 2000
(x, y, invisibility flag; tllib reads visible = 1 − flag), 2D only, the 14 LSP joints in
the common14 order. Splits as tllib's and the standard LSP protocol: images 1–1000 train,
1001–2000 test. MATLAB's 1-based pixel coordinates become 0-based."""

from __future__ import annotations

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

IMAGES = 2000
SPLITS = {"train": range(0, 1000), "test": range(1000, 2000)}


@register
class LSP(Converter):
    card = "lsp"
    raw_joints = "common14"
    fields = ("subject",)

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        joints = raw.loadmat("joints.mat", "the 3 x 14 x 2000 joint array 'joints'", ("joints",))
        j = np.asarray(joints["joints"], dtype=np.float64)
        if j.shape != (3, 14, IMAGES):
            raise DabenchError(
                f"lsp: {raw.root / 'joints.mat'} holds 'joints' of shape {j.shape}; expected "
                f"(3, 14, {IMAGES}) (x, y, invisibility), the original LSP release (the "
                "10,000-image LSP-extended has 14 x 3 x 10000 and is another dataset)"
            )
        out = []
        for i in SPLITS[split]:
            name = f"images/im{i + 1:04d}.jpg"
            raw.path(name, f"image {i + 1} of 2000")
            out.append(
                Item(
                    image=name,
                    kp2d=j[:2, :, i].T - 1.0,
                    vis=j[2, :, i] == 0,
                    subject=i,
                )
            )
        return out

"""What a converter is: one small class per dataset card, registered by name, that reads the
annotations of a split into :class:`Item` s. Reading the images, cropping, joint mapping and
writing are shared (:mod:`bench.data.convert.run`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.convert.raw import RawFiles, decode_image, read_file
from bench.errors import DabenchError


@dataclass(frozen=True)
class Item:
    """One sample as annotated, before its image is read: keypoints in the raw joint order
    and in source pixels (0-based, pixel centres at integers)."""

    image: str  # relative to the raw folder: an image file, or a video with image_frame
    kp2d: np.ndarray  # [K_raw, 2]
    vis: np.ndarray  # [K_raw] bool
    kp3d: np.ndarray | None = None  # [K_raw, 3] mm, camera frame; None: 2D-only
    K: np.ndarray | None = None  # [3, 3] of the source image; None: no camera
    head_size: float | None = None  # PCKh normaliser in source px
    subject: int = 0
    mask: str | None = None  # a mask image relative to the raw folder (Converter.mask_of)
    seq: int = 0  # sequence, frame and view ids (frame pairs, multi-view groups)
    frame: int = 0
    view: int = 0
    cam_R: np.ndarray | None = None  # [3, 3] world → camera (X_cam = R X_world + t)
    cam_t: np.ndarray | None = None  # [3] mm
    image_frame: int | None = None  # 0-based frame of the video ``image``
    mask_frame: int | None = None  # 0-based frame of the video ``mask``


class Converter:
    """Subclass, set the class attributes, implement :meth:`items`, and register.

    ``items`` may return a list or a generator. A generator is never held whole: the
    conversion reads it twice (once to check and count every split, once to write), which
    is how Human3.6M- or SURREAL-sized splits stay out of memory."""

    card: str = ""
    raw_joints: str = ""  # the raw label order, a source of bench.data.joints.MAPPINGS
    splits: tuple[str, ...] = ("train", "test")
    fields: tuple[str, ...] = ()  # optional shard fields it writes
    version: str = "1"  # bump when its output changes
    # what the square crop is centred on: the visible 2D joints, or the mask's box (images
    # without keypoints, e.g. TikTok's); a card without joints (background images) takes the
    # largest centred square
    crop_from: str = "joints"

    def items(self, raw: RawFiles, split: str) -> Iterable[Item]:
        """Every sample of ``split``, in a fixed order; reads annotations only. Videos and
        large annotation files are best yielded one at a time."""
        raise NotImplementedError

    def read_image(self, root: Path, item: Item) -> np.ndarray:
        """The sample's image ``[H, W, 3]`` uint8 RGB: an image file, or a frame of a video
        (override for other containers)."""
        if item.image_frame is not None:
            from bench.data.convert.video import read_frame

            return read_frame(root / item.image, item.image_frame)
        return decode_image(read_file(root, item.image), str(root / item.image))

    def read_mask(self, root: Path, item: Item) -> np.ndarray | None:
        """What :meth:`mask_of` turns into the foreground: by default the decoded mask image
        or video frame; override where masks live in another container (a .mat file)."""
        if item.mask is None:
            return None
        if item.mask_frame is not None:
            from bench.data.convert.video import read_frame

            return read_frame(root / item.mask, item.mask_frame)
        return decode_image(read_file(root, item.mask), str(root / item.mask))

    def fields_of(self, split: str) -> tuple[str, ...]:
        """The optional fields the shard of ``split`` has (override where splits differ,
        e.g. masks in the training split only)."""
        return self.fields

    def mask_of(self, decoded: np.ndarray) -> np.ndarray:
        """The foreground of what :meth:`read_mask` returned (by default a decoded image
        ``[H, W, 3]`` uint8) as bool ``[H, W]`` (override where a dataset encodes it
        otherwise, e.g. part labels or chroma keys)."""
        return decoded.max(axis=-1) > 127


CONVERTERS: dict[str, type[Converter]] = {}


class MasksIfPresent(Converter):
    """A converter whose shards have masks exactly when the raw copy has them (Human3.6M's
    optional ground_truth_bs, MVHand's mask/): ``items(raw, split)`` decides it before it
    returns, by calling :meth:`masks_found`."""

    def __init__(self) -> None:
        self._masks: dict[str, bool] = {}

    def masks_found(self, raw: RawFiles, split: str, found: bool) -> bool:
        self._masks[split] = found
        raw.note(f"{split} masks:{found}")
        return found

    def fields_of(self, split: str) -> tuple[str, ...]:
        if split not in self._masks:
            raise DabenchError(
                f"{self.card}: whether the {split} shard has masks depends on the raw copy; "
                "its items must be read first"
            )
        return self.fields if self._masks[split] else tuple(f for f in self.fields if f != "masks")


def register(cls: type[Converter]) -> type[Converter]:
    """Class decorator: the converter of ``cls.card``."""
    if not cls.card or cls.card in CONVERTERS:
        raise DabenchError(f"converter {cls.__name__}: card {cls.card!r} empty or taken")
    CONVERTERS[cls.card] = cls
    return cls


def get_converter(card: str) -> Converter:
    from bench.data.convert import converters  # noqa: F401  (registers them)

    if card not in CONVERTERS:
        raise DabenchError(
            f"no converter for dataset card {card!r}; converters exist for: "
            f"{', '.join(sorted(CONVERTERS))} (synthetic cards are generated with "
            "`dabench data synth`)"
        )
    return CONVERTERS[card]()

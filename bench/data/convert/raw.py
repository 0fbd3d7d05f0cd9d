"""A dataset's raw folder as a converter reads it: every path checked against the layout the
card describes (one clear error naming the file and what was expected), and every byte read
folded into the fingerprint the shards record, in the order it was read."""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import DabenchError


class RawFiles:
    """Reads under ``root`` for the converter of dataset card ``card``."""

    def __init__(self, card: str, root: Path) -> None:
        self.card = card
        self.root = Path(root)
        if not self.root.is_dir():
            raise DabenchError(f"{card}: raw folder {self.root} does not exist or is not a folder")
        self._hash = hashlib.sha256()
        self.files_read = 0

    def path(self, relative: str, what: str) -> Path:
        """``root/relative``, which must exist; ``what`` says what it should hold."""
        path = self.root / relative
        if not path.exists():
            raise DabenchError(
                f"{self.card}: missing {path} ({what}); see the raw layout in "
                f"datasets/{self.card}.yaml"
            )
        return path

    def read_bytes(self, relative: str, what: str) -> bytes:
        data = self.path(relative, what).read_bytes()
        self._hash.update(f"{relative}\0{len(data)}\0".encode())
        self._hash.update(data)
        self.files_read += 1
        return data

    def loadmat(self, relative: str, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
        """A MATLAB v5 file through scipy.io; ``keys`` must be in it."""
        from scipy.io import loadmat

        data = self.read_bytes(relative, what)
        try:
            out = loadmat(io.BytesIO(data))
        except Exception as exc:  # scipy raises several types for a cut or foreign file
            raise DabenchError(
                f"{self.card}: {self.root / relative} is not a readable MATLAB file ({what}): {exc}"
            ) from exc
        missing = [k for k in keys if k not in out]
        if missing:
            raise DabenchError(
                f"{self.card}: {self.root / relative} lacks {missing} ({what}); it holds "
                f"{sorted(k for k in out if not k.startswith('__'))}"
            )
        return out

    def image_size(self, relative: str, what: str) -> tuple[int, int]:
        """(W, H) of an image from its header alone (the pixels are read later, in the
        workers): a file that is missing or no image is one error naming it."""
        path = self.path(relative, what)
        try:
            with Image.open(path) as image:
                return image.size
        except (UnidentifiedImageError, OSError) as exc:
            raise DabenchError(f"{self.card}: {path} is not a readable image: {exc}") from exc

    def load_pickle(self, relative: str, what: str) -> Any:
        """A pickle of plain containers and numpy arrays (RHD's, 3DPW's, MVHand's), loaded
        by an unpickler that refuses every other class: unpickling can run code, and a
        dataset file has no reason to name anything else. Python 2 pickles (numpy arrays
        written by Python 2) are read with ``latin1``."""
        data = self.read_bytes(relative, what)
        where = self.root / relative
        try:
            try:
                return _PlainUnpickler(io.BytesIO(data)).load()
            except UnicodeDecodeError:
                return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
        except _Foreign as exc:
            raise DabenchError(
                f"{self.card}: {where} pickles {exc}, which is not allowed (refused, not run): "
                f"expected {what}, and only plain containers and numpy arrays are loaded"
            ) from None
        except Exception as exc:  # a cut pickle raises EOFError, UnpicklingError, ValueError…
            raise DabenchError(
                f"{self.card}: {where} is not a readable pickle ({what}; cut short?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def note(self, text: str) -> None:
        """Fold what a listing found (a folder's file names) into the fingerprint."""
        self._hash.update(f"listing\0{text}\0".encode())

    def fingerprint(self) -> str:
        """Of everything read so far."""
        return f"raw-{self.card}:{self._hash.hexdigest()}"


def decode_image(data: bytes, where: str) -> np.ndarray:
    """JPEG/PNG bytes → ``[H, W, 3]`` uint8 RGB (greyscale and CMYK converted)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DabenchError(f"{where} is not a readable image: {exc}") from exc


def read_file(root: Path, relative: str) -> bytes:
    """The bytes of an image (or other per-sample file) under ``root``."""
    try:
        return (root / relative).read_bytes()
    except OSError as exc:
        raise DabenchError(f"cannot read {root / relative}: {exc.strerror}") from exc


class _Foreign(Exception):
    """A pickle names a global outside :data:`PICKLE_GLOBALS`."""


# What numpy's own pickles call, taken from numpy itself so that both numpy 1.x
# ("numpy.core") and 2.x ("numpy._core") module names resolve without importing them by
# name; and the codec Python 3 uses for bytes in protocol-2 pickles.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_SCALAR = np.float64(0).__reduce__()[0]
PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    **{(f"numpy.{m}.multiarray", "_reconstruct"): _RECONSTRUCT for m in ("core", "_core")},
    **{(f"numpy.{m}.multiarray", "scalar"): _SCALAR for m in ("core", "_core")},
    **{(f"numpy.{m}.numeric", "_frombuffer"): _FROMBUFFER for m in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): OrderedDict,
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_GLOBALS:
            raise _Foreign(f"{module}.{name}")
        return PICKLE_GLOBALS[(module, name)]

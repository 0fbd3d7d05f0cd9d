"""Frames of the raw videos (Human3.6M's mp4, MPI-INF-3DHP's and HumanEva's avi, SURREAL's
mp4) through PyAV, FFmpeg's Python binding. A conversion asks for frames in increasing order
within a video, so each worker process keeps its last few videos open (an image video and
its mask video alternate) and decodes forward; an earlier frame reopens the video."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from bench.errors import DabenchError


class _Reader:
    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            self.container = av.open(str(path))
            stream = self.container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as exc:
            raise DabenchError(f"{path} is not a readable video: {exc}") from exc
        stream.thread_type = "AUTO"
        self.frames = self.container.decode(stream)
        self.next = 0  # index of the frame the iterator yields next

    def frame(self, index: int) -> np.ndarray:
        import av

        try:
            for frame in self.frames:
                self.next += 1
                if self.next - 1 == index:
                    return frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise DabenchError(f"{self.path}: frame {self.next} cannot be decoded: {exc}") from exc
        raise DabenchError(
            f"{self.path} has {self.next} frames; the annotations ask for frame {index} "
            "(0-based): the video is shorter than its annotations"
        )

    def close(self) -> None:
        self.container.close()


OPEN = 4  # videos kept open per process
_open: OrderedDict[Path, _Reader] = OrderedDict()
_owner = os.getpid()
# Readers a forked worker inherits from its parent: decoding or closing them in the child
# can deadlock on the parent's decoder threads, so the child keeps them referenced and
# never touches them.
_inherited: list[OrderedDict[Path, _Reader]] = []


def _readers() -> OrderedDict[Path, _Reader]:
    global _open, _owner
    if _owner != os.getpid():
        _inherited.append(_open)
        _open, _owner = OrderedDict(), os.getpid()
    return _open


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, in decoding order) of the video at ``path`` as
    ``[H, W, 3]`` uint8 RGB."""
    if index < 0:
        raise DabenchError(f"{path}: frame index {index} is negative")
    readers = _readers()
    reader = readers.pop(path, None)
    if reader is not None and index < reader.next:
        reader.close()
        reader = None
    if reader is None:
        if not path.is_file():
            raise DabenchError(f"missing video {path}")
        reader = _Reader(path)
    readers[path] = reader  # most recently used last
    while len(readers) > OPEN:
        readers.popitem(last=False)[1].close()
    return reader.frame(index)


def frame_count(path: Path) -> int:
    """How many frames the video at ``path`` holds (from the container's header where it
    says, else by decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.demux(stream) if _.size)
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise DabenchError(f"{path} is not a readable video: {exc}") from exc

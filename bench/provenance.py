"""Where a result came from: the checkout's commit and state, library versions, host."""

from __future__ import annotations

import platform
import subprocess
from typing import Any

from bench import __version__
from bench.paths import REPO_ROOT


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_state() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether tracked files differ from it (None outside git)."""
    try:
        sha = _git("rev-parse", "HEAD")
        return sha, _git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, Any]:
    import numpy as np
    import ray
    import timm
    import torch

    sha, dirty = git_state()
    return {
        "dabench": __version__,
        "git_sha": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }

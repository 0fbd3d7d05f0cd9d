"""Content-addressed stage artifacts: a stage's output (the method's weights at the stage's
end, plus any data the stage derives) stored under a key hashed from everything that
determines it, written atomically under a lock, found again by any grid that needs the
same thing. Key computation is torch-free (the grid parser uses it)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.atomic import file_lock
from bench.errors import DabenchError

# Bump when what an artifact holds, or how it is made, changes incompatibly.
ARTIFACT_FORMAT = 1
ARTIFACTS_DIR = "_artifacts"
META = "artifact.json"
WEIGHTS = "state.pt"


def artifact_key(identity: Mapping[str, Any]) -> str:
    """A 16-hex-digit key of everything that determines a stage's output."""
    text = json.dumps({"format": ARTIFACT_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ArtifactStore:
    """``<results>/_artifacts/<key>/`` with ``artifact.json`` (what it is, how it was made,
    the data fingerprints it was made from) and ``state.pt`` (the method's state dict)."""

    def __init__(self, results: Path) -> None:
        self.root = Path(results) / ARTIFACTS_DIR

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.path(key) / META).is_file()

    def meta(self, key: str) -> dict[str, Any]:
        path = self.path(key) / META
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DabenchError(
                f"stage artifact {key} is missing or unreadable ({path}: {exc}); the stage "
                "that makes it must run first (re-run the grid)"
            ) from exc

    def check_fingerprints(self, key: str, fingerprints: Mapping[str, str]) -> None:
        """An artifact made from other data than the shards now in place is refused."""
        made = self.meta(key).get("fingerprints", {})
        changed = sorted(r for r in made if r in fingerprints and made[r] != fingerprints[r])
        if changed:
            raise DabenchError(
                f"stage artifact {key} was made from other shards ({', '.join(changed)} "
                f"changed since); delete {self.path(key)} to recompute it"
            )

    def verify(self, key: str) -> str:
        """Why the stored artifact cannot be trusted (a file missing, cut short or changed
        since it was written), or an empty string if it is whole."""
        try:
            files = self.meta(key).get("files")
        except DabenchError as exc:
            return str(exc)
        if not isinstance(files, dict):
            return "its artifact.json lists no files (written by an older dabench)"
        for name, want in files.items():
            path = self.path(key) / name
            if not path.is_file():
                return f"{name} is missing"
            if _digest(path) != want:
                return f"{name} differs from what was written (cut short or changed)"
        return ""

    def quarantine(self, key: str) -> Path:
        """Move a damaged artifact aside (kept for inspection, never read again), so that
        it is made anew; returns where it went."""
        aside = self.root / f".damaged-{key}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
        os.replace(self.path(key), aside)
        return aside

    def lock(self, key: str):
        """An exclusive lock per key, so two workers never compute one artifact at once."""
        return file_lock(self.root / ".locks" / f"{key}.lock")

    @contextmanager
    def writing(self, key: str, meta: Mapping[str, Any]) -> Iterator[Path]:
        """A temporary directory to write the artifact's files into; renamed onto the key
        with its ``artifact.json`` when the block ends, removed if it raises. The caller
        holds :meth:`lock`."""
        final = self.path(key)
        tmp = self.root / f".partial-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            record = {
                "key": key,
                "format": ARTIFACT_FORMAT,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **meta,
                # what verify() checks before anything starts from the artifact
                "files": {
                    str(f.relative_to(tmp)): _digest(f)
                    for f in sorted(tmp.rglob("*"))
                    if f.is_file()
                },
            }
            (tmp / META).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _digest(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}

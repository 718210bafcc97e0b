"""Reuse of calibration results: quantized graphs and layer sensitivities, keyed by everything that made them.

What is reused: the quantized ONNX graph a quantizer wrote (its calibrated scales and Q/DQ
placement), and the per-layer sensitivity ranking of the accuracy fallback. The key is a
sha256 over the parent ONNX's sha256, the calibration set's sha256 (over the preprocessed
samples), the method, the target, the calibration batch size, the layers kept in high
precision, the high-precision type and the quantizer's version, so a result is reused only
when model, data and method all match (docs/reliability.md, promise 5). The gate always runs again.

Location: ``<cache dir>/calibration`` (``RESNET_DEPLOY_CACHE``, else the user cache folder).
Entries are written atomically; an unreadable entry is deleted and recomputed; the folder is
kept under 2 GiB by dropping the least recently used entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from resnet_deploy.publish import atomic_path

FORMAT = 3  # bump when what an entry holds changes (or how a quantized graph is post-processed)


def default_cache_dir() -> Path:
    from resnet_deploy import demo

    return demo.cache_dir() / "calibration"


class CalibrationCache:
    """A folder of ``<key>.onnx`` graphs and ``<key>.json`` records; ``root=None`` disables it.

    Bounded: after each store the least recently used entries go until the folder holds at most
    ``max_bytes`` (default 2 GiB: about twenty ResNet-50 graphs).
    """

    def __init__(self, root: Path | None, *, max_bytes: int = 2 << 30) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @staticmethod
    def key(kind: str, **parts: Any) -> str:
        text = json.dumps({"format": FORMAT, "kind": kind, **parts}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()

    def fetch_model(self, key: str, dest: Path) -> bool:
        """Copy the cached graph for ``key`` to ``dest``; False when there is none."""
        if self.root is None:
            return False
        src = self.root / f"{key}.onnx"
        if not src.is_file():
            return False
        shutil.copyfile(src, dest)
        os.utime(src)  # recently used: evicted last
        return True

    def store_model(self, key: str, src: Path) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.root / f"{key}.onnx", record=False) as tmp:
            shutil.copyfile(src, tmp)
        self._evict()

    def forget(self, key: str) -> None:
        """Drop an entry that turned out unusable (corrupt, or failing its checks)."""
        if self.root is not None:
            for suffix in (".onnx", ".json"):
                (self.root / f"{key}{suffix}").unlink(missing_ok=True)

    def fetch_record(self, key: str) -> Any | None:
        if self.root is None or not (path := self.root / f"{key}.json").is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            return None

    def store_record(self, key: str, value: Any) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.root / f"{key}.json", record=False) as tmp:
            tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")

    def _evict(self) -> None:
        entries = []
        for path in self.root.iterdir():
            if path.suffix in (".onnx", ".json") and not path.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):  # another process may evict at the same time
                    st = path.stat()
                    entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

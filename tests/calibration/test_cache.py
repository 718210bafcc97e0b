"""The calibration cache: keys cover every input, entries are atomic, the folder stays bounded."""

from __future__ import annotations

import os

from resnet_deploy.calibration.cache import CalibrationCache


def test_key_changes_with_every_part():
    base = {"parent": "a" * 64, "calibration": "b" * 64, "method": "entropy", "target": "cpu", "kept": []}
    key = CalibrationCache.key("model", **base)
    assert key == CalibrationCache.key("model", **dict(reversed(list(base.items()))))  # order does not matter
    for part, other in [("parent", "c" * 64), ("calibration", "d" * 64), ("method", "max"), ("target", "tensorrt"),
                        ("kept", ["node_Conv_1"])]:
        assert CalibrationCache.key("model", **{**base, part: other}) != key, part
    assert CalibrationCache.key("sensitivity", **base) != key


def test_store_fetch_and_forget(tmp_path):
    cache = CalibrationCache(tmp_path / "cache")
    src = tmp_path / "graph.onnx"
    src.write_bytes(b"quantized graph")
    assert not cache.fetch_model("k", tmp_path / "out.onnx")
    cache.store_model("k", src)
    assert cache.fetch_model("k", tmp_path / "out.onnx") and (tmp_path / "out.onnx").read_bytes() == b"quantized graph"
    cache.store_record("k", [{"node": "a", "error": 1.0}])
    assert cache.fetch_record("k") == [{"node": "a", "error": 1.0}]
    (tmp_path / "cache" / "k.json").write_text("{not json")
    assert cache.fetch_record("k") is None and not (tmp_path / "cache" / "k.json").exists()
    cache.forget("k")
    assert list((tmp_path / "cache").iterdir()) == []


def test_disabled_cache_stores_nothing(tmp_path):
    cache = CalibrationCache(None)
    src = tmp_path / "graph.onnx"
    src.write_bytes(b"x")
    cache.store_model("k", src)
    assert not cache.fetch_model("k", tmp_path / "out.onnx") and cache.fetch_record("k") is None


def test_least_recently_used_entries_go_first(tmp_path):
    cache = CalibrationCache(tmp_path / "cache", max_bytes=3500)
    src = tmp_path / "graph.onnx"
    src.write_bytes(b"x" * 1000)
    for i, key in enumerate(("old", "used", "new")):
        cache.store_model(key, src)
        os.utime(tmp_path / "cache" / f"{key}.onnx", (1000 + i, 1000 + i))
    assert sorted(p.stem for p in (tmp_path / "cache").iterdir()) == ["new", "old", "used"]
    assert cache.fetch_model("old", tmp_path / "o.onnx")  # "old" becomes the most recently used
    cache.store_model("newest", src)  # 4000 bytes > 3500: the least recently used entry goes
    assert sorted(p.stem for p in (tmp_path / "cache").iterdir()) == ["new", "newest", "old"]

"""docs/reliability.md cases that belong to no single module; the others are tested beside their code.

Where each case is tested:
 1 unknown --arch ............... tests/cli/test_export_onnx.py, tests/test_weights.py
 2 resnet18 weights as resnet50 . tests/test_weights.py
 3 head size mismatch ........... tests/test_weights.py, tests/cli/test_export_onnx.py
 4 wrapped / module. checkpoints  tests/test_weights.py
 5 truncated, empty, directory .. tests/test_weights.py
 6 pickle payload ............... tests/test_weights.py
 7 output folder missing/ro ..... tests/test_publish.py, tests/cli/test_export_onnx.py
 8 existing output .............. tests/test_publish.py, tests/export/test_onnx.py, here (CLI)
 9 killed while writing, disk full tests/test_publish.py
10 external data outside folder . here
11 simplifier changes answers ... tests/export/test_onnx.py
12 empty / non-image calibration  tests/test_data.py, tests/calibration/
13 image modes .................. tests/test_data.py
14 decompression bomb ........... tests/test_data.py
15 thousands of images, bounded . here
16 garbage / foreign .plan ...... tests/runtime/test_tensorrt.py
17 engine from another GPU/TRT .. tests/runtime/test_tensorrt.py
18 wrong rank / dtype / size .... tests/runtime/
19 batch above profile max ...... tests/runtime/, tests/export/test_onnx.py
20 NaN/Inf inputs and outputs ... tests/test_parity.py, tests/runtime/
21 accuracy gate missed ......... tests/test_parity.py, tests/export/test_onnx.py, tests/calibration/
22 identical ONNX bytes ......... tests/export/test_onnx.py
"""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from resnet_deploy.data import open_source
from resnet_deploy.errors import UsageError
from resnet_deploy.export.artifact import load_checked
from resnet_deploy.manifest import Preprocess


def _external_model(folder, location: str):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w],
    )
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "link.bin"])
def test_external_data_outside_the_model_folder_is_rejected(tmp_path, location):
    os.symlink("/etc/passwd", tmp_path / "link.bin")
    path = _external_model(tmp_path, location)
    with pytest.raises(UsageError, match="points outside the model's folder"):
        load_checked(path)


def test_external_data_inside_the_folder_is_accepted(tmp_path):
    path = _external_model(tmp_path, "w.bin")
    assert load_checked(path).graph.node[0].op_type == "MatMul"


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UsageError, match="not an ONNX model"):
        load_checked(tmp_path / "x.onnx")


def test_thousands_of_images_stream_in_bounded_memory(tmp_path):
    """2,000 images at 224x224 are 1.2 GB as float tensors; streaming holds one batch of 32 (19 MB) at a time."""
    rng = np.random.default_rng(0)
    for i in range(2000):
        Image.new("RGB", (48, 40), tuple(int(v) for v in rng.integers(0, 256, 3))).save(tmp_path / f"{i:04d}.png")
    source = open_source(tmp_path)
    pp = Preprocess(resize=224, crop=224)
    tracemalloc.start()
    seen = 0
    for batch in source.batches(pp, batch_size=32):
        seen += len(batch.as_input("float32", pp))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == 2000
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB while streaming"

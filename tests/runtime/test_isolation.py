"""The runtime is what a Jetson embeds: it must work with torch, onnx, onnxsim, onnxscript and modelopt absent.

A fresh interpreter blocks them (``sys.modules[name] = None``: any import of them raises), then
imports ``resnet_deploy.runtime``, opens a real exported model (with its sidecar, and without one,
so the manifest comes from the ONNX metadata through onnxruntime), runs it and classifies PNG
files. The parent checks the answers against its own session and that nothing outside the
runtime's dependencies (numpy, Pillow, onnxruntime and onnxruntime's own) was imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from resnet_deploy.runtime import open_session

BLOCKED = ("torch", "torchvision", "onnx", "onnxsim", "onnxscript", "modelopt")
# numpy and Pillow (classify); onnxruntime and what its wheel declares (coloredlogs, flatbuffers,
# packaging, protobuf, sympy), should a version import them.
ALLOWED_THIRD_PARTY = {"resnet_deploy", "numpy", "PIL", "onnxruntime", "coloredlogs", "humanfriendly",
                       "flatbuffers", "packaging", "google", "sympy", "mpmath"}

CHILD = r"""
import json, sys
BLOCKED = {blocked!r}
for name in BLOCKED:
    sys.modules[name] = None
before = set(sys.modules)

import resnet_deploy.runtime  # noqa: E402
on_import = sorted(set(sys.modules) - before)

import numpy as np  # noqa: E402
from resnet_deploy.runtime import open_session  # noqa: E402

model, bare, batch_path, out_path, *images = sys.argv[1:]
result = {{"on_import": on_import}}
with open_session(model, threads=1) as s:
    np.save(out_path, s.run(np.load(batch_path)))
    result["classify"] = s.classify(images, topk=2)
with open_session(bare, threads=1) as s:  # no sidecar: the manifest comes from the metadata via onnxruntime
    result["bare_manifest"] = s.manifest is not None
    result["bare_classify"] = s.classify(images, topk=2)
result["modules"] = sorted(set(sys.modules) - before)  # what the runtime path imported
result["still_blocked"] = [name for name in BLOCKED if name in sys.modules and sys.modules[name] is None]
print(json.dumps(result))
"""


def test_runtime_runs_and_classifies_with_torch_onnx_onnxsim_modelopt_blocked(demo18_onnx, digits_png, tmp_path):
    images = [str(p) for p in sorted(digits_png.glob("[0-9]/*.png"))[::54]]  # 10 real digits
    bare = tmp_path / "bare.onnx"
    shutil.copy(demo18_onnx, bare)  # no sidecar beside it
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((5, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "batch.npy", batch)
    script = CHILD.format(blocked=BLOCKED)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(demo18_onnx), str(bare), str(tmp_path / "batch.npy"),
         str(tmp_path / "out.npy"), *images],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.splitlines()[-1])

    # the child's answers are the parent's (where torch and onnx are loaded)
    with open_session(demo18_onnx, threads=1) as sess:
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), sess.run(batch))
        want = sess.classify(images, topk=2)
    assert [[list(p) for p in row] for row in want] == child["classify"] == child["bare_classify"]
    assert child["bare_manifest"]
    correct = sum(row[0][0] == p.split("/")[-2] for row, p in zip(child["classify"], images))
    assert correct >= 9  # ten real digits; the model scores 99.4% on this held-out set

    # importing the runtime loads numpy and nothing else outside the standard library
    stdlib = set(sys.stdlib_module_names)
    assert {n.split(".")[0] for n in child["on_import"]} - stdlib == {"resnet_deploy", "numpy"}
    # the blocked modules were never imported, nor any submodule of them
    assert child["still_blocked"] == list(BLOCKED)
    assert [n for n in child["modules"] if n.split(".")[0] in BLOCKED] == []
    third_party = {n.split(".")[0] for n in child["modules"]} - stdlib
    assert third_party <= ALLOWED_THIRD_PARTY, sorted(third_party - ALLOWED_THIRD_PARTY)
    assert {"numpy", "PIL", "onnxruntime"} <= third_party

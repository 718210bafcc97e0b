"""A Triton Inference Server model repository from gated artifacts, configured from their manifests.

One model directory per artifact::

    REPO/<name>/config.pbtxt        platform, max_batch_size, I/O, dynamic batching, instances, warmup
    REPO/<name>/labels.txt          one class name per line (the logits output's label_filename)
    REPO/<name>/1/model.onnx        (or model.plan) the artifact, byte for byte
    REPO/<name>/1/model.onnx.json   its manifest, so the version folder opens with resnet_deploy.runtime
    REPO/README.md                  tritonserver, perf_analyzer and client command lines

Everything Triton users get wrong by hand comes from the manifest: ``max_batch_size`` is the
artifact's largest batch (the engine profile's for plans), dims exclude the batch dimension, a
uint8-input artifact takes uint8 NHWC, preferred batch sizes lie inside the profile, warmup runs
zeros at those sizes, and the ONNX Runtime intra-op threads are divided between CPU instances.
A configuration is built and checked for every artifact before any file is written
(:func:`validate`); the repository appears in one ``os.replace`` of a folder built beside it.

``backend="python"`` writes the same configuration for Triton's Python backend, whose model
(``resnet_deploy/serve/triton_model.py``) runs our runtime Session: what ``resnet-serve`` serves
where the native onnxruntime/tensorrt backends are absent. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.deploy.gated import gated_manifest
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Manifest, manifest_path
from resnet_deploy.publish import _TMP_PREFIX, exists_error, publishing
from resnet_deploy.runtime.backends import ENGINE_SUFFIXES

PLATFORMS = {"onnx": "onnxruntime_onnx", "plan": "tensorrt_plan"}
#: the Python backend's model file, shipped in the package
PYTHON_MODEL = Path(__file__).resolve().parent.parent / "serve" / "triton_model.py"
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}
#: ONNX Runtime backend parameter for intra-op threads (the Python backend's model reads the same key)
THREADS_PARAMETER = "intra_op_thread_count"
VERSION = "1"
TRITON_TARGET = "the Triton model configuration"  # what gated_manifest refuses a segmenter for
#: the NGC release of the tritonserver (2.51) that checked these configurations here; engines need the release
#: whose TensorRT built them
CONTAINER = "nvcr.io/nvidia/tritonserver:24.10-py3"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Enum(str):
    """A protobuf enum value: written bare (``KIND_GPU``), not quoted."""


@dataclass(frozen=True)
class TritonOptions:
    """Choices the manifest cannot make. None means: derive it from the manifest."""

    backend: str = "native"  # native: onnxruntime_onnx / tensorrt_plan; python: our Session in the Python backend
    max_batch: int | None = None  # at most the artifact's largest batch
    preferred: tuple[int, ...] | None = None  # default: the profile's opt and max batch
    queue_delay_us: int = 100  # dynamic batcher's max_queue_delay_microseconds
    instances: int = 1
    kind: str | None = None  # "gpu" | "cpu"; default: gpu for engines and ONNX, cpu for INT8-for-CPU ONNX
    cpu_cores: int | None = None  # CPU instances share these cores: intra-op threads = cores // instances
    warmup: bool = True
    versions: int = 1  # version_policy: latest N
    allow_ungated: bool = False

    def check(self) -> None:
        if self.backend not in ("native", "python"):
            raise UsageError(f"backend must be native or python, got {self.backend!r}")
        if self.kind not in (None, "gpu", "cpu"):
            raise UsageError(f"instance kind must be gpu or cpu, got {self.kind!r}")
        for what, value, low in (("instances", self.instances, 1), ("queue delay (us)", self.queue_delay_us, 0),
                                 ("versions", self.versions, 1)):
            if value < low:
                raise UsageError(f"{what} must be at least {low}, got {value}")
        if self.cpu_cores is not None and self.cpu_cores < self.instances:
            raise UsageError(f"{self.cpu_cores} CPU cores cannot be shared by {self.instances} instances "
                             "(each needs at least one)")


@dataclass
class ModelEntry:
    """One planned model directory: everything decided and checked before anything is written."""

    name: str
    artifact: Path
    manifest: Manifest
    model_file: str  # model.onnx | model.plan
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- configuration


def model_name(artifact: str | os.PathLike[str]) -> str:
    """``out/resnet18.int8-cpu.onnx`` -> ``resnet18_int8-cpu``: the file name without suffix, dots as underscores."""
    path = Path(artifact)
    return path.stem.replace(".", "_")


def artifact_kind(artifact: Path) -> str:
    suffix = artifact.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "plan"
    raise UsageError(f"{artifact}: Triton serves .onnx or TensorRT engines (.plan/.engine), not {suffix or 'this'}")


def model_config(name: str, manifest: Manifest, *, kind: str, options: TritonOptions = TritonOptions()) -> dict:
    """The ``ModelConfig`` for one artifact, as nested dicts (``config_text`` writes it); checked by :func:`validate`."""
    top = manifest.batch.max
    max_batch = options.max_batch if options.max_batch is not None else top
    if options.preferred is not None:
        preferred = sorted(set(options.preferred))
    else:  # the profile's sizes TensorRT tuned for and the largest, clipped to what is served
        preferred = sorted({min(manifest.batch.opt, max_batch), max_batch})
    device = options.kind or ("cpu" if manifest.details.get("target") == "cpu" and kind == "onnx" else "gpu")
    if options.backend == "python":
        device = "cpu"  # our Session on ONNX Runtime's CPU provider, in the Python backend's stub process
    inp = manifest.input
    input_dtype = TRITON_DTYPES.get(inp.dtype)
    if input_dtype is None:
        raise UsageError(f"{name}: input dtype {inp.dtype} has no Triton type here ({', '.join(TRITON_DTYPES)})")
    config: dict[str, Any] = {"name": name}
    if options.backend == "python":
        config["backend"] = "python"
    else:
        config["platform"] = PLATFORMS[kind]
    config["max_batch_size"] = max_batch
    config["version_policy"] = {"latest": {"num_versions": options.versions}}
    config["input"] = [{"name": inp.name, "data_type": Enum(input_dtype), "format": Enum(_format(inp.layout, kind)),
                        "dims": list(inp.shape[1:])}]
    output: dict[str, Any] = {"name": manifest.output.get("name", "logits"), "data_type": Enum("TYPE_FP32"),
                              "dims": [manifest.num_classes]}
    if manifest.labels:
        output["label_filename"] = "labels.txt"
    config["output"] = [output]
    config["dynamic_batching"] = {"preferred_batch_size": preferred,
                                  "max_queue_delay_microseconds": options.queue_delay_us}
    group: dict[str, Any] = {"count": options.instances, "kind": Enum("KIND_GPU" if device == "gpu" else "KIND_CPU")}
    config["instance_group"] = [group]
    parameters = {}
    if device == "cpu" and options.cpu_cores is not None:
        parameters[THREADS_PARAMETER] = {"string_value": str(max(1, options.cpu_cores // options.instances))}
    if parameters:
        config["parameters"] = parameters
    if options.warmup:
        config["model_warmup"] = [
            {"name": f"zeros_batch_{b}", "batch_size": b,
             "inputs": {inp.name: {"data_type": Enum(input_dtype), "dims": list(inp.shape[1:]), "zero_data": True}}}
            for b in preferred
        ]
    return config


def _format(layout: str, kind: str) -> str:
    """Triton's input ``format``: informational for ONNX/TensorRT; NONE where the layout is not an image's."""
    return {"NCHW": "FORMAT_NCHW", "NHWC": "FORMAT_NHWC"}.get(layout, "FORMAT_NONE")


def validate(config: dict[str, Any], manifest: Manifest) -> None:
    """What Triton would refuse at load time, or what would fail at the first request: raised here instead."""
    name = config["name"]
    if not _NAME_OK.match(name):
        raise UsageError(f"{name!r}: a Triton model name is letters, digits, '_', '.' and '-' (and starts with "
                         "a letter or digit)")
    mbs = config["max_batch_size"]
    low, top = manifest.batch.min, manifest.batch.max
    if not low <= mbs <= top:
        raise UsageError(f"{name}: max_batch_size {mbs} is outside the artifact's batch range {low}..{top}")
    if low > 1:
        raise UsageError(f"{name}: the artifact's smallest batch is {low}; Triton sends any batch from 1, "
                         "so rebuild it with a minimum batch of 1")
    preferred = config["dynamic_batching"]["preferred_batch_size"]
    bad = [b for b in preferred if not 1 <= b <= mbs]
    if bad:
        raise UsageError(f"{name}: preferred batch size {', '.join(map(str, bad))} is above max_batch_size {mbs} "
                         f"(or below 1); preferred sizes must lie in 1..{mbs}")
    dims = config["input"][0]["dims"]
    if any(not isinstance(d, int) or d < 1 for d in dims):
        raise UsageError(f"{name}: input dims {dims} must be fixed and positive for warmup and batching")
    if config["output"][0]["dims"][0] < 1:
        raise UsageError(f"{name}: the manifest names no classes")
    labels = manifest.labels
    if labels is not None and len(labels) != manifest.num_classes:
        raise UsageError(f"{name}: {len(labels)} labels for {manifest.num_classes} classes in the manifest")
    if labels is not None and any("\n" in label or "\r" in label for label in labels):
        raise UsageError(f"{name}: a label contains a line break; labels.txt holds one label per line")


def config_text(config: dict[str, Any], *, comments: Sequence[str] = ()) -> str:
    """Protobuf text format for ``config`` (``Enum`` values bare, strings quoted, repeated fields as lists)."""
    lines = [f"# {c}" for c in comments]
    lines += _fields(config, 0)
    return "\n".join(lines) + "\n"


def _fields(obj: dict[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    out = []
    for key, value in obj.items():
        if isinstance(value, dict) and key in ("parameters", "inputs"):  # protobuf maps: one entry per key
            for k, v in value.items():
                out += [f"{pad}{key} {{", f"{pad}  key: {_scalar(k)}", f"{pad}  value {{",
                        *_fields(v, depth + 2), f"{pad}  }}", f"{pad}}}"]
        elif isinstance(value, dict):
            out += [f"{pad}{key} {{", *_fields(value, depth + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out += [f"{pad}{key} {{", *_fields(item, depth + 1), f"{pad}}}"]
        elif isinstance(value, list):
            out.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


# ----------------------------------------------------------------------------- planning and writing


def plan_model(artifact: str | os.PathLike[str], *, name: str | None = None,
               options: TritonOptions = TritonOptions()) -> ModelEntry:
    """Read, gate, configure and validate one artifact; nothing is written."""
    path = Path(artifact)
    manifest = gated_manifest(path, allow_ungated=options.allow_ungated, target=TRITON_TARGET)
    kind = artifact_kind(path)
    if options.backend == "python" and kind != "onnx":
        raise UsageError(f"{path}: the Python backend serves ONNX artifacts on the CPU; a TensorRT engine needs "
                         "Triton's tensorrt backend (a GPU host with NVIDIA's Triton container)")
    name = name or model_name(path)
    config = model_config(name, manifest, kind=kind, options=options)
    validate(config, manifest)
    notes = []
    build = manifest.build or {}
    if kind == "plan":
        notes.append(f"TensorRT engine built with TensorRT {build.get('tensorrt', '?')} for {build.get('gpu', '?')} "
                     f"(sm_{str(build.get('compute_capability', '?')).replace('.', '')}): the server's TensorRT and "
                     "GPU must match")
        if build.get("version_compatible"):
            notes.append("version-compatible engine: start tritonserver with "
                         "--backend-config=tensorrt,version-compatible=true (loading runs code from the plan: "
                         "serve only engines you built)")
    return ModelEntry(name=name, artifact=path, manifest=manifest, model_file=f"model.{kind}", config=config,
                      notes=notes)


def plan_repository(artifacts: Sequence[str | os.PathLike[str]], *, names: Sequence[str] | None = None,
                    options: TritonOptions = TritonOptions()) -> list[ModelEntry]:
    """Plan every model; any refusal (ungated, bad configuration, a name twice) before anything is written."""
    options.check()
    if not artifacts:
        raise UsageError("name at least one artifact")
    if names and len(names) != len(artifacts):
        raise UsageError(f"{len(names)} names for {len(artifacts)} artifacts")
    entries = [plan_model(a, name=(names[i] if names else None), options=options) for i, a in enumerate(artifacts)]
    seen: dict[str, Path] = {}
    for e in entries:
        if e.name in seen:
            raise UsageError(f"model name {e.name!r} is given to both {seen[e.name]} and {e.artifact}; "
                             "name them apart")
        seen[e.name] = e.artifact
    return entries


def write_repository(entries: Sequence[ModelEntry], repo: str | os.PathLike[str], *, overwrite: bool = False,
                     readme: bool = True, host_threads: int | None = None) -> Path:
    """Write planned models into ``repo``. A new repository appears whole; into an existing one each model
    directory is swapped in whole (``--overwrite`` to replace a model of the same name)."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"{repo}: exists and is not a folder")
    parent = repo.parent if str(repo.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{parent}: folder does not exist")
    clashes = [e.name for e in entries if (repo / e.name).exists()]
    if clashes and not overwrite:
        raise exists_error(repo / clashes[0])
    staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=parent))
    try:
        for e in entries:
            _write_model(e, staging / e.name)
        if readme:
            (staging / "README.md").write_text(repository_readme(entries, host_threads=host_threads), encoding="utf-8")
        if not repo.exists():
            os.chmod(staging, 0o755)
            with publishing(repo):
                os.replace(staging, repo)
            return repo
        for e in entries:
            old = repo / e.name
            with publishing(old):
                if old.exists():  # swap: the old directory leaves in one rename, the new arrives in another
                    trash = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=repo))
                    os.replace(old, trash / e.name)
                    os.replace(staging / e.name, old)
                    shutil.rmtree(trash)
                else:
                    os.replace(staging / e.name, old)
        if readme:
            with publishing(repo / "README.md"):
                os.replace(staging / "README.md", repo / "README.md")
        return repo
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)


def _write_model(entry: ModelEntry, folder: Path) -> None:
    version = folder / VERSION
    version.mkdir(parents=True)
    comments = [f"{entry.name}: written by resnet-export triton from {entry.artifact.name} "
                f"({entry.manifest.arch}, {entry.manifest.precision}, input {entry.manifest.input.dtype} "
                f"{entry.manifest.input.layout})", *entry.notes]
    (folder / "config.pbtxt").write_text(config_text(entry.config, comments=comments), encoding="utf-8")
    if entry.manifest.labels:
        (folder / "labels.txt").write_text("".join(f"{label}\n" for label in entry.manifest.labels), encoding="utf-8")
    target = version / entry.model_file
    shutil.copyfile(entry.artifact, target)
    shutil.copyfile(manifest_path(entry.artifact), manifest_path(target))
    if entry.config.get("backend") == "python":
        shutil.copyfile(PYTHON_MODEL, version / "model.py")
    for path in (folder, version, *folder.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


# ----------------------------------------------------------------------------- the repository's README


def repository_readme(entries: Sequence[ModelEntry], *, host_threads: int | None = None) -> str:
    """How to serve this repository on a GPU host, load it with perf_analyzer, and call it."""
    first = entries[0]
    m = first.manifest
    inp = m.input
    shape = ",".join(str(d) for d in inp.shape[1:])
    vc = any("version-compatible" in n for e in entries for n in e.notes)
    flags = " --backend-config=tensorrt,version-compatible=true" if vc else ""
    rows = "\n".join(
        f"| `{e.name}` | {e.artifact.name} | {e.config.get('platform') or 'python (resnet-deploy Session)'} | "
        f"{e.manifest.precision} | {e.manifest.input.dtype} {e.manifest.input.layout} "
        f"{list(e.manifest.input.shape[1:])} | {e.config['max_batch_size']} | "
        f"{', '.join(map(str, e.config['dynamic_batching']['preferred_batch_size']))} | "
        f"{e.config['instance_group'][0]['count']} x {e.config['instance_group'][0]['kind']} |"
        for e in entries)
    notes = "".join(f"\n* `{e.name}`: {n}." for e in entries for n in e.notes)
    pp = m.preprocess
    if inp.dtype == "uint8":
        prep = (f"resize the short side to {pp.resize} ({pp.interpolation}), center-crop {pp.crop}x{pp.crop}, "
                "send uint8 RGB HWC (the graph normalises)")
    else:
        prep = (f"resize the short side to {pp.resize} ({pp.interpolation}), center-crop {pp.crop}x{pp.crop}, "
                f"/255, minus mean {list(pp.mean)}, over std {list(pp.std)}, CHW float32")
    threads_note = ""
    if host_threads:
        threads_note = f" (intra-op threads were divided for {host_threads} cores)"
    return f"""# Triton model repository

Written by `resnet-export triton` from gated resnet-deploy artifacts; each model's configuration
comes from the artifact's manifest (`<model>/1/model.*.json`){threads_note}.

| model | artifact | platform | precision | input | max batch | preferred batches | instances |
|---|---|---|---|---|---:|---|---|
{rows}
{notes}

## Serve it (GPU host, NVIDIA's container)

```bash
docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\
  {CONTAINER} \\
  tritonserver --model-repository=/models --disable-auto-complete-config{flags}
curl -sf localhost:8000/v2/health/ready && curl -s localhost:8000/v2/models/{first.name}/config
```

{CONTAINER.rsplit(":", 1)[1]} is tritonserver 2.51, the version that loaded these configurations in
resnet-deploy's tests; ONNX models run in any later release too. A TensorRT engine runs only in
a release whose TensorRT built it (`build.tensorrt` in the plan's manifest, e.g. `10.13` ->
the release notes' matching `yy.mm`) on the GPU model it was built for.

## Load it (perf_analyzer, in the SDK container)

```bash
docker run --rm --net=host {CONTAINER}-sdk \\
  perf_analyzer -m {first.name} -u localhost:8001 -i grpc --shape {inp.name}:{shape} -b 1 \\
  --concurrency-range 1:16:2 --percentile 95 --measurement-interval 5000
```

or, without the SDK container, `resnet-bench triton --url localhost:8000 --model {first.name}
--artifact {first.name}/1/{first.model_file} --data DATA --concurrency 1,4,16` (throughput,
latency percentiles, server queue and compute times, and parity with the in-process model).

## Call it

Preprocess as the manifest says ({prep}):

```python
import numpy as np
import tritonclient.http as httpclient
from resnet_deploy.runtime import open_session

session = open_session("{first.name}/1/{first.model_file}")      # the manifest, for the preprocessing
batch = session.prepare(["image.jpg"])                             # {inp.dtype} {tuple(inp.shape[1:])} per image
client = httpclient.InferenceServerClient("localhost:8000")
request = httpclient.InferInput("{inp.name}", batch.shape, "{_client_dtype(inp.dtype)}")
request.set_data_from_numpy(batch)
answer = client.infer("{first.name}", [request],
                      outputs=[httpclient.InferRequestedOutput("{m.output.get('name', 'logits')}", class_count=5)])
print(answer.as_numpy("{m.output.get('name', 'logits')}"))   # b"score:index:label" for the top 5
```
"""


def _client_dtype(dtype: str) -> str:
    return {"float32": "FP32", "float16": "FP16", "uint8": "UINT8"}[dtype]

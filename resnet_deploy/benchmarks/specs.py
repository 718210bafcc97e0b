"""Model specs: one string names anything the benchmark can run, and the reference it is compared with.

Syntax (``resnet-bench compare`` arguments and ``--reference``):

``model.onnx``                       ONNX Runtime (``--provider``), backend from the suffix
``model.plan`` / ``model.engine``    TensorRT engine
``onnx:PATH`` / ``trt:PATH``         the same, naming the backend whatever the suffix
``torch:ARCH[:WEIGHTS]``             the PyTorch model, e.g. ``torch:resnet18:demo``,
                                     ``torch:resnet50:ckpt.pth``, ``torch:resnet50:torchvision``,
                                     ``torch:fcn_resnet18:demo`` (a segmentation model's name);
                                     no WEIGHTS: untrained (random, seed 0)
``ckpt.pth`` / ``.pt`` / ``.safetensors``  (``--reference`` only) a checkpoint; its arch from
                                     ``--arch``, else the candidate's manifest, else its key names
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_deploy.archs import MODEL_NAMES
from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Manifest, Preprocess
from resnet_deploy.recorded import RecordedReference, read_recorded, reference_path
from resnet_deploy.runtime.backends import ENGINE_SUFFIXES
from resnet_deploy.weights import Weights

if TYPE_CHECKING:
    from resnet_deploy.data import DataSource
    from resnet_deploy.runtime.session import Session

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
BACKENDS = {"onnx": "onnxruntime", "trt": "tensorrt", "torch": "torch"}


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "onnx" | "trt" | "torch"
    text: str  # as the user wrote it; the label in tables
    path: Path | None = None
    arch: str | None = None
    weights: Weights | None = None  # torch only; None for the other kinds


@dataclass(frozen=True)
class OpenOptions:
    """How to open any spec; each option applies where it means something."""

    threads: int | None = None  # CPU threads (ORT intra-op, torch.set_num_threads); None: the library's default
    provider: str = "cpu"  # onnxruntime: cpu | cuda | tensorrt
    device: str = "cpu"  # torch: cpu | cuda
    precision: str = "fp32"  # torch: fp32 | fp16 (CUDA)
    channels_last: bool = False  # torch
    cuda_graph: bool = False  # torch on CUDA and TensorRT: replay a captured graph per input shape
    image_size: int | None = None  # torch: input size; None: the weights' preset, else 224
    num_classes: int | None = None  # torch with a checkpoint: head size; None: the checkpoint's
    allow_unverified: bool = False  # TensorRT: load an engine without a resnet-deploy manifest (trtexec-built)
    strict_cpu: bool = False  # onnxruntime cpu: refuse a CPU INT8 artifact this CPU does not compute exactly


@dataclass
class Opened:
    """A session ready to time, with what the report says about it."""

    spec: ModelSpec
    session: Session
    preprocess: Preprocess
    precision: str
    device: str
    task: str = "classify"  # archs.TASKS: from the manifest, or the PyTorch model's own

    @property
    def label(self) -> str:
        return self.spec.text

    @property
    def manifest(self) -> Manifest | None:
        return self.session.manifest


def parse_spec(text: str) -> ModelSpec:
    """Parse one spec (see the module docstring); files must exist, torch archs must be known."""
    head, sep, rest = text.partition(":")
    if sep and head == "torch":
        arch, _, weights = rest.partition(":")  # weights may hold ':' itself (torchvision:ENUM)
        if arch not in MODEL_NAMES:
            raise UsageError(f"{text}: unknown arch {arch!r} (torch:ARCH[:WEIGHTS], ARCH one of {', '.join(MODEL_NAMES)})")
        return ModelSpec("torch", text, arch=arch, weights=Weights.parse(weights))
    if sep and head in ("onnx", "trt"):
        kind, path = head, Path(rest)
    else:
        path = Path(text)
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            kind = "onnx"
        elif suffix in ENGINE_SUFFIXES:
            kind = "trt"
        elif suffix in _CHECKPOINT_SUFFIXES:
            kind = "checkpoint"
        else:
            raise UsageError(f"{text}: not a model spec (a .onnx or .plan file, onnx:PATH, trt:PATH or torch:ARCH[:WEIGHTS])")
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    return ModelSpec(kind, text, path=path)


def file_spec(kind: str, path: str | Path) -> ModelSpec:
    """The spec of a file named on the command line (``resnet-bench onnx PATH``), labelled as written."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    return ModelSpec(kind, str(path), path=path)


def open_model(spec: ModelSpec, *, options: OpenOptions = OpenOptions()) -> Opened:
    """Open ``spec`` as a Session (onnxruntime, TensorRT or PyTorch) with ``options``."""
    if spec.kind == "onnx":
        from resnet_deploy.manifest import read_manifest
        from resnet_deploy.runtime.onnxruntime import OnnxRuntimeSession

        session: Session = OnnxRuntimeSession(spec.path, manifest=read_manifest(spec.path), provider=options.provider,
                                              threads=options.threads, strict_cpu=options.strict_cpu)
        device = "cpu" if options.provider == "cpu" else f"cuda (onnxruntime {options.provider} provider)"
        return _opened(spec, session, device)
    if spec.kind == "trt":
        from resnet_deploy.runtime import open_session

        kwargs = {"allow_unverified": True} if options.allow_unverified else {}
        session = open_session(spec.path, backend="tensorrt", cuda_graph=options.cuda_graph, **kwargs)
        host = getattr(getattr(session, "_loaded", None), "host", None)  # TensorRTSession's HostInfo
        return _opened(spec, session, f"cuda ({host.gpu})" if host and host.gpu else "cuda")
    if spec.kind == "torch":
        from resnet_deploy.weights import load_model

        check_torch_device(options.device)
        return open_torch(spec, load_model(spec.arch, spec.weights, num_classes=options.num_classes), options=options)
    raise UsageError(f"{spec.text}: a checkpoint alone cannot be benchmarked; use torch:ARCH:{spec.text}")


def _opened(spec: ModelSpec, session: Session, device: str) -> Opened:
    manifest = session.manifest
    if manifest is None:
        # No sidecar: the input size is known from the graph, the preprocessing is torchvision's default.
        size = next((d for d in session.sample_shape if d not in (None, 3)), 224)
        pp = Preprocess(resize=round(size * 256 / 224), crop=size)
    else:
        pp = manifest.preprocess
    return Opened(spec, session, pp, manifest.precision if manifest else "unknown", device,
                  manifest.task if manifest else "classify")


def check_torch_device(device: str) -> None:
    """Fail in one line, before any model loads, when torch is missing or ``--device cuda`` has no CUDA device."""
    from resnet_deploy.extras import require_export

    torch = require_export("torch", needed_by="a PyTorch model")

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"`device` must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"`device` {device}: no CUDA device is visible to torch (this torch is "
                         f"{torch.__version__}; install a CUDA build on a GPU host, or use `device` cpu)")


def open_torch(spec: ModelSpec, loaded, *, options: OpenOptions) -> Opened:
    """A TorchSession over a loaded model, fed as its weights' preset (or ``options.image_size``) says."""
    from resnet_deploy.reference import TorchSession
    from resnet_deploy.weights import resolve_preprocess

    dense = loaded.task != "classify"
    pp = resolve_preprocess(loaded, image_size=None if dense else options.image_size)
    kwargs = {"cuda_graph": True} if options.cuda_graph else {}
    session = TorchSession(loaded.model, image_size=None if dense else pp.crop, device=options.device,
                           precision=options.precision, channels_last=options.channels_last, threads=options.threads,
                           output_names=loaded.outputs, **kwargs)
    device = options.device
    if device.startswith("cuda"):
        import torch

        device = f"{device} ({torch.cuda.get_device_name(session.device)})"
    return Opened(spec, session, pp, options.precision, device, loaded.task)


#: ``--reference`` words; anything else is a spec or a checkpoint
REFERENCE_MODES = ("auto", "recorded", "torch", "none")


@dataclass(frozen=True)
class RecordedRef:
    """The reference recorded beside the artifact (``recorded.py``), as what parity compares with."""

    label: str
    recorded: RecordedReference


@dataclass(frozen=True)
class ReferenceChoice:
    """What parity compares with, and what kind it is; ``why`` says why there is none."""

    reference: Opened | RecordedRef | None
    kind: str  # "torch" | "recorded" | "onnx" | "trt" | "none"
    why: str | None = None


def open_reference(text: str | None, *, candidate: Opened, options: OpenOptions, arch: str | None = None,
                   weights: Weights | str | None = None, source: DataSource | None = None) -> Opened | RecordedRef | None:
    """The reference ``candidate`` is compared with, or None (``choose_reference``)."""
    return choose_reference(text, candidate=candidate, options=options, arch=arch, weights=weights,
                            source=source).reference


def choose_reference(text: str | None, *, candidate: Opened, options: OpenOptions, arch: str | None = None,
                     weights: Weights | str | None = None, source: DataSource | None = None) -> ReferenceChoice:
    """The model ``candidate`` is compared with (``text``: a mode of ``REFERENCE_MODES``, a spec or a checkpoint).

    ``auto`` (also None): ``arch``/``weights`` when given; else the PyTorch model rebuilt from the
    candidate's manifest where torch is installed; else the reference recorded beside the
    artifact, where it was recorded on ``source``; else none. ``torch`` and ``recorded`` insist
    on theirs (UsageError without it); a recorded reference whose bytes changed is refused in
    every mode. A PyTorch candidate is its own reference. The reference runs in FP32 on the CPU
    unless ``options.device`` says otherwise.
    """
    from resnet_deploy.extras import importable

    mode = (text or "auto").lower()
    if mode == "none":
        return ReferenceChoice(None, "none", "`reference` none")
    if mode in ("auto", "torch") and arch is not None:
        given = Weights.parse(weights)
        ref_options = _reference_options(candidate, options)
        return ReferenceChoice(open_model(ModelSpec("torch", f"torch:{arch}:{given}", arch=arch, weights=given),
                                          options=ref_options), "torch")
    if mode in REFERENCE_MODES:
        manifest = candidate.manifest
        if candidate.spec.kind == "torch":
            return ReferenceChoice(None, "none", "a PyTorch model is its own reference")
        if manifest is None:
            if mode != "auto":
                raise UsageError(f"{candidate.label}: has no resnet-deploy manifest to find its `reference` {mode} by")
            return ReferenceChoice(None, "none", f"{candidate.label} has no resnet-deploy manifest")
        if mode == "torch" or (mode == "auto" and importable("torch")):
            return ReferenceChoice(_torch_from_manifest(candidate, manifest, options), "torch")
        found = read_recorded(candidate.spec.path, manifest)
        if found is None:
            why = (f"{candidate.label} records no reference (it was exported without evaluation data)"
                   if manifest.task == "classify" else
                   f"{candidate.label} is a {manifest.task} model; references are recorded for classifiers only")
            if mode == "recorded":
                raise UsageError(f"{why}; pass another `reference`")
            return ReferenceChoice(None, "none", f"torch is not installed and {why}")
        recorded = found[0]
        if mode == "auto" and source is not None and source.digest() != recorded.data_digest:
            return ReferenceChoice(None, "none", f"torch is not installed and the recorded reference is for other "
                                                 f"data ({recorded.data})")
        label = f"pytorch, recorded ({reference_path(candidate.spec.path).name}, {recorded.count} samples)"
        return ReferenceChoice(RecordedRef(label, recorded), "recorded")
    opened = _open_reference_spec(text, candidate=candidate, options=options, arch=arch)
    return ReferenceChoice(opened, opened.spec.kind)


def _reference_options(candidate: Opened, options: OpenOptions) -> OpenOptions:
    # The reference's head defaults to the candidate's class count (a checkpoint's own head wins).
    classes = options.num_classes or (candidate.manifest.num_classes if candidate.manifest else None)
    return OpenOptions(threads=options.threads, device=options.device, image_size=candidate.preprocess.crop,
                       num_classes=classes)


def _torch_from_manifest(candidate: Opened, manifest: Manifest, options: OpenOptions) -> Opened:
    """The PyTorch model rebuilt from the candidate's manifest."""
    from resnet_deploy.reference import reference_from_manifest

    check_torch_device(options.device)
    session = reference_from_manifest(manifest, candidate.spec.path, device=options.device, threads=options.threads)
    recorded = Weights.of(manifest)
    label = f"torch:{manifest.arch}:{recorded} (from the manifest)"
    return Opened(ModelSpec("torch", label, arch=manifest.arch, weights=recorded), session, candidate.preprocess,
                  "fp32", options.device, manifest.task)


def _open_reference_spec(text: str, *, candidate: Opened, options: OpenOptions, arch: str | None) -> Opened:
    """A reference named by a spec (``torch:...``, ``.onnx``, ``.plan``) or a checkpoint file."""
    ref_options = _reference_options(candidate, options)
    spec = parse_spec(text)
    if spec.kind != "checkpoint":
        return open_model(spec, options=ref_options)
    from resnet_deploy.weights import guess_arch, load_model, read_state_dict

    check_torch_device(options.device)
    state = read_state_dict(spec.path)
    arch = arch or (candidate.manifest.arch if candidate.manifest else None) or guess_arch(set(state))
    if arch is None:
        raise UsageError(f"{spec.path}: cannot tell its arch from its keys; pass `arch`")
    head = state.get("fc.weight")
    num_classes = options.num_classes or (None if head is None else int(head.shape[0]))
    del state
    checkpoint = Weights.parse(str(spec.path))
    loaded = load_model(arch, checkpoint, num_classes=num_classes)
    return open_torch(ModelSpec("torch", f"torch:{arch}:{checkpoint}", arch=arch, weights=checkpoint), loaded,
                      options=ref_options)

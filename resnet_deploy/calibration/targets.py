"""The INT8 targets and calibration methods: one table, so a new target is one row and one backend module.

A target is where the INT8 graph will run, and so how it is quantized: ``tensorrt`` (ModelOpt,
symmetric Q/DQ placed where TensorRT fuses it) or ``cpu`` (onnxruntime U8S8 QDQ). Each row says
which calibration methods its quantizer implements, what its unquantized layers may run in, what
the manifest says about it, which package versions key its calibration cache, and which backend
module quantizes and checks it: ``resnet_deploy.calibration.<name>`` with ``quantize_<name>`` and
``check_<name>_qdq``. This module imports no backend; the backends import it for their checks.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from resnet_deploy.calibration.readers import SetReader

#: activation range calibration methods, in the order the CLI offers them
METHODS = ("entropy", "max", "percentile")


@dataclass(frozen=True)
class Int8Target:
    name: str
    methods: tuple[str, ...]  # the calibration methods its quantizer implements
    high_precision: tuple[str, ...]  # what layers left unquantized may run in
    quantizer: str  # the manifest's details.quantizer
    activations: str  # the manifest's details.activations
    packages: tuple[str, ...]  # whose versions key its calibration cache

    def check_options(self, *, method: str, high_precision: str) -> None:
        """Raise UsageError unless this target's quantizer implements ``method`` and offers ``high_precision``."""
        from resnet_deploy.errors import UsageError

        if method not in METHODS:
            raise UsageError(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
        if method not in self.methods:
            others = [t.name for t in TARGETS.values() if method in t.methods]
            raise UsageError(f"`method` {method} is not supported for `target` {self.name}: its calibrators "
                             f"are {' and '.join(self.methods)} (use `target` {' or '.join(others)} for {method})")
        if high_precision not in self.high_precision:
            raise UsageError(f"`high_precision` {high_precision} is not offered by `target` {self.name} "
                             f"(it runs unquantized layers in {' or '.join(self.high_precision)})")

    def _backend(self) -> Any:
        return importlib.import_module(f"resnet_deploy.calibration.{self.name}")

    def quantize(self, parent: Path, reader: SetReader, output: Path, *, method: str, exclude: Sequence[str] = (),
                 high_precision: str = "fp32", variant: str | None = None, debug: bool = False) -> None:
        """Write ``parent`` quantized for this target to ``output``; ``exclude`` stays in ``high_precision``.

        ``variant``: a target-specific form (the cpu target's ``VARIANTS``); None for the target's default.
        """
        extra = {} if variant is None else {"variant": variant}
        getattr(self._backend(), f"quantize_{self.name}")(parent, reader, output, method=method, exclude=exclude,
                                                          high_precision=high_precision, debug=debug, **extra)

    def check(self, model: onnx.ModelProto, *, excluded: Sequence[str] = (), variant: str | None = None,
              float_outputs: bool = True) -> dict[str, int]:
        """Check the quantized graph's Q/DQ placement for this target (and ``variant``); counts of what it found.

        ``float_outputs``: no graph output may come from Q/DQ (logits, segmentation scores: a quantized
        range would clip them). A backbone's stage outputs are feature maps the next stage reads
        quantized as well; there the quantizers' Q/DQ on them is the INT8 graph, and the gate's
        per-output cosine measures it (``float_outputs=False``).
        """
        extra = {} if variant is None else {"variant": variant}
        return getattr(self._backend(), f"check_{self.name}_qdq")(model, excluded=excluded, float_outputs=float_outputs,
                                                                  **extra)


TARGETS: dict[str, Int8Target] = {t.name: t for t in (
    # ModelOpt's INT8 path knows two calibrators: "entropy", and anything else becomes MinMax
    # (symmetric, which is "max"). A percentile request would silently become max: refused instead.
    Int8Target("tensorrt", ("entropy", "max"), ("fp32", "fp16"), "ModelOpt ONNX PTQ (TensorRT Q/DQ placement)",
               "int8 symmetric per tensor", ("nvidia-modelopt", "onnxruntime-gpu", "onnxruntime")),
    Int8Target("cpu", METHODS, ("fp32",), "onnxruntime quantize_static (QDQ)", "uint8 asymmetric per tensor",
               ("onnxruntime-gpu", "onnxruntime")),
)}
TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)

"""The rule every deployment writer shares: deploy only artifacts whose accuracy gate held on real data.

An artifact is published by ``resnet-export`` only after its gate passed, and its manifest records
the parity measured then. Deployment refuses what cannot show that: a file without a sidecar
manifest, a manifest without parity, or parity measured only on synthetic images (an export run
without evaluation data checks the exporter, not the model's answers on real inputs). Engines carry
the parity of the ONNX they were built from under ``details.onnx_parity``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from resnet_deploy.errors import UsageError
from resnet_deploy.manifest import Manifest, manifest_path, read_manifest, require_classifier

#: the prefix of ``parity.data`` for the exporter's own check on random images
SYNTHETIC_DATA = "synthetic"


def recorded_parity(manifest: Manifest) -> dict[str, Any] | None:
    """The parity an artifact's publication was gated on: its own, else (engines) its ONNX parent's."""
    return manifest.parity or manifest.details.get("onnx_parity")


def gated_manifest(artifact: str | os.PathLike[str], *, allow_ungated: bool = False,
                   target: str = "this deployment configuration") -> Manifest:
    """The sidecar manifest of ``artifact``, refused unless it records a gate held on real data.

    ``allow_ungated`` accepts a manifest whose parity is missing or synthetic (never a missing
    manifest: without one nothing says how to feed the model). ``target`` names the configuration
    being made ("the Triton model configuration"): those are for classifiers, and other tasks are
    refused first.
    """
    path = Path(artifact)
    if not path.is_file():
        raise UsageError(f"{path}: no such artifact")
    manifest = read_manifest(path)
    if manifest is None:
        raise UsageError(f"{path}: no manifest beside it ({manifest_path(path).name}); "
                         "only artifacts published by resnet-export can be deployed")
    require_classifier(manifest, path, what=target)
    if allow_ungated:
        return manifest
    parity = recorded_parity(manifest)
    if not parity:
        raise UsageError(f"{path}: its manifest records no accuracy gate; `allow_ungated=True` deploys it anyway")
    data = str(parity.get("data", ""))
    if data.startswith(SYNTHETIC_DATA):
        raise UsageError(f"{path}: its accuracy was checked only on {data}, not on real data; export it with "
                         "evaluation data, or `allow_ungated=True` deploys it anyway")
    return manifest

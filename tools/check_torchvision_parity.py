"""Compare an exported ONNX (run through the manifest's preprocessing) with torchvision's own logits.

    resnet-export onnx --arch resnet50 --weights /tmp/tv50.pth --resize 232 -o /tmp/tv50.onnx
    python tools/check_torchvision_parity.py /tmp/tv50.onnx /tmp/tv50_logits.npz

The logits file comes from ``tools/torchvision_reference.py checkpoint``: torchvision's model and
its ImageClassification preset on the same photos. Exits 1 when the largest difference exceeds
1e-3 of the largest logit.
"""

from __future__ import annotations

import sys

import numpy as np

from resnet_deploy.runtime import open_session


def main(onnx_path: str, reference: str) -> int:
    ref = np.load(reference)
    with open_session(onnx_path, threads=2) as session:
        logits = session.run(session.prepare(list(ref["photos"])))
    diff = float(np.abs(logits - ref["logits"]).max())
    rel = diff / float(np.abs(ref["logits"]).max())
    same_top1 = bool((logits.argmax(1) == ref["logits"].argmax(1)).all())
    print(f"reference: {ref['versions']}; photos: {', '.join(p.rsplit('/', 1)[-1] for p in ref['photos'])}")
    print(f"max |logit diff| {diff:.3g} = {rel:.2e} of the largest logit; same top-1: {same_top1}")
    return 0 if rel <= 1e-3 and same_top1 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""DeepStream fidelity for a ResNet-50 at 224: untrained weights with BatchNorm statistics from real images.

No ImageNet-trained ResNet-50 can be downloaded here, and random BatchNorm statistics give
near-constant logits on which any preprocessing "agrees". So the untrained network (seed 0)
has its BatchNorm running statistics measured on real images (scikit-learn's digits train
split, through the manifest's preprocessing), which makes its logits depend on the input the
way a trained network's do. It is then exported, gated on the digits' held-out split, and
given to ``resnet-export deepstream``, whose output (and fidelity table) this prints.

    python benchmarks/deepstream_resnet50.py --work /tmp/ds50
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click


@click.command()
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the checkpoint, the ONNX and the DeepStream output (created).")
@click.option("--bn-images", type=click.IntRange(min=16), default=256, show_default=True,
              help="Real images the BatchNorm statistics are measured on.")
@click.option("--eval-count", type=click.IntRange(min=1), default=200, show_default=True,
              help="Held-out digits the DeepStream variant is gated and measured on (ResNet-50 on 2 cores is slow).")
def main(work: Path, bn_images: int, eval_count: int) -> None:
    import torch

    from resnet_deploy.data import normalize, open_source
    from resnet_deploy.manifest import Preprocess
    from resnet_deploy.models import build_model

    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model("resnet50", num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over every batch
    pp = Preprocess()
    source = open_source("digits:train", count=bn_images)
    model.train()
    with torch.no_grad():
        for batch in source.batches(pp, batch_size=32):
            model(torch.from_numpy(normalize(batch.images, pp)))
    model.eval()
    weights = work / "resnet50-bn-digits.pth"
    torch.save(model.state_dict(), weights)
    click.echo(f"BatchNorm statistics from {source.description}; wrote {weights}")
    onnx_path = work / "resnet50.onnx"
    run([sys.executable, "-m", "resnet_deploy.cli.export", "onnx", "--arch", "resnet50", "--weights", str(weights),
         "--num-classes", "10", "--eval-data", "digits", "-o", str(onnx_path), "--overwrite"])
    run([sys.executable, "-m", "resnet_deploy.cli.export", "deepstream", str(onnx_path), "--eval-data", "digits",
         "--eval-count", str(eval_count), "-o", str(work / "ds50"), "--overwrite"])


def run(cmd: list[str]) -> None:
    click.echo("$ " + " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)), err=True)
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()

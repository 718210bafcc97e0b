"""``--plot OUT.png``: throughput against batch size, and the per-iteration latency distribution.

matplotlib is imported here, lazily, with the Agg backend (no display needed); the PNG is written
atomically like every other output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resnet_deploy.benchmarks.report import Report


def plot_reports(reports: list[Report], path: str | os.PathLike[str]) -> Path:
    """Left: img/s against batch, one line per model. Right: latency per iteration (box plots), per model and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from resnet_deploy.publish import atomic_path

    fig, (ax_thr, ax_lat) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    data, labels = [], []
    for rep in reports:
        batches = [r.batch for r in rep.runs]
        ax_thr.plot(batches, [r.throughput_ips for r in rep.runs], marker="o", label=rep.model)
        for run in rep.runs:
            data.append(run.latencies_ms)
            labels.append(f"{rep.model}\nb{run.batch}" if len(reports) > 1 else f"batch {run.batch}")
    ax_thr.set_xscale("log", base=2)
    ax_thr.set(xlabel="batch size", ylabel="throughput (images/s)", title="Throughput")
    all_batches = sorted({r.batch for rep in reports for r in rep.runs})
    ax_thr.set_xticks(all_batches, [str(b) for b in all_batches])
    ax_thr.minorticks_off()
    ax_thr.set_ylim(bottom=0)
    ax_thr.grid(True, alpha=0.3)
    ax_thr.legend(fontsize="small")
    ax_lat.boxplot(data, whis=(1, 99), showfliers=False)  # whiskers at p1/p99, matching the table's p99
    ax_lat.set_xticks(range(1, len(labels) + 1), labels, fontsize="x-small", rotation=30 if len(reports) > 1 else 0)
    ax_lat.set(yscale="log", ylabel="latency per iteration (ms)", title="Latency (box p25-p75, whiskers p1-p99)")
    ax_lat.grid(True, axis="y", alpha=0.3)
    env = reports[0].environment
    fig.suptitle(f"{env.get('cpu') or reports[0].device}, {env.get('threads')} threads", fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


#: the mask colour of an ignored pixel (label 255)
IGNORE_RGB = (1.0, 1.0, 1.0)


def plot_overlay(rows, path: str | os.PathLike[str], *, num_classes: int, labels: list[str] | None = None) -> Path:
    """One row per image: the image, its ground truth (where given), then each model's class map over it.

    ``rows``: (image uint8 HxWx3, mask uint8 HxW or None, {model name: class map HxW}). Class 0
    (background) leaves the image visible; the others are coloured with a fixed palette, the same in
    every panel. A model after the first is titled with its pixel agreement with the first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from resnet_deploy.publish import atomic_path

    palette = np.asarray(plt.get_cmap("tab20").colors)[np.arange(max(num_classes, 1)) % 20]
    truth = any(mask is not None for _, mask, _ in rows)
    names = list(rows[0][2]) if rows else []
    cols = 1 + int(truth) + len(names)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.6 * len(rows)), squeeze=False,
                             constrained_layout=True)

    def blend(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
        out = image.astype(np.float64) / 255.0
        fg = (classes > 0) & (classes < num_classes)
        out[fg] = 0.35 * out[fg] + 0.65 * palette[classes[fg]]
        out[classes == 255] = IGNORE_RGB
        return out

    for r, (image, mask, maps) in enumerate(rows):
        panels = [("image", image.astype(np.float64) / 255.0)]
        if truth:
            panels.append(("ground truth", blend(image, mask) if mask is not None else np.ones_like(image, float)))
        first = maps[names[0]]
        for i, name in enumerate(names):
            title = name if i == 0 else f"{name}\nagrees on {float((maps[name] == first).mean()):.2%}"
            panels.append((title, blend(image, maps[name])))
        for ax, (title, picture) in zip(axes[r], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize="small")
            ax.set_axis_off()
    seen = sorted({int(c) for _, _, maps in rows for m in maps.values() for c in np.unique(m) if 0 < c < num_classes})
    if seen:
        handles = [matplotlib.patches.Patch(color=palette[c], label=labels[c] if labels else str(c)) for c in seen]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10), fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)

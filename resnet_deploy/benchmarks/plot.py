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

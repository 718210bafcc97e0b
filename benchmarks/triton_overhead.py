"""Serving overhead: the same ONNX through the bundled Triton server vs the in-process runtime Session.

ResNet-18 (the digits demo, 32x32) and ResNet-50 (224x224, untrained: speed does not depend on
the weights) at concurrency 1 and 8, one image per request, in one run: for each model and level,
rounds alternate between Triton (HTTP, dynamic batching, one CPU instance with the same intra-op
threads) and the in-process Session shared by the same number of client threads. Figures are
medians over rounds; every served answer is checked against the in-process logits. The client runs
on the same cores as the server: that contention is part of what serving costs on one host.

    python benchmarks/triton_overhead.py --threads 2 --duration 3 --rounds 3
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click


def export(folder: Path, arch: str) -> Path:
    from resnet_deploy.data import open_source
    from resnet_deploy.export.onnx import OnnxConfig, onnx_from_torch
    from resnet_deploy.weights import load_model

    path = folder / f"{arch}.onnx"
    if arch == "resnet18":  # the demo, gated on the held-out digits
        onnx_from_torch(load_model("resnet18", "demo"), path, eval_source=open_source("digits", split="eval"))
    else:  # untrained (seed 0): the exporter's own parity check, on random images
        onnx_from_torch(load_model(arch, None), path, config=OnnxConfig(max_batch=16))
    return path


@click.command()
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Intra-op threads of both the served instance and the in-process Session.")
@click.option("--duration", type=click.FloatRange(min=0.5), default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Alternating rounds; medians.")
@click.option("--concurrency", "levels", default="1,8", show_default=True, help="Concurrency levels.")
@click.option("--arch", "archs", multiple=True, default=("resnet18", "resnet50"), show_default=True)
@click.option("--env", "env_dir", default=None, help="Serving environment (default: resnet-serve setup's).")
def main(threads, duration, rounds, levels, archs, env_dir):
    from resnet_deploy.benchmarks.environment import environment
    from resnet_deploy.benchmarks.report import markdown
    from resnet_deploy.data import open_source
    from resnet_deploy.runtime import open_session
    from resnet_deploy.serve.client import TritonSession
    from resnet_deploy.serve.env import find_env
    from resnet_deploy.serve.loadgen import LoadConfig, data_inputs, run_level
    from resnet_deploy.serve.server import ServerOptions, serve_artifacts

    levels = [int(v) for v in levels.split(",")]
    env = find_env(env_dir)
    t_start = time.perf_counter()
    rows = []
    worst_rel = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        click.echo(f"exporting {', '.join(archs)} ...", err=True)
        models = {arch: export(folder, arch) for arch in archs}
        server = serve_artifacts(list(models.values()), options=ServerOptions(http_port=0, grpc_port=0),
                                 cpu_cores=threads, allow_ungated=True, env=env)
        with server:
            for arch, path in models.items():
                with open_session(path, threads=threads) as local:
                    size = local.manifest.preprocess.crop
                    inputs = data_inputs(local, open_source("digits", split="eval", count=64), batch=1)
                    for level in levels:
                        config = LoadConfig(concurrency=(level,), duration_s=duration, warmup_requests=2)
                        probe = TritonSession(server.http_url, path.stem)
                        got: dict[str, list] = {"triton": [], "local": []}
                        for _ in range(rounds):
                            got["triton"].append(run_level(lambda: TritonSession(server.http_url, path.stem), inputs,
                                                           level, config=config, stats=probe.statistics))
                            got["local"].append(run_level(lambda: local, inputs, level, config=config, shared=True))
                        probe.close()
                        for run in got["triton"]:
                            if run.errors:
                                raise click.ClickException(f"{arch}: {run.errors} requests failed: {run.first_error}")
                            worst_rel = max(worst_rel, run.parity["max_rel_diff"])

                        def med(runs, what):
                            return statistics.median(what(r) for r in runs)

                        ips = {k: med(v, lambda r: r.throughput_ips) for k, v in got.items()}
                        p50 = {k: med(v, lambda r: float(r.to_dict()["latency_ms"]["p50"])) for k, v in got.items()}
                        batch = med(got["triton"], lambda r: r.server["mean_batch"] or 0.0)
                        others = med(got["local"], lambda r: r.other_load_cores or 0.0)  # the server counts as "other" in triton runs
                        rows.append([f"{arch} ({size}x{size})", level, round(ips["local"], 1), round(p50["local"], 2),
                                     round(ips["triton"], 1), round(p50["triton"], 2),
                                     round(ips["triton"] / ips["local"], 2), round(p50["triton"] - p50["local"], 2),
                                     round(batch, 2), round(others, 2)])
                        click.echo(f"{arch} concurrency {level}: in-process {ips['local']:.1f} img/s, "
                                   f"triton {ips['triton']:.1f} img/s", err=True)
    env_info = environment(threads=threads)
    headers = ["model", "concurrency", "in-process img/s", "in-process p50 ms", "triton img/s", "triton p50 ms",
               "triton / in-process", "p50 added ms", "server mean batch",
               "others' cores"]
    click.echo(markdown(headers, rows))
    click.echo("\nothers' cores: CPU that other processes took during the in-process rounds (median); above about "
               "0.2 the figures are disturbed.")
    click.echo(f"\n{env_info.get('cpu') or '?'}, {threads} intra-op threads each side, 1 image per request, "
               f"HTTP, medians of {rounds} alternating rounds of {duration:g} s; tritonserver 2.51 (nvidia-pytriton "
               f"0.7.0, Python backend, 1 CPU instance); every served answer matched the in-process logits "
               f"(max difference {worst_rel:.1e} of the largest logit); load average "
               f"{', '.join(map(str, env_info.get('load_avg', [])))}; {time.perf_counter() - t_start:.0f} s in all.")


if __name__ == "__main__":
    main()

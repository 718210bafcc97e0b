"""Serving commands: ``resnet-export triton``, ``resnet-serve`` (setup, triton) and ``resnet-bench triton``.

The export and bench groups register their command from here (``cli.add_command``), so serving
lives in one module; the work is in ``resnet_deploy.deploy.triton`` and ``resnet_deploy.serve``.
"""

from __future__ import annotations

from pathlib import Path

import click

from resnet_deploy.cli.common import (
    CONTEXT_SETTINGS,
    Group,
    batch_list,
    debug_option,
    group_setup,
    overwrite_option,
    table,
    thread_count,
)


def _repository_options(f):
    for option in reversed([
        click.option("--max-batch", type=click.IntRange(min=1), default=None, metavar="N",
                     help="max_batch_size [default: the artifact's largest batch; the engine profile's for plans]."),
        click.option("--preferred-batch", "preferred", callback=batch_list, default=None, metavar="8,64",
                     help="Dynamic batcher's preferred sizes [default: the profile's opt and max batch]."),
        click.option("--queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True,
                     help="Dynamic batcher's max_queue_delay_microseconds."),
        click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Model instances (instance_group count)."),
        click.option("--cpu-cores", type=click.IntRange(min=1), default=None, metavar="N",
                     help="CPU instances share N cores: ONNX Runtime intra-op threads = N // instances "
                          "[default: ONNX Runtime's own choice per instance]."),
        click.option("--allow-ungated", is_flag=True,
                     help="Deploy an artifact whose manifest records no accuracy gate on real data."),
    ]):
        f = option(f)
    return f


# ----------------------------------------------------------------------------- resnet-export triton


@click.command("triton")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="ARTIFACT...")
@click.option("-o", "--output", "repo", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model repository folder (created; models already in it are kept).")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="Model name per artifact, in order (repeat) [default: the file name, dots as '_'].")
@click.option("--backend", type=click.Choice(["native", "python"]), default="native", show_default=True,
              help="native: onnxruntime_onnx / tensorrt_plan; python: resnet-deploy's Session in Triton's "
                   "Python backend (needs resnet-deploy, numpy<2 and onnxruntime in the server's Python).")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default=None,
              help="Instance kind [default: gpu; cpu for INT8-for-CPU ONNX and the python backend].")
@_repository_options
@click.option("--no-warmup", is_flag=True, help="Write no model_warmup.")
@click.option("--versions", type=click.IntRange(min=1), default=1, show_default=True,
              help="version_policy: serve the latest N versions.")
@overwrite_option
@debug_option
def triton_export_cmd(artifacts, repo, names, backend, kind, max_batch, preferred, queue_delay_us, instances, cpu_cores,
                      allow_ungated, no_warmup, versions, overwrite, debug):
    """A Triton model repository from gated artifacts, each configured from its manifest.

    \b
    Example:
      resnet-export triton out/resnet18.onnx out/resnet18.int8-cpu.onnx -o models
      tritonserver --model-repository=models     # on a GPU host: see models/README.md
    """
    from resnet_deploy.deploy.triton import TritonOptions, plan_repository, write_repository

    options = TritonOptions(backend=backend, max_batch=max_batch, preferred=tuple(preferred) if preferred else None,
                            queue_delay_us=queue_delay_us, instances=instances, kind=kind, cpu_cores=cpu_cores,
                            warmup=not no_warmup, versions=versions, allow_ungated=allow_ungated)
    entries = plan_repository(artifacts, names=list(names) or None, options=options)
    write_repository(entries, repo, overwrite=overwrite, host_threads=cpu_cores)
    for e in entries:
        g = e.config["instance_group"][0]
        click.echo(f"wrote {repo / e.name} ({e.config.get('platform') or 'python'}, max_batch_size "
                   f"{e.config['max_batch_size']}, preferred {e.config['dynamic_batching']['preferred_batch_size']}, "
                   f"{g['count']} x {g['kind']})")
        for note in e.notes:
            click.echo(f"  note: {note}")
    click.echo(f"serve it: see {repo / 'README.md'}")


def pipeline_triton_option(f):
    return click.option("--triton", "triton_repo", is_flag=True,
                        help="Also write a Triton model repository of every artifact to OUT/triton.")(f)


def pipeline_triton_check(out_dir: Path, *, overwrite: bool, task: str) -> None:
    """Before the pipeline's work: refuse an existing OUT/triton without --overwrite, and a segmenter
    (``task``: the pipeline's, resolved)."""
    from resnet_deploy.publish import exists_error

    if task != "classify":
        raise click.BadParameter("Triton model configurations are for classifiers so far (docs/tasks.md)",
                                 param_hint="--triton")
    if (out_dir / "triton").exists() and not overwrite:
        raise exists_error(out_dir / "triton")


def pipeline_triton_write(result, *, overwrite: bool) -> None:
    """After the pipeline: the repository of every artifact it published."""
    from resnet_deploy.deploy.triton import plan_repository, write_repository

    artifacts = [result.out_dir / s.artifact for s in result.stages if s.status == "ok" and s.artifact]
    repo = write_repository(plan_repository(artifacts), result.out_dir / "triton", overwrite=overwrite)
    click.echo(f"triton: {repo} ({len(artifacts)} models; see {repo / 'README.md'})")


# ----------------------------------------------------------------------------- resnet-serve


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS)
@debug_option
def serve_cli(debug: bool) -> None:
    """Serve artifacts from the real Triton server that nvidia-pytriton bundles (KServe v2 HTTP and gRPC).

    \b
    Example:
      resnet-serve setup                       # once: the server's Python side (numpy<2)
      resnet-serve triton out/resnet18.onnx    # until Ctrl-C
    """
    group_setup(debug)


def _env_option(f):
    return click.option("--env", "env_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Serving environment folder [default: $RESNET_DEPLOY_SERVE_ENV, else in the user cache].")(f)


@serve_cli.command("setup")
@_env_option
@debug_option
def setup_cmd(env_dir, debug):
    """Make the serving environment: nvidia-pytriton, numpy<2, onnxruntime (CPU), Pillow; about 200 MB."""
    from resnet_deploy.serve.env import create_env

    env = create_env(env_dir, log=lambda m: click.echo(m, err=True))
    click.echo(f"serving environment ready: {env.root} (Python {env.python_version}, {env.tritonserver})")


@serve_cli.command("triton")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="ARTIFACT...")
@click.option("--name", "names", multiple=True, metavar="NAME", help="Model name per artifact, in order (repeat).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--allow-remote", is_flag=True, help="Allow an address other machines can reach (no authentication!).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port.")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="0: a free port.")
@_repository_options
@_env_option
@debug_option
def serve_triton_cmd(artifacts, names, host, allow_remote, http_port, grpc_port, max_batch, preferred, queue_delay_us,
                     instances, cpu_cores, allow_ungated, env_dir, debug):
    """Serve ARTIFACT(s) (ONNX) through Triton's dynamic batcher, each model our runtime Session in the
    Python backend, on the CPU; until SIGINT/SIGTERM.

    \b
    Example:
      resnet-serve triton out/resnet18.onnx --instances 2 --cpu-cores 2
      curl localhost:8000/v2/models/resnet18
    """
    import sys

    from resnet_deploy.serve.env import find_env
    from resnet_deploy.serve.server import ServerOptions, check_host, serve_artifacts, serve_until_signal

    check_host(host, allow_remote=allow_remote)
    env = find_env(env_dir)
    server = serve_artifacts(artifacts, names=list(names) or None,
                             options=ServerOptions(host=host, http_port=http_port, grpc_port=grpc_port,
                                                   allow_remote=allow_remote),
                             instances=instances, cpu_cores=cpu_cores, preferred=tuple(preferred) if preferred else None,
                             queue_delay_us=queue_delay_us, max_batch=max_batch, allow_ungated=allow_ungated, env=env)
    models = ", ".join(server.model_states())

    def ready() -> None:
        click.echo(f"tritonserver ready (pid {server.process.pid}): models {models}")
        click.echo(f"  HTTP  http://{server.http_url}/v2/models/<model>   (health: /v2/health/ready)")
        click.echo(f"  gRPC  {server.grpc_url}")
        click.echo("Ctrl-C or SIGTERM stops it.")
        sys.stdout.flush()

    code = serve_until_signal(server, on_stop=lambda m: click.echo(m, err=True), on_ready=ready)
    click.echo(f"stopped (tritonserver exit code {server.process.returncode})", err=True)
    raise SystemExit(code)


def serve_main() -> None:
    serve_cli(prog_name="resnet-serve")


# ----------------------------------------------------------------------------- resnet-bench triton


@click.command("triton")
@click.option("--url", required=True, metavar="HOST:PORT", help="The server (HTTP port for http, gRPC port for grpc).")
@click.option("--model", required=True, metavar="NAME", help="Model name on the server.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The served artifact (e.g. REPO/NAME/1/model.onnx): its manifest preprocesses --data and its "
                   "in-process Session gives the answers every served answer is compared with.")
@click.option("--data", default=None, metavar="SRC", help="Image folder, .npy/.npz or 'digits': the requests.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N", help="A seeded subset of --data.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per request.")
@click.option("--concurrency", callback=batch_list, default="1,4,16", show_default=True, metavar="1,4,16",
              help="Concurrent clients per level (each keeps one request in flight).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True, metavar="S",
              help="Seconds per level.")
@click.option("--requests", type=click.IntRange(min=1), default=None, metavar="N",
              help="Exactly N requests per level instead of --duration.")
@click.option("--threads", type=click.IntRange(min=1), callback=thread_count, default=None, help="Threads of the in-process Session.")
@click.option("--max-rel-diff", type=click.FloatRange(min=0), default=None, metavar="X",
              help="Gate: exit 1 if a served logit differs from the in-process one by more than X of the largest.")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=None, metavar="PERCENT",
              help="Gate: exit 1 if fewer top-1 answers than this agree with the in-process Session.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="OUT",
              help="Write the report as JSON (the benchmark schema, runs per concurrency level).")
@debug_option
def triton_bench_cmd(url, model, protocol, artifact, data, count, batch, concurrency, duration, requests, threads,
                     max_rel_diff, min_agreement, json_out, debug):
    """Load a model on a Triton server with concurrent clients, perf_analyzer-style, and check its answers.

    Exit 1 when a request failed or a gate was missed.

    \b
    Example:
      resnet-bench triton --url localhost:8000 --model resnet18 --artifact models/resnet18/1/model.onnx \\
        --data digits --concurrency 1,8 --batch 4
    """
    from resnet_deploy.benchmarks.report import write_json
    from resnet_deploy.data import open_source
    from resnet_deploy.errors import GateError
    from resnet_deploy.publish import check_destination
    from resnet_deploy.serve.loadgen import LoadConfig, load_rows, triton_report

    if json_out is not None:
        check_destination(json_out, overwrite=True)
    if count is not None and data is None:
        raise click.BadParameter("--count needs --data", param_hint="--count")
    config = LoadConfig(concurrency=tuple(concurrency), duration_s=duration, requests=requests)
    source = open_source(data, split="eval", count=count) if data else None
    report = triton_report(url, model, protocol=protocol, artifact=artifact, source=source, batch=batch,
                           config=config, threads=threads)
    env = report.environment
    click.echo(f"{report.model}: {report.device}, {report.precision}; client on {env.get('cpu') or '?'}, "
               f"load {', '.join(map(str, env.get('load_avg', [])))}; requests: {report.timing['inputs']}")
    click.echo(table(*load_rows(report.runs)))
    par = report.parity
    if report.accuracy is not None and report.accuracy["top1"] is not None:
        click.echo(f"accuracy of the served answers on {report.accuracy['data']}: top-1 {report.accuracy['top1']:.2%}")
    if par is not None:
        click.echo(f"parity vs {par['reference']}: {par['count']} answers, agreement {par['top1_agreement']:.2%}, "
                   f"max |diff| {par['max_abs_diff']:.3g} ({par['max_rel_diff']:.1e} of max logit), "
                   f"min cosine {par['cosine_min']:.6f}")
    if json_out is not None:
        write_json(json_out, report.to_dict())
        click.echo(f"wrote {json_out}")
    problems = []
    if lost := sum(r.errors for r in report.runs):
        first = next(r.first_error for r in report.runs if r.first_error)
        problems.append(f"{lost} requests failed (first: {first})")
    if par is not None and max_rel_diff is not None and not par["max_rel_diff"] <= max_rel_diff:
        problems.append(f"max logit difference {par['max_rel_diff']:.2e} of the largest > {max_rel_diff:.0e}")
    if par is not None and min_agreement is not None and not par["top1_agreement"] * 100 >= min_agreement:
        problems.append(f"top-1 agreement {par['top1_agreement']:.2%} < {min_agreement}%")
    if (max_rel_diff is not None or min_agreement is not None) and par is None:
        problems.append("the gates need --artifact (the answers to compare with)")
    if problems:
        raise GateError(f"{model}: " + "; ".join(problems))

"""A model on any Triton server as a runtime Session: ``run(batch)`` is one KServe v2 request.

So everything that takes a Session (parity, the benchmark harness, ``classify``) takes a served
model too. The input's name, dtype and shape come from the server's model metadata, the batch
limit from its configuration. One client connection per Session: open one per thread.
Needs ``tritonclient`` (the ``serve`` extra); imported only here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_deploy.errors import DeployError, MissingDependencyError, UsageError
from resnet_deploy.manifest import Manifest
from resnet_deploy.runtime.session import Session

#: KServe v2 datatypes <-> the runtime's dtypes
V2_DTYPES = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8"}
INSTALL = "pip install 'resnet-deploy[serve]' (tritonclient)"


def _module(protocol: str):
    if protocol not in ("http", "grpc"):
        raise UsageError(f"protocol must be http or grpc, got {protocol!r}")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as exc:
        raise MissingDependencyError(f"tritonclient[{protocol}] is not installed: {INSTALL} ({exc})") from exc
    return module


def strip_scheme(url: str) -> str:
    """tritonclient takes host:port; accept http://host:port too."""
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/")
    return url.rstrip("/")


class TritonSession(Session):
    """``model`` on the Triton server at ``url`` (host:port), spoken to over ``protocol`` ("http" or "grpc")."""

    backend = "triton"

    def __init__(self, url: str, model: str, *, protocol: str = "http", manifest: Manifest | None = None,
                 timeout_s: float = 60.0) -> None:
        self._mod = _module(protocol)
        self.url = strip_scheme(url)
        self.model = model
        self.protocol = protocol
        self.manifest = manifest
        self._timeout_s = timeout_s
        try:
            if protocol == "http":
                self.client = self._mod.InferenceServerClient(self.url, connection_timeout=timeout_s,
                                                              network_timeout=timeout_s)
                meta = self.client.get_model_metadata(model)
                config = self.client.get_model_config(model)
            else:
                self.client = self._mod.InferenceServerClient(self.url)
                meta = self.client.get_model_metadata(model, as_json=True)
                config = self.client.get_model_config(model, as_json=True)["config"]
        except Exception as exc:  # tritonclient raises InferenceServerException and socket errors
            raise DeployError(f"{self.url}: cannot reach model {model!r} ({_first_line(exc)})") from exc
        inputs, outputs = meta["inputs"], meta["outputs"]
        if len(inputs) != 1 or not outputs:
            raise UsageError(f"{model}: expected one input and a logits output, found {len(inputs)} and {len(outputs)}")
        self.input_name = inputs[0]["name"]
        self._v2_dtype = inputs[0]["datatype"]
        if self._v2_dtype not in V2_DTYPES:
            raise UsageError(f"{model}: input datatype {self._v2_dtype} is not FP32, FP16 or UINT8")
        self.input_dtype = V2_DTYPES[self._v2_dtype]
        self.max_batch = int(config.get("max_batch_size", 0)) or None
        shape = [int(d) for d in inputs[0]["shape"]]
        self.sample_shape = tuple(None if d < 0 else d for d in (shape[1:] if self.max_batch else shape))
        self.output_name = outputs[0]["name"]
        self.thread_safe = False

    @property
    def description(self) -> str:
        return f"triton {self.protocol}://{self.url} model {self.model}"

    def request(self, batch: np.ndarray, *, dtype: str | None = None) -> np.ndarray:
        """Send ``batch`` as it is (no local checks: the server's own checks answer) and return the logits."""
        x = self._mod.InferInput(self.input_name, list(batch.shape), dtype or self._v2_dtype)
        x.set_data_from_numpy(batch)
        out = self._mod.InferRequestedOutput(self.output_name)
        try:
            answer = self.client.infer(self.model, [x], outputs=[out], **self._timeout_kw())
        except Exception as exc:
            raise DeployError(f"{self.model}: {_first_line(exc)}") from exc
        return answer.as_numpy(self.output_name)

    def _timeout_kw(self) -> dict[str, Any]:
        return {"client_timeout": self._timeout_s} if self.protocol == "grpc" else {}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.request(batch)

    def statistics(self) -> dict[str, Any]:
        """The model's entry of Triton's statistics endpoint (all versions summed)."""
        try:
            stats = (self.client.get_inference_statistics(self.model) if self.protocol == "http"
                     else self.client.get_inference_statistics(self.model, as_json=True))
        except Exception as exc:
            raise DeployError(f"{self.model}: statistics unavailable ({_first_line(exc)})") from exc
        return server_stats(stats.get("model_stats", []))

    def close(self) -> None:
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()


def server_stats(model_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and nanosecond totals (queue, compute input/infer/output, success, fail) summed over versions."""
    out: dict[str, Any] = {"inference_count": 0, "execution_count": 0}
    for entry in model_stats:
        out["inference_count"] += int(entry.get("inference_count", 0))
        out["execution_count"] += int(entry.get("execution_count", 0))
        for key, value in (entry.get("inference_stats") or {}).items():
            slot = out.setdefault(key, {"count": 0, "ns": 0})
            slot["count"] += int(value.get("count", 0))
            slot["ns"] += int(value.get("ns", 0))
    return out


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the server did between two :func:`server_stats`: per-request mean times in ms, and batching."""
    def d(key: str, field: str) -> int:
        return int((after.get(key) or {}).get(field, 0)) - int((before.get(key) or {}).get(field, 0))

    success = d("success", "count")
    out: dict[str, Any] = {"requests": success, "failed": d("fail", "count"),
                           "inferences": after["inference_count"] - before["inference_count"],
                           "executions": after["execution_count"] - before["execution_count"]}
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        count = d(key, "count")
        out[f"{key}_ms"] = d(key, "ns") / count / 1e6 if count else None
    out["mean_batch"] = out["inferences"] / out["executions"] if out["executions"] else None
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

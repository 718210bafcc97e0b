"""nvinfer's documented preprocessing, in numpy, driven by a written nvinfer configuration file.

What Gst-nvinfer does to a frame (primary mode) or an object crop (secondary mode) before
TensorRT sees it, as its documentation and sources describe it:

1. the source rectangle's left/top are rounded up and its width/height down to even pixels;
2. it is scaled to the network size (``infer-dims``) with ``scaling-filter`` into an 8-bit
   RGBA buffer: stretched to fill it, or with ``maintain-aspect-ratio=1`` scaled to fit and
   padded with black at the right/bottom (centered with ``symmetric-padding=1``);
3. ``y = net-scale-factor * (x - offsets[c])`` per channel, in the order ``model-color-format``
   names (0 RGB, 1 BGR), laid out as ``network-input-order`` says (0 NCHW, 1 NHWC).

The scaler is emulated, not copied: NVIDIA does not publish the GPU/VIC kernels. Bilinear is
the two-tap half-pixel-centre interpolation a GPU texture unit (and OpenCV's INTER_LINEAR)
performs, with no antialiasing when shrinking; nearest is the sample under each output pixel
centre; the result is rounded to 8 bits, as nvinfer's RGBA buffer holds. Filters 2..5 (cubic,
supersampling, Lanczos and VIC taps) are not emulated and are refused.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass

import numpy as np

from resnet_deploy.deploy.nvinfer_keys import parse_value, problems
from resnet_deploy.errors import UsageError

FILTER_NEAREST, FILTER_BILINEAR, FILTER_DEFAULT = 0, 1, 6  # NvBufSurfTransform_Inter; 6 is GPU nearest


def read_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``[property]`` group of an nvinfer configuration file, checked against nvinfer's key table."""
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",), inline_comment_prefixes=None,
                                       interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in GLib key files
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise UsageError(f"{path}: not a readable nvinfer configuration ({exc})") from exc
    if not parser.has_section("property"):
        raise UsageError(f"{path}: no [property] group")
    props = dict(parser.items("property"))
    if found := problems(props):
        raise UsageError(f"{path}: {found[0]}")
    return props


@dataclass(frozen=True)
class NvinferPreprocess:
    """The preprocessing one nvinfer configuration asks for."""

    width: int
    height: int
    scale: float
    offsets: tuple[float, float, float]
    color_format: int = 0  # 0 RGB, 1 BGR
    input_order: int = 0  # 0 NCHW, 1 NHWC
    maintain_aspect_ratio: bool = False
    symmetric_padding: bool = False
    scaling_filter: int = FILTER_DEFAULT

    @classmethod
    def from_config(cls, path: str | os.PathLike[str]) -> NvinferPreprocess:
        """Read the keys that decide preprocessing from the written file, with nvinfer's defaults."""
        props = read_properties(path)

        def get(key: str, default: object) -> object:
            return parse_value(key, props[key]) if key in props else default

        if "infer-dims" not in props:
            raise UsageError(f"{path}: no infer-dims (the network size this emulation scales to)")
        channels, height, width = get("infer-dims", None)
        color = get("model-color-format", 0)
        if channels != 3 or color not in (0, 1):
            raise UsageError(f"{path}: only 3-channel RGB/BGR networks are emulated (infer-dims {channels}, "
                             f"model-color-format {color})")
        offsets = tuple(get("offsets", [0.0, 0.0, 0.0]))
        if len(offsets) != 3:
            raise UsageError(f"{path}: offsets has {len(offsets)} entries for 3 channels (nvinfer refuses this)")
        filt = get("scaling-filter", FILTER_DEFAULT)
        if filt not in (FILTER_NEAREST, FILTER_BILINEAR, FILTER_DEFAULT):
            raise UsageError(f"{path}: scaling-filter={filt} is not emulated (0 nearest, 1 bilinear, 6 default)")
        return cls(width=width, height=height, scale=float(get("net-scale-factor", 1.0)), offsets=offsets,
                   color_format=color, input_order=get("network-input-order", 0),
                   maintain_aspect_ratio=get("maintain-aspect-ratio", False),
                   symmetric_padding=get("symmetric-padding", False), scaling_filter=filt)

    def scaled(self, frame: np.ndarray) -> np.ndarray:
        """Steps 1-2: uint8 HWC RGB frame (or object crop) -> uint8 (height, width, 3) network-size RGB."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise UsageError(f"frames must be uint8 HWC RGB, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2  # GST_ROUND_DOWN_2 of the source size
        if h < 2 or w < 2:
            raise UsageError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small for nvinfer (2x2 at least)")
        src = frame[:h, :w]
        out_w, out_h = self.width, self.height
        left = top = 0
        if self.maintain_aspect_ratio:
            fit_h = out_w * h / w  # nvinfer: the destination height if the width fills, else the width
            if fit_h <= out_h:
                out_h = int(fit_h)
            else:
                out_w = int(out_h * w / h)
            if self.symmetric_padding:
                left, top = (self.width - out_w) // 2, (self.height - out_h) // 2
        canvas = np.zeros((self.height, self.width, 3), dtype=np.uint8)  # black padding
        canvas[top : top + out_h, left : left + out_w] = _resize(src, out_w, out_h, self.scaling_filter)
        return canvas

    def tensor(self, frames: list[np.ndarray]) -> np.ndarray:
        """All three steps for a batch: what TensorRT receives, float32 NCHW (or NHWC)."""
        x = np.stack([self.scaled(f) for f in frames]).astype(np.float32)
        if self.color_format == 1:
            x = x[..., ::-1]
        x = np.float32(self.scale) * (x - np.asarray(self.offsets, dtype=np.float32))
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.input_order == 0 else x)


def _resize(src: np.ndarray, out_w: int, out_h: int, filt: int) -> np.ndarray:
    h, w = src.shape[:2]
    if (w, h) == (out_w, out_h):
        return src
    if filt in (FILTER_NEAREST, FILTER_DEFAULT):
        ys = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
        xs = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
        return src[ys][:, xs]
    y0, y1, fy = _taps(h, out_h)
    x0, x1, fx = _taps(w, out_w)
    img = src.astype(np.float32)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap bilinear sources and weights for each output pixel (half-pixel centres, edges clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


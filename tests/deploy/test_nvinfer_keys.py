"""The nvinfer key table catches what nvinfer would silently ignore or refuse."""

from __future__ import annotations

import pytest

from resnet_deploy.deploy.nvinfer_keys import KEYS, SOURCE_CODE, SOURCE_URL, problems

# Keys NVIDIA's own classifier and detector sample configurations use (DeepStream samples/configs):
# every one must be known, or the table is incomplete.
SAMPLE_KEYS = ["gpu-id", "net-scale-factor", "offsets", "onnx-file", "model-engine-file", "labelfile-path",
               "int8-calib-file", "batch-size", "network-mode", "num-detected-classes", "interval", "gie-unique-id",
               "process-mode", "network-type", "model-color-format", "operate-on-gie-id", "operate-on-class-ids",
               "classifier-async-mode", "classifier-threshold", "input-object-min-width", "input-object-min-height",
               "cluster-mode", "maintain-aspect-ratio", "symmetric-padding", "infer-dims", "output-blob-names",
               "secondary-reinfer-interval", "scaling-filter", "scaling-compute-hw", "network-input-order"]


def test_table_names_its_source():
    assert SOURCE_URL.startswith("https://docs.nvidia.com/") and "gstnvinfer_property_parser" in SOURCE_CODE


def test_sample_keys_are_known():
    assert [k for k in SAMPLE_KEYS if k not in KEYS] == []


@pytest.mark.parametrize("props, words", [
    ({"net-scale-facter": "1"}, "not a Gst-nvinfer key"),
    ({"network-mode": "4"}, "accepts only 0, 1, 2, 3"),
    ({"network-type": "5"}, "accepts only"),
    ({"batch-size": "0"}, "below nvinfer's minimum"),
    ({"batch-size": "2048"}, "above nvinfer's maximum 1024"),
    ({"offsets": "1;2;3;4;5"}, "5 entries"),
    ({"infer-dims": "3;224"}, "2 entries"),
    ({"maintain-aspect-ratio": "yes"}, "not a valid bool"),
    ({"scaling-filter": "7"}, "accepts only"),
    ({"model-color-format": "3"}, "accepts only 0, 1, 2"),
    ({"classifier-threshold": "-0.1"}, "below"),
    ({"gie-unique-id": "0"}, "below"),
    ({"net-scale-factor": "one"}, "not a valid float"),
])
def test_invalid_values_are_named(props, words):
    found = problems(props)
    assert len(found) == 1 and words in found[0]


def test_valid_values_pass():
    assert problems({"network-mode": "3", "offsets": "123.675;116.28;103.53", "infer-dims": "3;224;224",
                     "maintain-aspect-ratio": "true", "symmetric-padding": "0", "batch-size": "1024",
                     "operate-on-class-ids": "0;2", "output-blob-names": "probs"}) == []

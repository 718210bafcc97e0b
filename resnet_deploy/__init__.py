"""resnet-deploy: ResNet -> ONNX / FP16 / INT8 / TensorRT, with parity proven against PyTorch.

Nothing heavy is imported here: ``resnet_deploy.runtime`` must load on a Jetson without torch.
"""

__version__ = "0.1.0"

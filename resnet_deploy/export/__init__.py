"""Export stages: torch -> ONNX (``onnx``), FP16 (``fp16``), INT8 (``int8``), TensorRT engines (``tensorrt``).

``stage`` is the skeleton the stages derived from the FP32 ONNX share; ``artifact`` publishes ONNX.
"""

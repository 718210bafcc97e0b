"""Export stages: torch -> ONNX (``onnx``), FP16 (``fp16``), TensorRT engines (``tensorrt``)."""

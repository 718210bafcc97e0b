"""INT8 calibration: real data in, explicit Q/DQ out, held to an accuracy gate.

``readers`` spools a DataSource once and serves it as onnxruntime's CalibrationDataReader;
``targets`` is the table of INT8 targets and calibration methods, and names each target's backend:
``tensorrt`` (ModelOpt, TensorRT's Q/DQ placement) and ``cpu`` (onnxruntime U8S8) quantize;
``gate`` measures parity against the reference and keeps the layers ``sensitivity`` ranks
highest in high precision until the gate holds; ``cache`` reuses results; ``workspace`` keeps
the tools' files and output contained. ``resnet_deploy.export.int8`` publishes the result.
Nothing heavy is imported here.
"""

"""The README CPU table machinery: build, interleaved rounds, medians, speed-ups, JSON and Markdown."""

from __future__ import annotations

import json

from resnet_deploy import cpu_table as ct


def test_small_table_end_to_end(tmp_path, monkeypatch):
    # FP32 rows only: the FP16/INT8 stages have their own tests; this checks the table around them.
    monkeypatch.setattr(ct, "VARIANTS", ct.VARIANTS[:1])
    config = ct.TableConfig(threads=1, rounds=2, duration_s=0.05, warmup_s=0, min_iterations=2,
                            archs=("resnet18",), batches=(1, 2), image_size=32)
    logged = []
    result = ct.cpu_table(tmp_path, config=config, log=logged.append)
    torch_row, ort_row = result.rows
    assert (torch_row.runtime, ort_row.runtime) == ("pytorch eager", "onnxruntime")
    assert all(len(row.throughput[b]) == 2 for row in result.rows for b in (1, 2))
    lines = result.markdown.splitlines()
    assert lines[0] == ("| model | runtime | precision | batch 1 img/s | batch 1 p50 ms | batch 2 img/s | "
                        "batch 2 p50 ms | x PyTorch (batch 2) |")
    assert lines[2].endswith("| 1 |")  # PyTorch against itself
    ratio = ort_row.median(2) / torch_row.median(2)
    assert lines[3].endswith(f"| {round(ratio, 2):.3g} |")
    data = json.loads(result.json_path.read_text())
    assert data["rows"][1]["model"] == "resnet18.onnx" and len(data["rows"][1]["throughput_ips"]["2"]) == 2
    assert result.md_path.read_text().startswith(lines[0])
    assert sum("round 2/2" in line for line in logged) == 4
    # A second run reuses the exported model instead of exporting again.
    mtime = (tmp_path / "resnet18.onnx").stat().st_mtime_ns
    ct.cpu_table(tmp_path, config=ct.TableConfig(threads=1, rounds=1, duration_s=0.01, warmup_s=0, min_iterations=1,
                                                 archs=("resnet18",), batches=(1,), image_size=32), log=logged.append)
    assert (tmp_path / "resnet18.onnx").stat().st_mtime_ns == mtime


def test_missing_stage_leaves_its_row_empty_and_says_why():
    rows = [ct.Row("resnet50", "pytorch eager", "fp32", None, throughput={8: [20.0, 24.0, 22.0]}),
            ct.Row("resnet50", "onnxruntime", "fp32", ct.Path("r.onnx"), throughput={8: [30.0, 33.0, 36.0]}),
            ct.Row("resnet50", "onnxruntime", "fp16", None, note="not built: No module named 'x'")]
    ratios = ct.speedups(rows, 8)
    assert ratios[id(rows[1])] == 33.0 / 22.0 and ratios[id(rows[2])] is None
    text = ct.table_markdown(rows, ct.TableConfig(batches=(8,), rounds=3), {"cpu": "AMD EPYC", "versions": {}},
                             minutes=1.0)
    assert "| resnet50 | onnxruntime | fp16 | - | - | - |" in text
    assert "Rows without figures: resnet50 fp16: not built: No module named 'x'." in text


def test_disturbed_rounds_are_left_out_of_the_median():
    row = ct.Row("resnet50", "onnxruntime", "fp32", ct.Path("r.onnx"), throughput={8: [40.0, 12.0, 44.0, 9.0, 42.0]},
                 p50={8: [200.0, 700.0, 180.0, 900.0, 190.0]}, disturbed={8: [False, True, False, True, False]})
    assert row.median(8) == 42.0 and row.median_p50(8) == 190.0
    row.disturbed[8] = [True] * 5  # nothing clean: every round counts
    assert row.median(8) == 40.0
    text = ct.table_markdown([row], ct.TableConfig(batches=(8,)), {"versions": {}}, minutes=1.0)
    assert "Every measurement ran while other processes" in text
    rows = [row, ct.Row("resnet50", "pytorch eager", "fp32", None, throughput={8: [20.0]}, disturbed={8: [False]})]
    text = ct.table_markdown(rows, ct.TableConfig(batches=(8,)), {"versions": {}}, minutes=1.0)
    assert "5 of 6 measurements ran while other processes" in text and "resnet50 fp32 batch 8 (all rounds used)" in text

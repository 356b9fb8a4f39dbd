"""TensorRT on a GPU, first contact: build, parity, speed, end-to-end labeling.

For SimpleBaseline-R18 at 256×192 (fixed random weights, peaky head): export the fp32
ONNX, build the FP16 engine (from its FP16 conversion) and the INT8 engine (from its QDQ
quantisation on coco_mini crops), both strongly typed; compare each with torch fp32 on
the GPU on coco_mini's person crops (max |Δheatmap|, keypoint px); time crops/s at batch
1/32/256 (device-resident input, `predict_tensor`); run `posemum label --backend
tensorrt` end to end on ../shared/data/unlabeled; rebuild once to show the engine cache
is reused. Prints one JSON line per row and writes them all to --json-out.

    python benchmarks/tensorrt_bench.py --json-out OUT/gpu_trt.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from posemum_deploy.inference.trt_backend import TrtBackend

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def checkpoint(path: Path) -> Path:
    from posemum_deploy.artifacts import ModelMetadata
    from posemum_deploy.models.simple_baseline import build_model

    torch.manual_seed(0)
    model = build_model("resnet18")
    with torch.no_grad():
        model.final.weight.normal_(0, 0.05)
    state = model.state_dict()
    torch.save({"model": state, "teacher": state, "model_meta": ModelMetadata().to_dict(),
                "config": {}}, path)
    return path


def crops_per_s(backend: TrtBackend, batch: int, hw: tuple[int, int], reps: int) -> float:
    x = torch.randn(batch, 3, *hw, device=backend.device)
    for _ in range(3):
        backend.predict_tensor(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        backend.predict_tensor(x)
    torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json-out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    from posemum_deploy.export.calibration import calibration_crops
    from posemum_deploy.export.formats import ExportOptions, export_model
    from posemum_deploy.inference.pipeline import PoseEstimator
    from posemum_deploy.inference.torch_backend import TorchBackend
    from posemum_deploy.inference.trt_backend import TrtBackend

    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        args.json_out.write_text(json.dumps(rows, indent=1))

    import tensorrt

    emit({"tensorrt": tensorrt.__version__, "gpu": torch.cuda.get_device_name(0)})
    ann = SHARED / "coco_mini" / "test_coco.json"
    root = Path(tempfile.mkdtemp(prefix="trt_bench_"))
    ckpt = checkpoint(root / "r18.pt")
    onnx = export_model(ckpt, "onnx", root / "model.onnx", ExportOptions(check=ann)).artifact
    crops = calibration_crops(ann, (256, 192))
    ref = PoseEstimator(TorchBackend(ckpt, device="cuda"), batch_size=16)
    hm_ref = ref.heatmaps(crops)
    xy_ref, _ = ref.codec.decode(hm_ref)
    engines = {}
    for name, opts in (("fp16", ExportOptions(fp16=True)),
                       ("int8", ExportOptions(int8=True, calib=ann))):
        opts.batch, opts.cache_dir, opts.check = (1, 32, 256), root / "cache", ann
        start = time.perf_counter()
        try:
            result = export_model(onnx, "tensorrt", root / f"{name}.engine", opts)
        except Exception as e:  # report and go on: the other precision may still build
            emit({"engine": name, "error": f"{type(e).__name__}: {str(e)[:400]}"})
            continue
        built_s = time.perf_counter() - start
        engines[name] = result.artifact
        backend = TrtBackend(result.artifact)
        est = PoseEstimator(backend, batch_size=16)
        hm = est.heatmaps(crops)
        xy, _ = est.codec.decode(hm)
        emit({"engine": name, "build_s": round(built_s, 1),
              "onnx_parity": {k: v for k, v in result.report.items() if k != "network_info"},
              "vs_torch_fp32": {"max_abs_heatmap_diff": float(np.abs(hm - hm_ref).max()),
                                "max_keypoint_px": float(np.abs(xy - xy_ref).max()),
                                "num_crops": len(crops)},
              "output_dtype": str(backend.output_dtype)})
        for batch in (1, 32, 256):
            emit({"engine": name, "batch": batch,
                  "crops_per_s": round(crops_per_s(backend, batch, (256, 192), args.reps), 1)})
        start = time.perf_counter()
        again = export_model(onnx, "tensorrt", root / f"{name}.again.engine", opts)
        emit({"engine": name, "cache_reused": again.report["cached"] == result.report["cached"],
              "rebuild_s": round(time.perf_counter() - start, 1)})
    for name, engine in engines.items():
        out = root / f"label_{name}"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", "from posemum_deploy.cli.app import main; main()", "label",
             str(engine), str(SHARED / "unlabeled"), "--out", str(out), "--backend", "tensorrt",
             "--batch-size", "32"], capture_output=True, text=True, timeout=300, check=False)
        lines = sum(len(p.read_text().splitlines()) for p in out.rglob("*.jsonl"))
        emit({"label": name, "rc": proc.returncode, "s": round(time.perf_counter() - start, 1),
              "records": lines, "stderr_tail": proc.stderr[-600:]})


if __name__ == "__main__":
    main()

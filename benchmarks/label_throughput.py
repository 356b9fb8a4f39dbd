"""Bulk labeling throughput per CPU runtime: end-to-end versus model-only, and a number
to plan with (hours per million images on this machine).

One row per runtime/precision (default: OpenVINO INT8, OpenVINO bf16, ONNX Runtime
INT8), each on the graph its runtime runs best (OpenVINO: plain ConvTranspose; ONNX
Runtime: sub-pixel deconvolutions) and each in a fresh spawned process, so no thread
pool of an earlier row (spinning or asleep) is alive while a row is timed. In a row,
model-only runs (pre-normalised batches through `predict`, no decode, no crops, no
writing) alternate with end-to-end `label_folder` runs on the same backend object and
batch size, and the best of each is compared (load from other processes only slows a
run). End-to-end counts real crops: the padding of each shard's last batch is part of
its cost. Threads are pinned: the runtime gets `--threads` (default: all usable CPUs),
JPEG decode and crops run `--workers` threads ahead (default 1), OpenCV 1 thread.
Target (issue 24): end-to-end ≥ 0.85 × model-only for OpenVINO INT8 at 256×192, batch 32.

Stage seconds are summed over threads: decode/boxes/crop run on the decode thread,
infer on the inference thread, decode_heatmaps/records/encode/write on the main thread;
wait_for_decode and wait_for_infer are the main thread blocked on the other two (near
zero when neither waits for the other).

    python benchmarks/label_throughput.py                         # the three default rows
    python benchmarks/label_throughput.py --rows openvino-int8 --images 512 --repeats 3
    python benchmarks/label_throughput.py --sequential            # the pre-pipeline schedule
    python benchmarks/label_throughput.py --rows openvino-int8 --streams 2   # 2 × 1 thread

Synthetic people (`posemum_deploy.data.synthetic`, JPEG) with ground-truth boxes; the
network is a random-weight SimpleBaseline-ResNet-18 (speed does not depend on weights).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.summary import hours_per_million_images
from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.system import usable_cpus

ROWS = ("openvino-int8", "openvino-bf16", "onnxruntime-int8", "openvino-fp32",
        "onnxruntime-fp32")
DEFAULT_ROWS = "openvino-int8,openvino-bf16,onnxruntime-int8"


def make_artifacts(work: Path, input_hw: tuple[int, int], rows: list[str], calib: Path
                   ) -> dict[str, Path]:
    """Random-weight network → each row's artifact, on its runtime's graph."""
    from posemum_deploy.export.calibration import CropBatcher, calibration_crops
    from posemum_deploy.export.onnx import export_network, finish_sidecar

    torch.manual_seed(0)
    meta = ModelMetadata(input_hw=input_hw, heatmap_hw=(input_hw[0] // 4, input_hw[1] // 4))
    model = build_model("resnet18", 17).eval()
    onnx = {}
    for runtime, graph in (("onnxruntime", "subpixel-deconv"), ("openvino", "convtranspose")):
        if any(r.startswith(runtime) for r in rows):
            onnx[runtime] = work / f"model.{graph}.onnx"
            export_network(model, meta, onnx[runtime], 17, graph)
            finish_sidecar(onnx[runtime], meta, "onnx", "fp32", ("torch", "onnx"))
    crops = calibration_crops(calib, input_hw, 64) if any(
        not r.endswith("fp32") for r in rows) else None
    out: dict[str, Path] = {}
    for row in rows:
        runtime, precision = row.split("-")
        if precision == "fp32":
            out[row] = onnx[runtime]
        elif runtime == "onnxruntime":
            from posemum_deploy.export.quantize import quantize_qdq

            out[row] = work / "model_int8.onnx"
            assert crops is not None  # read above whenever a row is not fp32
            quantize_qdq(onnx[runtime], out[row], CropBatcher(crops, 16, meta.mean, meta.std))
            finish_sidecar(out[row], meta, "onnx", "int8", ("onnxruntime",))
        else:
            from posemum_deploy.export.openvino import export_openvino

            out[row] = export_openvino(onnx[runtime], work / f"ov_{precision}" / "model.xml",
                                       precision, crops, batch_size=16)[0]
    return out


def open_backend(row: str, path: Path, batch: int, threads: int, ort_spinning: bool,
                 streams: int | None = None) -> Any:
    """The row's backend with its runtime's threads pinned to `threads` (OpenVINO: split
    over `streams`, each labeling its own batch)."""
    runtime, precision = row.split("-")
    if runtime == "openvino":
        from posemum_deploy.inference.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, precision=precision, batch_size=batch, threads=threads,
                               streams=streams)
    from posemum_deploy.inference.ort_backend import OrtBackend

    return OrtBackend(path, device="cpu", threads=threads, spinning=ort_spinning)


def model_only(backend: Any, batch: int, crops: int) -> float:
    """Crops/s of `backend.predict` alone on ready, normalised batches of `batch`, from
    one thread per OpenVINO stream (as the labeler keeps one batch in each)."""
    from concurrent.futures import ThreadPoolExecutor

    h, w = backend.metadata.input_hw
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w), dtype=np.float32)
    streams = int(getattr(backend, "streams", 1))
    calls = max(streams, -(-crops // batch))
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda _: backend.predict(x), range(streams)))  # warm-up, each request
        t0 = time.perf_counter()
        list(pool.map(lambda _: backend.predict(x), range(calls)))
        return calls * batch / (time.perf_counter() - t0)


def run_row(row: str, artifact: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One row, in its own process: alternate model-only and end-to-end runs."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    backend = open_backend(row, artifact, args.batch, args.threads, args.ort_spinning,
                           args.streams)
    n_crops = len(json.loads((data / "annotations.json").read_text())["annotations"])
    alone = [model_only(backend, args.batch, n_crops)]
    runs = []
    for _ in range(args.repeats):
        out = Path(tempfile.mkdtemp(prefix=f"label_{row}_"))
        runs.append(label_folder(artifact, data / "images", out,
                                 LabelSettings(boxes=f"gt:{data / 'annotations.json'}",
                                               oks_nms=None),
                                 RunSettings(backend=backend, batch_size=args.batch,
                                             workers=args.workers,
                                             pipeline=not args.sequential)))
        alone.append(model_only(backend, args.batch, n_crops))
    best = max(runs, key=lambda s: s.crops_per_s)
    reference = max(alone)
    return {"row": row, "graph": getattr(backend, "graph", "subpixel-deconv"),
            "images": best.images, "crops": best.crops,
            "images_per_s": round(best.images_per_s, 2), "crops_per_s": round(best.crops_per_s, 2),
            "model_only_crops_per_s": round(reference, 2),
            "ratio": round(best.crops_per_s / reference, 3),
            "hours_per_million_images": round(hours_per_million_images(best.images_per_s), 2),
            "all_model_only": [round(v, 2) for v in alone],
            "all_end_to_end": [round(r.crops_per_s, 2) for r in runs],
            "stage_seconds": {k: round(v, 3) for k, v in sorted(best.stage_seconds.items())},
            "wall_seconds": round(best.seconds, 2)}


def print_rows(results: list[dict[str, Any]]) -> None:
    print(f"{'row':<18}{'img/s':>8}{'crops/s':>9}{'model-only':>11}{'e2e/model':>10}"
          f"{'h / 1M img':>11}  stage seconds")
    for r in results:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["stage_seconds"].items(),
                                                              key=lambda kv: -kv[1]))
        print(f"{r['row']:<18}{r['images_per_s']:>8.1f}{r['crops_per_s']:>9.1f}"
              f"{r['model_only_crops_per_s']:>11.1f}{r['ratio']:>10.3f}"
              f"{r['hours_per_million_images']:>11.2f}  {stages}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", default="480x640", help="synthetic image HxW")
    ap.add_argument("--input", default="256x192", help="network input HxW")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="decode threads")
    ap.add_argument("--threads", type=int, default=usable_cpus(), help="inference threads")
    ap.add_argument("--ort-spinning", action="store_true", help="ONNX Runtime pool spins")
    ap.add_argument("--streams", type=int, default=None,
                    help="OpenVINO streams (default: the LATENCY hint, one stream); the "
                         "labeler keeps one batch in each")
    ap.add_argument("--sequential", action="store_true",
                    help="inference in turn with heatmap decode (the pre-pipeline schedule)")
    ap.add_argument("--repeats", type=int, default=2, help="end-to-end runs per row (best counts)")
    ap.add_argument("--work", type=Path, default=None, help="keep files here")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := [r for r in rows if r not in ROWS]:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="posemum_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    in_h, in_w = (int(v) for v in args.input.split("x"))
    image_h, image_w = (int(v) for v in args.image_size.split("x"))
    input_hw, image_hw = (in_h, in_w), (image_h, image_w)
    data = work / "data"
    if not (data / "annotations.json").exists():
        generate_dataset(data, args.images, 0, image_size=image_hw)
    artifacts = make_artifacts(work, input_hw, rows, data / "annotations.json")
    print(f"{args.images} synthetic {image_hw[0]}x{image_hw[1]} JPEGs, input {args.input}, "
          f"batch {args.batch}, {args.threads} inference threads, {args.workers} decode "
          f"thread(s), {usable_cpus()} CPUs, schedule "
          f"{'sequential' if args.sequential else 'pipelined'}, ORT spinning "
          f"{'on' if args.ort_spinning else 'off'}, OpenVINO streams {args.streams or 'hint'}; "
          f"load average {os.getloadavg()[0]:.2f}",
          file=sys.stderr)
    results = []
    ctx = multiprocessing.get_context("spawn")
    for row in rows:  # each row in a fresh process: no earlier runtime's pool alive
        with ctx.Pool(1) as pool:
            results.append(pool.apply(run_row, (row, artifacts[row], data, args)))
    print_rows(results)
    print(f"load average at end {os.getloadavg()[0]:.2f}; target: e2e/model ≥ 0.85 for "
          "openvino-int8 at 256x192, batch 32", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU backends in one run: torch eager, ORT fp32/INT8, OpenVINO fp32/bf16/INT8 — speed and AP.

All backends are built from one network (a trained checkpoint, or random weights when
no --ckpt is given, said so in the output) and timed on the same real crops at a fixed
batch size. Repetitions are interleaved (rep 1 of every backend, then rep 2, ...) so that
load from other processes slows all of them alike; images/s are medians, ratios are
against torch eager fp32. With --val-ann/--val-images every backend is also scored
(COCO keypoint AP, GT boxes) and the drop from torch fp32 is shown in AP points.
Targets (issue 8): OpenVINO bf16 ≥ 4× torch with ≤ 0.5 AP point drop, OpenVINO INT8
≥ 7× torch with ≤ 1.0 point drop.

Roofline columns: each backend's achieved GMAC/s (images/s × the network's MACs per
crop) as a share of this CPU's measured GEMM peak in the arithmetic it runs (fp32,
bf16 or int8; `roofline.py`), and the ceiling that peak puts on "× torch": a ratio
target above the ceiling cannot be met on this CPU by any runtime of that arithmetic.

    python benchmarks/cpu_backends.py                                   # random weights
    python benchmarks/cpu_backends.py --ckpt runs/demo/checkpoints/best.pt \\
        --val-ann VAL.json --val-images VAL_DIR [--calib TRAIN.json] [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from roofline import arithmetic, gemm_peaks

from posemum_deploy.data.transforms import normalize_numpy
from posemum_deploy.export.calibration import CropBatcher, calibration_crops
from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.export.onnx import export_network, finish_sidecar
from posemum_deploy.export.openvino import export_openvino
from posemum_deploy.export.quantize import quantize_qdq
from posemum_deploy.inference.openvino_backend import OpenVinoBackend, cpu_precisions
from posemum_deploy.inference.ort_backend import OrtBackend
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.models.checkpoint import load_model
from posemum_deploy.models.complexity import count_macs
from posemum_deploy.models.simple_baseline import build_model

COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_mini"
TARGETS = {"openvino bf16": (4.0, 0.5), "openvino int8 (nncf)": (7.0, 1.0),
           "openvino int8 (ort qdq)": (7.0, 1.0)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", type=Path, help="trained checkpoint (default: random weights)")
    p.add_argument("--val-ann", type=Path, help="COCO keypoints json to score AP on")
    p.add_argument("--val-images", type=Path, help="its images folder")
    p.add_argument("--calib", type=Path, help="INT8 calibration: image folder or COCO json "
                   "(default: --val-ann, else coco_mini)")
    p.add_argument("--calib-count", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per backend")
    p.add_argument("--calls", type=int, default=2, help="batches timed per repetition")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--input", default=None, help="HxW for random weights (default 256x192)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args()


def load_network(args: argparse.Namespace) -> tuple[torch.nn.Module, ModelMetadata, str]:
    if args.ckpt:
        model, meta = load_model(args.ckpt)
        return model, meta, f"trained checkpoint {args.ckpt}"
    h, w = (int(v) for v in (args.input or "256x192").lower().split("x"))
    torch.manual_seed(0)
    meta = ModelMetadata(input_hw=(h, w), heatmap_hw=(h // 4, w // 4))
    return build_model("resnet18", 17).eval(), meta, "RANDOM WEIGHTS (no --ckpt): AP is meaningless"


def build_artifacts(model: torch.nn.Module, meta: ModelMetadata, crops: np.ndarray, work: Path,
                    batch: int, log: Callable[[str], None]) -> dict[str, Path]:
    """fp32 ONNX, ORT QDQ INT8 ONNX, OpenVINO IR INT8 via NNCF and via the QDQ model."""
    onnx_path = work / "model.onnx"
    export_network(model, meta, onnx_path, 17)
    finish_sidecar(onnx_path, meta, "onnx", "fp32", ("torch", "onnx", "onnxruntime"))
    qdq = work / "model_int8.onnx"
    t = time.perf_counter()
    quantize_qdq(onnx_path, qdq, CropBatcher(crops, min(16, len(crops)), meta.mean, meta.std))
    finish_sidecar(qdq, meta, "onnx", "int8", ("onnxruntime",))
    log(f"ORT static QDQ quantisation: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    nncf_xml, report = export_openvino(onnx_path, work / "ov_nncf" / "model.xml", "int8", crops,
                                       "nncf", batch_size=batch)
    log(f"NNCF quantisation + IR: {time.perf_counter() - t:.1f} s; {report.summary()}")
    qdq_xml, report = export_openvino(onnx_path, work / "ov_qdq" / "model.xml", "int8", crops,
                                      "qdq", qdq_onnx=qdq, batch_size=batch)
    log(f"ORT QDQ → IR: {report.summary()}")
    return {"onnx": onnx_path, "qdq": qdq, "nncf_xml": nncf_xml, "qdq_xml": qdq_xml}


def make_backends(model: torch.nn.Module, meta: ModelMetadata, paths: dict[str, Path],
                  batch: int, threads: int) -> dict[str, Any]:
    """name → Backend, torch eager fp32 first (the baseline of every ratio)."""
    torch.set_num_threads(threads)
    ov = dict(batch_size=batch, threads=threads)
    backends: dict[str, Any] = {
        "torch eager fp32": TorchBackend(model, ModelMetadata.from_dict(meta.to_dict()), device="cpu"),
        "onnxruntime fp32": OrtBackend(paths["onnx"], device="cpu", threads=threads),
        "onnxruntime int8 (qdq)": OrtBackend(paths["qdq"], device="cpu", threads=threads),
        "openvino fp32": OpenVinoBackend(paths["onnx"], precision="fp32", **ov),
    }
    if "bf16" in cpu_precisions():
        backends["openvino bf16"] = OpenVinoBackend(paths["onnx"], precision="bf16", **ov)
    backends["openvino int8 (nncf)"] = OpenVinoBackend(paths["nncf_xml"], **ov)
    backends["openvino int8 (ort qdq)"] = OpenVinoBackend(paths["qdq_xml"], **ov)
    return backends


def throughput(backends: dict[str, Any], batch: np.ndarray, reps: int, calls: int
               ) -> dict[str, list[float]]:
    """Images/s per repetition, repetitions interleaved across backends."""
    for be in backends.values():  # warm-up: first-call allocations and kernel selection
        be.predict(batch)
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(reps):
        for name, be in backends.items():
            t = time.perf_counter()
            for _ in range(calls):
                be.predict(batch)
            rates[name].append(calls * len(batch) / (time.perf_counter() - t))
    return rates


def val_aps(backends: dict[str, Any], ann: Path, images: Path, batch: int) -> dict[str, float]:
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.predict import predict_coco

    return {name: float(evaluate_results(ann, predict_coco(be, ann, images, batch_size=batch))["AP"])
            for name, be in backends.items()}


def table(rates: dict[str, list[float]], aps: dict[str, float], gmacs_per_image: float,
          peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One row per backend: speed, ratio to torch, AP, and where it sits under the roofline."""
    base = statistics.median(rates["torch eager fp32"])
    base_ap = aps.get("torch eager fp32")
    rows = []
    for name, values in rates.items():
        med = statistics.median(values)
        peak = peaks.get(arithmetic(name))
        row = {"backend": name, "images_per_s": med, "vs_torch": med / base,
               "spread": (min(values), max(values)), "ap": aps.get(name),
               "ap_drop_points": None if base_ap is None else 100 * (base_ap - aps[name]),
               "gmac_per_s": med * gmacs_per_image,
               "peak_share": None if peak is None else med * gmacs_per_image / peak,
               "ceiling_vs_torch": None if peak is None else peak / (base * gmacs_per_image)}
        if name in TARGETS:
            speed, drop = TARGETS[name]
            ok = row["vs_torch"] >= speed and (row["ap_drop_points"] is None
                                                or row["ap_drop_points"] <= drop)
            row["target"] = f"≥{speed:g}× & ≤{drop:g} pt: {'met' if ok else 'NOT met'}"
        rows.append(row)
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'backend':<26}{'img/s':>9}{'× torch':>9}{'min–max':>15}{'AP':>8}{'ΔAP pt':>8}"
          f"{'GMAC/s':>8}{'% peak':>8}{'ceiling':>9}  target")
    for r in rows:
        ap = "" if r["ap"] is None else f"{r['ap']:.4f}"
        drop = "" if r["ap_drop_points"] is None else f"{r['ap_drop_points']:+.2f}"
        spread = f"{r['spread'][0]:.1f}–{r['spread'][1]:.1f}"
        share = "" if r["peak_share"] is None else f"{100 * r['peak_share']:.0f}%"
        ceiling = "" if r["ceiling_vs_torch"] is None else f"{r['ceiling_vs_torch']:.2f}×"
        print(f"{r['backend']:<26}{r['images_per_s']:>9.1f}{r['vs_torch']:>8.2f}×{spread:>15}"
              f"{ap:>8}{drop:>8}{r['gmac_per_s']:>8.0f}{share:>8}{ceiling:>9}  {r.get('target', '')}")


def main() -> None:
    args = parse_args()
    if (args.val_ann is None) != (args.val_images is None):
        raise SystemExit("give both --val-ann and --val-images, or neither")
    model, meta, note = load_network(args)
    calib = args.calib or args.val_ann or COCO_MINI / "test_coco.json"
    crops = calibration_crops(calib, tuple(meta.input_hw), args.calib_count)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"model: SimpleBaseline-{meta.backbone} {meta.input_hw[0]}×{meta.input_hw[1]}, {note}")
    print(f"cpu: {cpu}, {os.cpu_count()} cores, threads {args.threads}, OpenVINO precisions "
          f"{', '.join(cpu_precisions())}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"batch {args.batch}, {args.reps} interleaved reps × {args.calls} batches; "
          f"calibration: {len(crops)} crops from {calib}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_artifacts(model, meta, crops, Path(tmp), args.batch, print)
        backends = make_backends(model, meta, paths, args.batch, args.threads)
        reps = np.resize(np.arange(len(crops)), args.batch)
        rates = throughput(backends, normalize_numpy(crops[reps], meta.mean, meta.std),
                           args.reps, args.calls)
        aps = val_aps(backends, args.val_ann, args.val_images, args.batch) if args.val_ann else {}
    print(f"load average at end {os.getloadavg()[0]:.2f} (other processes share these cores)")
    gmacs = count_macs(model, tuple(meta.input_hw)) / 1e9
    peaks = gemm_peaks(args.threads)
    print(f"network: {gmacs:.2f} GMAC per crop; GEMM peaks on {args.threads} threads: "
          + ", ".join(f"{k} {v:.0f} GMAC/s" for k, v in peaks.items()))
    rows = table(rates, aps, gmacs, peaks)
    print_rows(rows)
    print("ceiling = that arithmetic's GEMM peak / torch eager's achieved GMAC/s: the most "
          "\"× torch\" a runtime at 100 % of the peak could show here")
    if args.json:
        args.json.write_text(json.dumps({"note": note, "cpu": cpu, "gmac_per_image": gmacs,
                                         "gemm_peaks": peaks, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

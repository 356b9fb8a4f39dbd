"""CPU throughput of torch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8 (static QDQ).

Measured side by side in one process on the same real crops: repetitions are
interleaved (torch, ort32, int8, torch, ...) so that load from other processes hits
every runtime alike, and medians are reported. Torch runs eager fp32 with its default
threads (the honest baseline); both ORT sessions use ORT's defaults too. With a val set
the AP of each runtime is printed, so the INT8 speed-up comes with its accuracy cost.

    python benchmarks/export_speed.py --ckpt RUN/checkpoints/best.pt \
        --val-ann VAL.json --val-images VAL_IMAGES [--calib IMAGES] [--batch 32]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from roofline import arithmetic, gemm_peaks

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.transforms import normalize_numpy
from posemum_deploy.export.calibration import calibration_crops
from posemum_deploy.export.formats import ExportOptions, export_model
from posemum_deploy.inference.backends import Backend
from posemum_deploy.inference.ort_backend import OrtBackend
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.models.complexity import count_macs
from posemum_deploy.models.simple_baseline import build_model

COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_mini"


def random_checkpoint(path: Path) -> Path:
    """SimpleBaseline-R18 256x192 with fixed random weights (when no --ckpt is given)."""
    torch.manual_seed(0)
    state = build_model("resnet18").state_dict()
    torch.save({"model": state, "teacher": state, "model_meta": ModelMetadata().to_dict(),
                "config": {}}, path)
    return path


def measure(backends: dict[str, Backend], batch: np.ndarray, reps: int) -> dict[str, list[float]]:
    """Seconds per call for each backend, repetitions interleaved across backends."""
    for be in backends.values():
        be.predict(batch)  # warm-up: allocations, kernel selection
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(reps):
        for name, be in backends.items():
            t0 = time.perf_counter()
            be.predict(batch)
            times[name].append(time.perf_counter() - t0)
    return times


def print_roofline(model: torch.nn.Module, input_hw: tuple[int, int], ips: dict[str, float]) -> None:
    """Achieved GMAC/s against this CPU's measured GEMM peaks (see roofline.py)."""
    gmacs = count_macs(model, input_hw) / 1e9
    peaks = gemm_peaks(torch.get_num_threads())
    print(f"roofline: {gmacs:.2f} GMAC per crop; GEMM peaks " + ", ".join(
        f"{k} {v:.0f}" for k, v in peaks.items()) + " GMAC/s")
    for name, value in ips.items():
        peak = peaks[arithmetic(name.lower())]
        print(f"  {name:18s} {value * gmacs:6.0f} GMAC/s = {100 * value * gmacs / peak:3.0f}% of peak")
    print(f"  ceiling for ORT fp32 / torch eager (fp32 peak / torch's GMAC/s): "
          f"{peaks['fp32'] / (ips['torch eager fp32'] * gmacs):.2f}x")


def val_ap(backend: Backend, ann: Path, images: Path, batch_size: int) -> float:
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.predict import predict_coco

    return float(evaluate_results(ann, predict_coco(backend, ann, images, batch_size=batch_size))["AP"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, help="checkpoint (default: random-weights R18 256x192)")
    ap.add_argument("--val-ann", type=Path)
    ap.add_argument("--val-images", type=Path)
    ap.add_argument("--calib", type=Path, help="calibration images folder or COCO json "
                    "(default: --val-ann, else coco_mini)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--calib-count", type=int, default=256)
    ap.add_argument("--out", type=Path, help="where to write the exports (default: a temp dir)")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="export_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt or random_checkpoint(work / "random_r18.pt")
    calib = args.calib or args.val_ann or COCO_MINI / "test_coco.json"
    t0 = time.perf_counter()
    fp32 = export_model(ckpt, "onnx", work / "model.onnx", ExportOptions(check=calib)).artifact
    int8 = export_model(fp32, "onnx-int8", work / "model_int8.onnx",
                        ExportOptions(calib=calib, calib_count=args.calib_count)).artifact
    print(f"exported in {time.perf_counter() - t0:.0f}s: {fp32.name}, {int8.name} "
          f"(calibrated on {calib})")

    eager = TorchBackend(ckpt, device="cpu", precision="fp32")
    backends: dict[str, Backend] = {"torch eager fp32": eager, "ORT fp32": OrtBackend(fp32, device="cpu"),
                                    "ORT INT8": OrtBackend(int8, device="cpu")}
    meta = backends["ORT fp32"].metadata
    crops = calibration_crops(calib, meta.input_hw, args.batch)
    crops = crops[np.arange(args.batch) % len(crops)]
    batch = normalize_numpy(crops, meta.mean, meta.std)
    print(f"batch {args.batch} x {tuple(meta.input_hw)} {meta.backbone}, torch threads "
          f"{torch.get_num_threads()}, {args.reps} interleaved repetitions")
    times = measure(backends, batch, args.reps)
    ips = {name: args.batch / statistics.median(t) for name, t in times.items()}
    for name, value in ips.items():
        spread = [args.batch / t for t in times[name]]
        print(f"  {name:18s} {value:7.1f} img/s (median; min {min(spread):.1f}, max {max(spread):.1f})")
    r_fp32 = ips["ORT fp32"] / ips["torch eager fp32"]
    r_int8 = ips["ORT INT8"] / ips["ORT fp32"]
    print(f"ORT fp32 / torch eager = {r_fp32:.2f}x (target ≥ 1.8x: {'met' if r_fp32 >= 1.8 else 'NOT met'})")
    print(f"ORT INT8 / ORT fp32    = {r_int8:.2f}x (target ≥ 1.5x: {'met' if r_int8 >= 1.5 else 'NOT met'})")
    print_roofline(eager.model, meta.input_hw, ips)
    if args.val_ann and args.val_images:
        ap32 = val_ap(backends["ORT fp32"], args.val_ann, args.val_images, args.batch)
        ap8 = val_ap(backends["ORT INT8"], args.val_ann, args.val_images, args.batch)
        drop = 100.0 * (ap32 - ap8)
        print(f"AP ORT fp32 {ap32:.4f}, ORT INT8 {ap8:.4f}: drop {drop:.2f} points "
              f"(target ≤ 1.0: {'met' if drop <= 1.0 else 'NOT met'})")
    else:
        print("no --val-ann/--val-images: AP not measured")


if __name__ == "__main__":
    main()

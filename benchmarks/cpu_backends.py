"""CPU backends in one run: torch eager, ORT fp32/INT8, OpenVINO fp32/bf16/INT8 — speed and AP.
(Over 300 lines: building every row's artifact, in-process and isolated timing, the
roofline table and the profiles are one run, and splitting them would scatter it.)

All backends are built from one network (a trained checkpoint, or random weights when
no --ckpt is given, said so in the output) and timed on the same real crops at a fixed
batch size. Repetitions are interleaved (rep 1 of every backend, then rep 2, ...) so that
load from other processes slows all of them alike; images/s are medians, ratios are
against torch eager fp32. With --val-ann/--val-images every backend is also scored
(COCO keypoint AP, GT boxes) and the drop from torch fp32 is shown in AP points.
Targets (issue 24, restated against the hardware): every OpenVINO row at ≥ 95 % of
the GEMM peak of the arithmetic it runs, AP drop ≤ 0.5 point for bf16, ≤ 1.0 for INT8.

Graph per runtime: ONNX Runtime rows run its sub-pixel graph, OpenVINO rows the plain
ConvTranspose graph (`--ov-graph subpixel-deconv` runs OpenVINO on ONNX Runtime's graph,
to compare). Threads are pinned per runtime (torch set_num_threads, ORT intra/inter-op,
OpenVINO INFERENCE_NUM_THREADS + LATENCY hint). A spinning thread pool keeps burning its
cores after a call and slows the next runtime's row, so by default ONNX Runtime's pool
does not spin (`--ort-spinning` turns it on), and `--isolate` runs each backend's rows in
a fresh process that exits before the next starts (no interleaving then; compare the two
modes to see the pools' effect). `--profile` prints OpenVINO's per-layer times (its
performance counters) for the OpenVINO rows: where a row short of the peak loses time.

Roofline columns: each backend's achieved GMAC/s (images/s × the network's MACs per
crop) as a share of this CPU's measured GEMM peak in the arithmetic it runs (fp32,
bf16 or int8; `roofline.py`), and the ceiling that peak puts on "× torch": a ratio
target above the ceiling cannot be met on this CPU by any runtime of that arithmetic.
The peaks are measured between the repetitions (each rep: every backend, then one
best-of-3 GEMM per arithmetic) and the share is median rate / median peak, so a row and
its peak are taken side by side, as every other ratio here; a peak measured once after
the rows (as before 2026-12-05) compared a median to a best-of-8 taken minutes later.

    python benchmarks/cpu_backends.py                                   # random weights
    python benchmarks/cpu_backends.py --isolate --ort-spinning          # fresh process per row
    python benchmarks/cpu_backends.py --ckpt runs/demo/checkpoints/best.pt \\
        --val-ann VAL.json --val-images VAL_DIR [--calib TRAIN.json] [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from roofline import arithmetic, gemm_peaks

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.transforms import normalize_numpy
from posemum_deploy.export.calibration import CropBatcher, calibration_crops
from posemum_deploy.export.onnx import CONVTRANSPOSE, GRAPH_KINDS, export_network, finish_sidecar
from posemum_deploy.export.openvino import export_openvino
from posemum_deploy.export.quantize import quantize_qdq
from posemum_deploy.inference.openvino_backend import OpenVinoBackend, cpu_precisions
from posemum_deploy.inference.ort_backend import OrtBackend
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.models.checkpoint import load_model
from posemum_deploy.models.complexity import count_macs
from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.system import cpu_summary

COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_mini"
# row -> (least share of its arithmetic's GEMM peak, most AP drop in points)
TARGETS: dict[str, tuple[float, float | None]] = {"openvino fp32": (0.95, None), "openvino bf16": (0.95, 0.5),
           "openvino int8 (nncf)": (0.95, 1.0), "openvino int8 (ort qdq)": (0.95, 1.0)}


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
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--input", default=None, help="HxW for random weights (default 256x192)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--ov-graph", choices=GRAPH_KINDS, default=CONVTRANSPOSE,
                   help="graph the OpenVINO rows run (default: OpenVINO's own)")
    p.add_argument("--ort-spinning", action="store_true",
                   help="let ONNX Runtime's pool spin between calls (its default)")
    p.add_argument("--isolate", action="store_true",
                   help="each backend in a fresh process, one after another")
    p.add_argument("--profile", action="store_true",
                   help="print OpenVINO's per-layer profile of each OpenVINO row")
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
                    batch: int, log: Callable[[str], None], ov_graph: str = CONVTRANSPOSE
                    ) -> dict[str, Path]:
    """ORT's graph (fp32 ONNX, its QDQ INT8) and OpenVINO's (fp32 ONNX, IR INT8 via NNCF
    and via the ORT quantiser's QDQ model of that graph)."""
    onnx_path, ov_onnx = work / "model.onnx", work / f"model.{ov_graph}.onnx"
    for path, kind in ((onnx_path, "subpixel-deconv"), (ov_onnx, ov_graph)):
        export_network(model, meta, path, 17, kind)
        finish_sidecar(path, meta, "onnx", "fp32", ("torch", "onnx", "onnxruntime"))
    def batcher() -> CropBatcher:  # a fresh one per quantisation: the quantiser drains it
        return CropBatcher(crops, min(16, len(crops)), meta.mean, meta.std)

    qdq, ov_qdq = work / "model_int8.onnx", work / f"model.{ov_graph}_int8.onnx"
    t = time.perf_counter()
    quantize_qdq(onnx_path, qdq, batcher())
    finish_sidecar(qdq, meta, "onnx", "int8", ("onnxruntime",))
    log(f"ORT static QDQ quantisation: {time.perf_counter() - t:.1f} s")
    quantize_qdq(ov_onnx, ov_qdq, batcher())
    t = time.perf_counter()
    nncf_xml, report = export_openvino(ov_onnx, work / "ov_nncf" / "model.xml", "int8", crops,
                                       "nncf", batch_size=batch)
    assert report is not None  # int8: export_openvino checks the IR's accuracy and returns its report
    log(f"NNCF quantisation + IR: {time.perf_counter() - t:.1f} s; {report.summary()}")
    qdq_xml, report = export_openvino(ov_onnx, work / "ov_qdq" / "model.xml", "int8", crops,
                                      "qdq", qdq_onnx=ov_qdq, batch_size=batch)
    assert report is not None
    log(f"ORT QDQ → IR: {report.summary()}")
    return {"onnx": onnx_path, "qdq": qdq, "ov_onnx": ov_onnx, "nncf_xml": nncf_xml,
            "qdq_xml": qdq_xml}


def backend_names() -> list[str]:
    """Row names, torch eager fp32 first (the baseline of every ratio)."""
    names = ["torch eager fp32", "onnxruntime fp32", "onnxruntime int8 (qdq)", "openvino fp32"]
    if "bf16" in cpu_precisions():
        names.append("openvino bf16")
    return names + ["openvino int8 (nncf)", "openvino int8 (ort qdq)"]


def make_backend(name: str, model: torch.nn.Module, meta: ModelMetadata, paths: dict[str, Path],
                 batch: int, threads: int, ort_spinning: bool = False, profile: bool = False
                 ) -> Any:
    """One row's backend with its runtime's threads pinned to `threads`."""
    torch.set_num_threads(threads)

    def ort(path: Path) -> OrtBackend:
        return OrtBackend(path, device="cpu", threads=threads, spinning=ort_spinning)

    def ov(path: Path, precision: str = "auto") -> OpenVinoBackend:
        return OpenVinoBackend(path, precision=precision, batch_size=batch, threads=threads,
                               perf_counts=profile)

    factories: dict[str, Callable[[], Any]] = {
        "torch eager fp32": lambda: TorchBackend(model, ModelMetadata.from_dict(meta.to_dict()),
                                                 device="cpu"),
        "onnxruntime fp32": lambda: ort(paths["onnx"]),
        "onnxruntime int8 (qdq)": lambda: ort(paths["qdq"]),
        "openvino fp32": lambda: ov(paths["ov_onnx"], precision="fp32"),
        "openvino bf16": lambda: ov(paths["ov_onnx"], precision="bf16"),
        "openvino int8 (nncf)": lambda: ov(paths["nncf_xml"]),
        "openvino int8 (ort qdq)": lambda: ov(paths["qdq_xml"]),
    }
    return factories[name]()


def make_backends(model: torch.nn.Module, meta: ModelMetadata, paths: dict[str, Path],
                  batch: int, threads: int, ort_spinning: bool = False, profile: bool = False
                  ) -> dict[str, Any]:
    """name → Backend for every row, in `backend_names()` order."""
    return {name: make_backend(name, model, meta, paths, batch, threads, ort_spinning, profile)
            for name in backend_names()}


def _isolated_rates(name: str, model: torch.nn.Module, meta: ModelMetadata,
                    paths: dict[str, Path], batch: np.ndarray, args: argparse.Namespace
                    ) -> tuple[list[float], dict[str, list[float]], list[dict[str, Any]]]:
    """Runs in a fresh process: one backend's repetitions, the GEMM peaks measured
    between them, and its layer profile."""
    be = make_backend(name, model, meta, paths, len(batch), args.threads, args.ort_spinning,
                      args.profile)
    rates, peaks = throughput({name: be}, batch, args.reps, args.calls, args.threads)
    return rates[name], peaks, (be.layer_profile() if args.profile
                                and name.startswith("openvino") else [])


def isolated_throughput(model: torch.nn.Module, meta: ModelMetadata, paths: dict[str, Path],
                        batch: np.ndarray, args: argparse.Namespace
                        ) -> tuple[dict[str, list[float]], dict[str, list[float]],
                                   dict[str, list[dict[str, Any]]]]:
    """Each row in its own spawned process, one after another: no pool of an earlier
    runtime (spinning or not) is alive while a row is timed."""
    rates: dict[str, list[float]] = {}
    peaks: dict[str, list[float]] = {}
    profiles: dict[str, list[dict[str, Any]]] = {}
    ctx = multiprocessing.get_context("spawn")
    for name in backend_names():
        with ctx.Pool(1) as pool:
            rates[name], row_peaks, profiles[name] = pool.apply(
                _isolated_rates, (name, model, meta, paths, batch, args))
        for dtype, values in row_peaks.items():
            peaks.setdefault(dtype, []).extend(values)
    return rates, peaks, profiles


def print_profiles(profiles: dict[str, list[dict[str, Any]]], top: int = 6) -> None:
    """OpenVINO's per-layer times of the last timed call, slowest layer kinds first."""
    for name, rows in profiles.items():
        if not rows:
            continue
        total = sum(r["seconds"] for r in rows) or 1.0
        print(f"{name}: " + "; ".join(f"{r['layer']}/{r['kernel']} ×{r['count']} "
                                       f"{100 * r['seconds'] / total:.0f}%" for r in rows[:top]))


def throughput(backends: dict[str, Any], batch: np.ndarray, reps: int, calls: int,
               peak_threads: int | None = None
               ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Images/s per repetition, repetitions interleaved across backends; with
    `peak_threads`, each repetition also measures the GEMM peaks (GMAC/s, best of 3
    products each), so every row's share of the peak compares rates taken side by side."""
    for be in backends.values():  # warm-up: first-call allocations and kernel selection
        be.predict(batch)
    rates: dict[str, list[float]] = {name: [] for name in backends}
    peaks: dict[str, list[float]] = {}
    for _ in range(reps):
        for name, be in backends.items():
            t = time.perf_counter()
            for _ in range(calls):
                be.predict(batch)
            rates[name].append(calls * len(batch) / (time.perf_counter() - t))
        if peak_threads:
            for dtype, value in gemm_peaks(peak_threads, reps=3).items():
                peaks.setdefault(dtype, []).append(value)
    return rates, peaks


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
        row: dict[str, Any] = {
            "backend": name, "images_per_s": med, "vs_torch": med / base,
            "spread": (min(values), max(values)), "ap": aps.get(name),
            "ap_drop_points": None if base_ap is None else 100 * (base_ap - aps[name]),
            "gmac_per_s": med * gmacs_per_image,
            "peak_share": None if peak is None else med * gmacs_per_image / peak,
            "ceiling_vs_torch": None if peak is None else peak / (base * gmacs_per_image)}
        if name in TARGETS and row["peak_share"] is not None:
            share, drop = TARGETS[name]
            ok = row["peak_share"] >= share and (drop is None or row["ap_drop_points"] is None
                                                  or row["ap_drop_points"] <= drop)
            ap_part = "" if drop is None else f" & ≤{drop:g} pt"
            row["target"] = f"≥{100 * share:g}% peak{ap_part}: {'met' if ok else 'NOT met'}"
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
    crops = calibration_crops(calib, meta.input_hw, args.calib_count)
    cpu = cpu_summary()
    print(f"model: SimpleBaseline-{meta.backbone} {meta.input_hw[0]}×{meta.input_hw[1]}, {note}")
    print(f"cpu: {cpu}, {os.cpu_count()} cores, threads {args.threads}, OpenVINO precisions "
          f"{', '.join(cpu_precisions())}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"batch {args.batch}, {args.reps} interleaved reps × {args.calls} batches; "
          f"calibration: {len(crops)} crops from {calib}")
    print(f"graphs: ONNX Runtime subpixel-deconv, OpenVINO {args.ov_graph}; ORT spinning "
          f"{'on' if args.ort_spinning else 'off'}; "
          f"{'each row in a fresh process' if args.isolate else 'rows interleaved in one process'}")
    reps = np.resize(np.arange(len(crops)), args.batch)
    batch = normalize_numpy(crops[reps], meta.mean, meta.std)
    profiles: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_artifacts(model, meta, crops, Path(tmp), args.batch, print, args.ov_graph)
        if args.isolate:
            rates, peak_reps, profiles = isolated_throughput(model, meta, paths, batch, args)
            backends = make_backends(model, meta, paths, args.batch, args.threads) \
                if args.val_ann else {}
        else:
            backends = make_backends(model, meta, paths, args.batch, args.threads,
                                     args.ort_spinning, args.profile)
            rates, peak_reps = throughput(backends, batch, args.reps, args.calls, args.threads)
            if args.profile:
                profiles = {n: be.layer_profile() for n, be in backends.items()
                            if n.startswith("openvino")}
        aps = val_aps(backends, args.val_ann, args.val_images, args.batch) if args.val_ann else {}
    print(f"load average at end {os.getloadavg()[0]:.2f} (other processes share these cores)")
    gmacs = count_macs(model, meta.input_hw) / 1e9
    peaks = {k: statistics.median(v) for k, v in peak_reps.items()}
    print(f"network: {gmacs:.2f} GMAC per crop; GEMM peaks on {args.threads} threads, measured "
          "between the reps (median of reps; min–max): " + ", ".join(
              f"{k} {v:.0f} ({min(peak_reps[k]):.0f}–{max(peak_reps[k]):.0f}) GMAC/s"
              for k, v in peaks.items()))
    rows = table(rates, aps, gmacs, peaks)
    print_rows(rows)
    print_profiles(profiles)
    print("ceiling = that arithmetic's GEMM peak / torch eager's achieved GMAC/s: the most "
          "\"× torch\" a runtime at 100 % of the peak could show here")
    if args.json:
        args.json.write_text(json.dumps({"note": note, "cpu": cpu, "gmac_per_image": gmacs,
                                         "gemm_peaks": peaks, "rows": rows,
                                         "ov_graph": args.ov_graph, "isolate": args.isolate,
                                         "ort_spinning": args.ort_spinning,
                                         "profiles": profiles}, indent=2))


if __name__ == "__main__":
    main()

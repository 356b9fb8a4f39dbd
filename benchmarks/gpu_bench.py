"""GPU benchmark: inference backends, end-to-end labeling and the training step, one run.

On a CUDA machine this prints, for SimpleBaseline ResNet-18 and ResNet-101 at 256×192
(random weights: speed does not depend on them):
  1. crops/s at batch 1/32/256 for torch eager fp32, the fast torch mode (fp16 +
     channels_last + CUDA graphs, optionally torch.compile), ONNX Runtime CUDA/TensorRT EP
     and TensorRT FP16/INT8 where installed (absent ones are listed as skipped), each with
     the max |Δheatmap| against eager fp32;
  2. end-to-end `posemum label` of a synthetic JPEG folder with `--decode device` (nvjpeg
     decode → one grid_sample per chunk → fast model → heatmap decode on the GPU) and
     with `--decode host` (CPU decode threads), versus model-only at the same batch;
  3. one `pose-mum-plus` training step (R18, 32 labeled + 32 unlabeled crops, bf16) next
     to a plain semi-supervised step (`eman`), and the crops/s the training data loader
     delivers with N workers.

    python benchmarks/gpu_bench.py                 # full run (< 8 min on an H100)
    python benchmarks/gpu_bench.py --quick         # smaller, for a smoke run
Runs on the CPU too (--device cpu --quick) so the script itself is testable anywhere.
Sections 2 and 3 live beside it (gpu_bench_labeling.py, gpu_bench_training.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_bench_labeling import label_rows, parse_label_runs  # noqa: E402
from gpu_bench_training import sync, training_rows  # noqa: E402

from posemum_deploy.artifacts import ModelMetadata  # noqa: E402
from posemum_deploy.inference.fast_torch import FastTorchBackend  # noqa: E402
from posemum_deploy.inference.torch_backend import TorchBackend  # noqa: E402
from posemum_deploy.models import build_model  # noqa: E402


def rate(fn: Callable[..., object], n_items: int, device: torch.device, reps: int, warmup: int = 3) -> float:
    """Items/s, median over `reps` timed calls after warm-up (`fn` is called with no arguments:
    `...` admits the lambdas that bind loop variables as defaults)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return n_items / statistics.median(times)


def infer_rows(backbone: str, batches: list[int], device: torch.device,
               args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(backbone).eval().to(device)
    meta = ModelMetadata(backbone=backbone)
    eager = TorchBackend(model, meta, device=str(device))
    rows: list[dict] = []
    eager_rate: dict[int, float] = {}  # batch → eager crops/s, measured first

    def add(row: dict) -> None:
        """Keep a row and print it now (flushed), so a run cut short by a time limit still
        shows what it measured."""
        rows.append(row)
        print(format_row(row, eager_rate.get(row["batch"])), flush=True)

    for b in batches:
        x = torch.randn(b, 3, 256, 192, device=device)
        ref = eager.predict_tensor(x)
        reps = args.reps if b > 1 else args.reps * 5
        eager_rate[b] = rate(lambda x=x: eager.predict_tensor(x), b, device, reps)
        add({"model": backbone, "batch": b, "backend": "torch eager fp32",
             "crops_per_s": eager_rate[b], "max_diff": 0.0, "peak": float(ref.abs().max())})
        modes = [("fast fp16+CL+graphs", False)]  # (label, torch.compile)
        if args.compile and (backbone == "resnet18" or args.compile_all) and \
                b == max(batches):  # inductor compiles per batch size: the big one matters
            modes.append(("fast fp16+CL+graphs+compile", True))
        for label, compiled in modes:
            fresh = build_model(backbone).eval()
            fresh.load_state_dict(model.state_dict())
            try:
                fast = FastTorchBackend(fresh, ModelMetadata(backbone=backbone),
                                        device=str(device), precision=args.half, batch_size=b,
                                        cuda_graphs=device.type == "cuda", compile=compiled)
                out = fast.predict_tensor(x)
                add({"model": backbone, "batch": b,
                     "backend": label.replace("fp16", fast.metadata.precision),
                     "crops_per_s": rate(lambda fast=fast, x=x: fast.predict_tensor(x), b, device, reps),
                     "max_diff": float((out - ref).abs().max()),
                     "peak": float(ref.abs().max())})
            except Exception as e:  # report, keep benchmarking the rest
                add({"model": backbone, "batch": b, "backend": label,
                     "skipped": f"{type(e).__name__}: {str(e)[:120]}"})
        for row in runtime_rows(model, backbone, b, x, ref, device, args):
            add(row)
    return rows


def runtime_rows(model: torch.nn.Module, backbone: str, b: int, x: torch.Tensor, ref: torch.Tensor,
                 device: torch.device, args: argparse.Namespace) -> list[dict]:
    """ONNX Runtime GPU providers and TensorRT, where installed."""
    rows = []
    try:
        import onnxruntime as ort
        providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                     if p in ort.get_available_providers()]
    except ImportError:
        providers = []
    if device.type != "cuda" or not providers:
        rows.append({"model": backbone, "batch": b, "backend": "onnxruntime GPU",
                     "skipped": "onnxruntime-gpu not installed or no CUDA"})
    else:
        onnx_path = export_once(model, backbone, args)
        for provider in providers:
            sess = ort.InferenceSession(str(onnx_path), providers=[provider])
            feed = {sess.get_inputs()[0].name: x.cpu().numpy()}
            out = sess.run(None, feed)[0]
            rows.append({"model": backbone, "batch": b, "backend": f"ORT {provider}",
                         "crops_per_s": rate(lambda sess=sess, feed=feed: sess.run(None, feed), b, device,
                                             args.reps),
                         "max_diff": float(np.abs(out - ref.cpu().numpy()).max()),
                         "peak": float(ref.abs().max())})
    try:
        import tensorrt  # noqa: F401
        rows.append({"model": backbone, "batch": b, "backend": "TensorRT",
                     "skipped": "use `posemum export --format tensorrt` + TrtBackend "
                                "(engine builds are minutes; run separately)"})
    except ImportError:
        rows.append({"model": backbone, "batch": b, "backend": "TensorRT FP16/INT8",
                     "skipped": "tensorrt not installed"})
    return rows


_ONNX: dict[str, Path] = {}


def export_once(model: torch.nn.Module, backbone: str, args: argparse.Namespace) -> Path:
    if backbone not in _ONNX:
        path = Path(args.work) / f"{backbone}.onnx"
        torch.onnx.export(model.cpu().float(), (torch.randn(1, 3, 256, 192),), str(path),
                          input_names=["input"], output_names=["heatmaps"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "heatmaps": {0: "batch"}},
                          dynamo=False)
        model.to(args.device)
        _ONNX[backbone] = path
    return _ONNX[backbone]


def synthetic_folder(args: argparse.Namespace) -> Path:
    from posemum_deploy.data.synthetic import generate_dataset

    root = Path(args.work) / "synthetic"
    ann = root / "annotations.json"
    if not ann.is_file():
        generate_dataset(root, args.images, seed=0, image_size=(480, 640))
    return ann


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--half", default="fp16", choices=["fp16", "bf16"])
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-all", action="store_true", help="torch.compile ResNet-101 too")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--loader-batches", type=int, default=30)
    p.add_argument("--label-repeat", type=int, default=10,
                   help="label this many hard-linked copies of the synthetic folder")
    p.add_argument("--label-runs", default="4:device,8:device", type=parse_label_runs,
                   help="multi-process labeling runs on the big folder: "
                        "PROCESSES[:device|host[:SHARDS_PER_TASK|auto]],...")
    p.add_argument("--label-shard", type=int, default=500)
    p.add_argument("--no-label-host", dest="label_host", action="store_false",
                   help="skip the host-decode labeling run")
    p.add_argument("--label-workers", type=int, default=4, help="read/decode threads per process")
    p.add_argument("--label-jpeg", default="nvimgcodec,torchvision",
                   type=lambda v: v.split(","), help="--jpeg-decoder values to compare")
    p.add_argument("--sections", default="inference,labeling,training",
                   type=lambda v: set(v.split(",")))
    p.add_argument("--work", default=tempfile.mkdtemp(prefix="posemum_gpu_bench_"))
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.quick:
        args.reps, args.images, args.train_steps, args.loader_batches = 3, 40, 2, 3
        args.label_repeat, args.label_runs, args.label_shard = 2, [(2, "device", None)], 20
    batches = [1, 8] if args.quick else [1, 32, 256]
    backbones = ["resnet18"] if args.quick else ["resnet18", "resnet101"]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# posemum gpu_bench on {name}, torch {torch.__version__}")
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "inference": []}
    if "inference" in args.sections:
        print("\n## inference, 256x192, crops/s (max |Δheatmap| vs eager fp32)")
        print(f"{'model':10s} {'batch':>5s}  {'backend':36s} {'crops/s':>10s} {'vs eager':>8s} "
              f"{'max diff':>9s} {'/ peak':>9s}", flush=True)
        for bb in backbones:
            report["inference"] += infer_rows(bb, batches, device, args)
    ann = synthetic_folder(args)
    if "labeling" in args.sections:
        b = batches[-1]
        fast = FastTorchBackend(build_model("resnet18").eval(), ModelMetadata(),
                                device=str(device), precision=args.half, batch_size=b,
                                cuda_graphs=device.type == "cuda")
        x = torch.randn(b, 3, 256, 192, device=device)
        model_only = rate(lambda: fast.predict_tensor(x), b, device, args.reps)
        print(f"\n## end-to-end labeling (posemum label), 480x640 images, batch {b}: "
              f"overall and steady-state crops/s, steady / model-only")
        print(f"{'model-only (fast R18)':44s} {model_only:8.0f} crops/s", flush=True)
        report["labeling"] = {"model_only_crops_per_s": model_only,
                              **label_rows(ann, fast, b, model_only, device, args)}
    if "training" in args.sections:
        report["training"] = training_rows(ann, device, args)
        print("\n## training (ResNet-18, 256x192, 32 + 32 crops, bf16)")
        for row in report["training"]:
            print(f"{row['what']:45s} {row['value']:10.2f}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


def format_row(r: dict, eager: float | None) -> str:
    if "skipped" in r:
        return f"{r['model']:10s} {r['batch']:5d}  {r['backend']:36s} skipped: {r['skipped']}"
    ratio = r["crops_per_s"] / eager if eager else float("nan")
    return (f"{r['model']:10s} {r['batch']:5d}  {r['backend']:36s} {r['crops_per_s']:10.0f} "
            f"{ratio:7.2f}x {r['max_diff']:9.2e} {r['max_diff'] / max(r['peak'], 1e-12):9.2e}")


if __name__ == "__main__":
    main()

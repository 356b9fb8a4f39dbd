"""GPU benchmark: inference backends, end-to-end labeling and the training step, one run.

On a CUDA machine this prints, for SimpleBaseline ResNet-18 and ResNet-101 at 256×192
(random weights: speed does not depend on them):
  1. crops/s at batch 1/32/256 for torch eager fp32, the fast torch mode (fp16 +
     channels_last + CUDA graphs, optionally torch.compile), ONNX Runtime CUDA/TensorRT EP
     and TensorRT FP16/INT8 where installed (absent ones are listed as skipped), each with
     the max |Δheatmap| against eager fp32;
  2. end-to-end labeling of a synthetic JPEG folder on the GPU (nvjpeg decode →
     grid_sample crops → fast model → heatmap argmax) versus model-only at the same batch,
     and the CPU-decode `posemum label` pipeline for comparison;
  3. one `pose-mum-plus` training step (R18, 32 labeled + 32 unlabeled crops, bf16) next
     to a plain semi-supervised step (`eman`), and the crops/s the training data loader
     delivers with N workers.

    python benchmarks/gpu_bench.py                 # full run (< 8 min on an H100)
    python benchmarks/gpu_bench.py --quick         # smaller, for a smoke run
Runs on the CPU too (--device cpu --quick) so the script itself is testable anywhere.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from posemum_deploy.export.metadata import ModelMetadata  # noqa: E402
from posemum_deploy.inference.fast_torch import FastTorchBackend  # noqa: E402
from posemum_deploy.inference.torch_backend import TorchBackend  # noqa: E402
from posemum_deploy.models import build_model  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, n_items: int, device: torch.device, reps: int, warmup: int = 3) -> float:
    """Items/s, median over `reps` timed calls after warm-up."""
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


def infer_rows(backbone: str, batches: list[int], device: torch.device, args) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(backbone).eval().to(device)
    meta = ModelMetadata(backbone=backbone)
    eager = TorchBackend(model, meta, device=str(device))
    rows = []
    for b in batches:
        x = torch.randn(b, 3, 256, 192, device=device)
        ref = eager.predict_tensor(x)
        reps = args.reps if b > 1 else args.reps * 5
        rows.append({"model": backbone, "batch": b, "backend": "torch eager fp32",
                     "crops_per_s": rate(lambda: eager.predict_tensor(x), b, device, reps),
                     "max_diff": 0.0})
        modes = [("fast fp16+CL+graphs", dict(compile=False))]
        if args.compile and (backbone == "resnet18" or args.compile_all):
            modes.append(("fast fp16+CL+graphs+compile", dict(compile=True)))
        for label, kw in modes:
            fresh = build_model(backbone).eval()
            fresh.load_state_dict(model.state_dict())
            try:
                fast = FastTorchBackend(fresh, ModelMetadata(backbone=backbone),
                                        device=str(device), precision=args.half, batch_size=b,
                                        cuda_graphs=device.type == "cuda", **kw)
                out = fast.predict_tensor(x)
                rows.append({"model": backbone, "batch": b,
                             "backend": label.replace("fp16", fast.metadata.precision),
                             "crops_per_s": rate(lambda: fast.predict_tensor(x), b, device, reps),
                             "max_diff": float((out - ref).abs().max())})
            except Exception as e:  # report, keep benchmarking the rest
                rows.append({"model": backbone, "batch": b, "backend": label,
                             "skipped": f"{type(e).__name__}: {str(e)[:120]}"})
        rows += runtime_rows(model, backbone, b, x, ref, device, args)
    return rows


def runtime_rows(model, backbone, b, x, ref, device, args) -> list[dict]:
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
                         "crops_per_s": rate(lambda: sess.run(None, feed), b, device, args.reps),
                         "max_diff": float(np.abs(out - ref.cpu().numpy()).max())})
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


def export_once(model, backbone, args) -> Path:
    if backbone not in _ONNX:
        path = Path(args.work) / f"{backbone}.onnx"
        torch.onnx.export(model.cpu().float(), torch.randn(1, 3, 256, 192), str(path),
                          input_names=["input"], output_names=["heatmaps"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "heatmaps": {0: "batch"}},
                          dynamo=False)
        model.to(args.device)
        _ONNX[backbone] = path
    return _ONNX[backbone]


def synthetic_folder(args) -> Path:
    from posemum_deploy.data.synthetic import generate_dataset

    root = Path(args.work) / "synthetic"
    ann = root / "annotations.json"
    if not ann.is_file():
        generate_dataset(root, args.images, seed=0, image_size=(480, 640))
    return ann


def gpu_label_rate(ann: Path, fast: FastTorchBackend, batch: int, device) -> dict:
    """nvjpeg decode → grid_sample crops → fast model → argmax, all on the device."""
    from posemum_deploy.data.boxes import gt_boxes
    from posemum_deploy.data.coco import load_coco_keypoints
    from posemum_deploy.data.transforms import affine_matrices, box_to_center_scale
    from posemum_deploy.inference.gpu_crops import decode_jpegs, normalize_crops, warp_crops_torch

    coco = load_coco_keypoints(ann)
    table = gt_boxes(coco)
    items = [(ann.parent / "images" / im["file_name"], table[im["id"]][0])
             for im in coco["images"] if im["id"] in table]
    meta = fast.metadata
    t0 = time.perf_counter()
    crops_done, pending = 0, []
    for start in range(0, len(items), 64):
        chunk = items[start:start + 64]
        images = decode_jpegs([p for p, _ in chunk], device=str(device))
        for image, (_, boxes) in zip(images, chunk):
            c, s = box_to_center_scale(boxes, meta.input_hw[1] / meta.input_hw[0])
            inv = affine_matrices(c, s, 0.0, meta.input_hw, inverse=True)
            pending.append(warp_crops_torch(image, inv, meta.input_hw))
        crops = torch.cat(pending)
        pending = []
        for i in range(0, len(crops) - batch + 1, batch):
            x = normalize_crops(crops[i:i + batch], meta.mean, meta.std)
            hm = fast.predict_tensor(x)
            hm.flatten(2).argmax(-1)
            crops_done += batch
        rest = len(crops) % batch
        if rest:
            pending.append(crops[len(crops) - rest:])
    sync(device)
    dt = time.perf_counter() - t0
    return {"images": len(items), "crops": crops_done, "crops_per_s": crops_done / dt}


def cpu_label_rate(ann: Path, fast: FastTorchBackend, batch: int, args) -> dict:
    """The `posemum label` pipeline (CPU decode threads) driving the same fast backend."""
    from posemum_deploy.label.runner import LabelSettings, label_folder

    ckpt = Path(args.work) / "r18.pt"
    torch.save({"model": build_model("resnet18").state_dict(), "teacher": None,
                "model_meta": ModelMetadata().to_dict()}, ckpt)
    out = Path(tempfile.mkdtemp(dir=args.work))
    s = label_folder(ckpt, ann.parent / "images", out,
                     LabelSettings(boxes=f"gt:{ann}", shard_size=10_000),
                     backend=fast, batch_size=batch, workers=os.cpu_count())
    return {"images": s.images, "crops": s.crops, "crops_per_s": s.crops_per_s}


def training_rows(ann: Path, device: torch.device, args) -> list[dict]:
    """pose-mum-plus step vs a plain semi-supervised step, and the loader's crop rate."""
    from step_overhead import labeled_batch, make_step
    from torch.utils.data import DataLoader

    from posemum_deploy.data.codec import HeatmapCodec
    from posemum_deploy.data.datasets import TopDownDataset, load_instances
    from posemum_deploy.data.transforms import AffineAugment

    ns = argparse.Namespace(input=(256, 192), tiles=(4, 3), batch=32, backbone="resnet18",
                            precision="bf16")
    steps = {p: make_step(p, ns, device) for p in ("eman", "pose-mum-plus")}
    lab = labeled_batch(ns)
    times = {p: [] for p in steps}
    for i in range(args.train_steps + 3):
        for preset, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step(lab)
            sync(device)
            if i >= 3:
                times[preset].append(time.perf_counter() - t0)
    med = {p: statistics.median(t) for p, t in times.items()}
    ds = TopDownDataset(load_instances(ann, ann.parent / "images"),
                        HeatmapCodec((256, 192), (64, 48)), AffineAugment())
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=os.cpu_count(),
                        drop_last=True, persistent_workers=True)
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(args.loader_batches):
        try:
            batch = next(it)
        except StopIteration:  # small sets: start another epoch
            it = iter(loader)
            batch = next(it)
        n += len(batch["image"])
    loader_rate = n / (time.perf_counter() - t0)
    need = 64 / med["pose-mum-plus"]  # labeled + unlabeled crops per step
    return [{"what": "eman step (plain SSL), ms", "value": med["eman"] * 1e3},
            {"what": "pose-mum-plus step, ms", "value": med["pose-mum-plus"] * 1e3},
            {"what": "pose-mum-plus / plain", "value": med["pose-mum-plus"] / med["eman"]},
            {"what": "crops a pose-mum-plus step consumes /s", "value": need},
            {"what": f"loader crops/s ({os.cpu_count()} workers)", "value": loader_rate},
            {"what": "loader / step need", "value": loader_rate / need}]


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
    p.add_argument("--work", default=tempfile.mkdtemp(prefix="posemum_gpu_bench_"))
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.quick:
        args.reps, args.images, args.train_steps, args.loader_batches = 3, 40, 2, 3
    batches = [1, 8] if args.quick else [1, 32, 256]
    backbones = ["resnet18"] if args.quick else ["resnet18", "resnet101"]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# posemum gpu_bench on {name}, torch {torch.__version__}")
    report = {"device": name, "torch": torch.__version__, "inference": []}
    for bb in backbones:
        report["inference"] += infer_rows(bb, batches, device, args)
    print_inference(report["inference"])
    ann = synthetic_folder(args)
    b = batches[-1]
    fast = FastTorchBackend(build_model("resnet18").eval(), ModelMetadata(), device=str(device),
                            precision=args.half, batch_size=b,
                            cuda_graphs=device.type == "cuda")
    model_only = rate(lambda: fast.predict_tensor(torch.randn(b, 3, 256, 192, device=device)),
                      b, device, args.reps)
    e2e = {"model-only (fast R18)": {"crops_per_s": model_only}}
    if device.type == "cuda":
        e2e["GPU pipeline (nvjpeg + grid_sample)"] = gpu_label_rate(ann, fast, b, device)
    e2e["posemum label (CPU decode threads)"] = cpu_label_rate(ann, fast, b, args)
    report["labeling"] = e2e
    print(f"\n## end-to-end labeling, batch {b}")
    for k, v in e2e.items():
        print(f"{k:40s} {v['crops_per_s']:10.0f} crops/s  {v['crops_per_s'] / model_only:5.2f}x")
    report["training"] = training_rows(ann, device, args)
    print("\n## training (ResNet-18, 256x192, 32 + 32 crops, bf16)")
    for row in report["training"]:
        print(f"{row['what']:45s} {row['value']:10.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


def print_inference(rows: list[dict]) -> None:
    print("\n## inference, 256x192, crops/s (max |Δheatmap| vs eager fp32)")
    print(f"{'model':10s} {'batch':>5s}  {'backend':36s} {'crops/s':>10s} {'vs eager':>8s} "
          f"{'max diff':>9s}")
    eager = {(r["model"], r["batch"]): r["crops_per_s"] for r in rows
             if r["backend"] == "torch eager fp32"}
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:10s} {r['batch']:5d}  {r['backend']:36s} skipped: {r['skipped']}")
            continue
        ratio = r["crops_per_s"] / eager[(r["model"], r["batch"])]
        print(f"{r['model']:10s} {r['batch']:5d}  {r['backend']:36s} {r['crops_per_s']:10.0f} "
              f"{ratio:7.2f}x {r['max_diff']:9.2e}")


if __name__ == "__main__":
    main()

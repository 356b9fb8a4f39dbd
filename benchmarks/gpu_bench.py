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

from posemum_deploy.artifacts import ModelMetadata  # noqa: E402
from posemum_deploy.inference.fast_torch import FastTorchBackend  # noqa: E402
from posemum_deploy.inference.torch_backend import TorchBackend  # noqa: E402
from posemum_deploy.data.jpeg_decoders import nvimgcodec_installed  # noqa: E402
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
        eager_rate[b] = rate(lambda: eager.predict_tensor(x), b, device, reps)
        add({"model": backbone, "batch": b, "backend": "torch eager fp32",
             "crops_per_s": eager_rate[b], "max_diff": 0.0, "peak": float(ref.abs().max())})
        modes = [("fast fp16+CL+graphs", dict(compile=False))]
        if args.compile and (backbone == "resnet18" or args.compile_all) and \
                b == max(batches):  # inductor compiles per batch size: the big one matters
            modes.append(("fast fp16+CL+graphs+compile", dict(compile=True)))
        for label, kw in modes:
            fresh = build_model(backbone).eval()
            fresh.load_state_dict(model.state_dict())
            try:
                fast = FastTorchBackend(fresh, ModelMetadata(backbone=backbone),
                                        device=str(device), precision=args.half, batch_size=b,
                                        cuda_graphs=device.type == "cuda", **kw)
                out = fast.predict_tensor(x)
                add({"model": backbone, "batch": b,
                     "backend": label.replace("fp16", fast.metadata.precision),
                     "crops_per_s": rate(lambda: fast.predict_tensor(x), b, device, reps),
                     "max_diff": float((out - ref).abs().max()),
                     "peak": float(ref.abs().max())})
            except Exception as e:  # report, keep benchmarking the rest
                add({"model": backbone, "batch": b, "backend": label,
                     "skipped": f"{type(e).__name__}: {str(e)[:120]}"})
        for row in runtime_rows(model, backbone, b, x, ref, device, args):
            add(row)
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


def replicate(ann: Path, repeat: int, work: Path) -> Path:
    """`repeat` hard-linked copies of the synthetic folder (rNN/name) and their GT json,
    so a long labeling run needs no long generation."""
    coco = json.loads(ann.read_text())
    root = work / f"label_x{repeat}"
    images, anns = [], []
    for r in range(repeat):
        (root / "images" / f"r{r:02d}").mkdir(parents=True, exist_ok=True)
        offset = r * 10_000_000
        for im in coco["images"]:
            dst = root / "images" / f"r{r:02d}" / im["file_name"]
            if not dst.exists():
                os.link(ann.parent / "images" / im["file_name"], dst)
            images.append({**im, "id": im["id"] + offset, "file_name": f"r{r:02d}/{im['file_name']}"})
        anns += [{**a, "id": a["id"] + offset, "image_id": a["image_id"] + offset}
                 for a in coco["annotations"]]
    out = root / "annotations.json"
    out.write_text(json.dumps({**coco, "images": images, "annotations": anns}))
    return out


def label_rows(ann: Path, fast: FastTorchBackend, batch: int, model_only: float, device,
               args) -> dict:
    """`label_folder` (what `posemum label` runs) with the fast backend: device decode in
    one process (the warm in-process backend) and in N spawned processes sharing the
    GPU (each loads the checkpoint), and host decode threads for comparison."""
    from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder

    ckpt = Path(args.work) / "r18.pt"
    weights = {k: v.float().cpu() for k, v in fast.model.state_dict().items()}
    torch.save({"model": weights, "teacher": None, "model_meta": ModelMetadata().to_dict()}, ckpt)
    big = replicate(ann, args.label_repeat, Path(args.work))
    results = {}

    def run(name: str, gt: Path, decode: str, processes: int = 1, jpeg: str = "torchvision",
            shards_per_task: int | None = None) -> None:
        backend = fast if processes == 1 else "torch-fast"
        options = {} if processes == 1 else {"precision": args.half, "device": str(device)}
        start = time.time()
        s = label_folder(ckpt, gt.parent / "images", Path(tempfile.mkdtemp(dir=args.work)),
                         LabelSettings(boxes=f"gt:{gt}", shard_size=args.label_shard,
                                       decode=decode, jpeg_decoder=jpeg),
                         RunSettings(backend=backend, batch_size=batch,
                                     workers=args.label_workers, processes=processes,
                                     backend_options=options, shards_per_task=shards_per_task))
        results[name] = {"images": s.images, "crops": s.crops, "crops_per_s": s.crops_per_s,
                         "steady_crops_per_s": s.steady_crops_per_s(),
                         "labeling_window_s": (max(m[0] for m in s.shard_marks)
                                               - min(m[0] for m in s.shard_marks)),
                         "stage_seconds": {k: round(v, 3) for k, v in s.stage_seconds.items()}}
        # When each labeler began and finished loading its model and when its first and last
        # shards were done, in seconds from the call (labelers that never overlap show here).
        results[name]["labelers"] = [
            {"load_s": round(v["started_at"] - start, 1),
             "ready_s": round(v["ready_at"] - start, 1), "shards": len(v["shards"]),
             "gpu": v["gpu"],
             "first_s": round(min(v["shards"]) - start, 1),
             "last_s": round(max(v["shards"]) - start, 1),
             "stage_s": round(v["stage_s"], 1), "cpu_s": round(v["cpu_s"], 1)}
            for v in s.labelers.values()]
        print_label_row(name, results[name], model_only)
        if processes > 1:
            print("   labelers (model load / ready / first / last shard s, shards, "
                  "stage-clock s, process CPU s): " +
                  ", ".join(f"{x['load_s']}/{x['ready_s']}/{x['first_s']}/{x['last_s']} "
                            f"({x['shards']}, {x['stage_s']}, {x['cpu_s']})"
                            for x in results[name]["labelers"]), flush=True)

    jpegs = [j for j in args.label_jpeg if j != "nvimgcodec" or nvimgcodec_installed()]
    if jpegs != args.label_jpeg:
        print("(nvImageCodec is not installed: its rows are skipped)", flush=True)
    for jpeg in jpegs:
        run(f"1 process, {args.images} img, {jpeg}", ann, "device", jpeg=jpeg)
    if args.label_host:
        run(f"--decode host --processes 1 ({args.images} img)", ann, "host")
    if args.label_runs and device.type == "cuda":  # spawned labelers need the GPU memory
        fast.close()
    for n, decode, per_task in args.label_runs:
        for jpeg in jpegs if decode == "device" else ["-"]:
            run(f"{n} processes, {args.images * args.label_repeat} img, {decode}"
                + (f", {jpeg}" if decode == "device" else "")
                + (f", {per_task} shard/task" if per_task else ""), big, decode, n,
                jpeg if decode == "device" else "torchvision", per_task)
    return results


def parse_label_runs(value: str) -> list[tuple[int, str, int | None]]:
    """"8:device:auto,8:host:auto,4:device:1" → (processes, decode, shards per task)."""
    runs = []
    for item in filter(None, value.split(",")):
        parts = item.split(":")
        n, decode, per_task = parts + ["device", "auto"][len(parts) - 1:]
        runs.append((int(n), decode, None if per_task == "auto" else int(per_task)))
    return runs


def print_label_row(name: str, row: dict, model_only: float) -> None:
    steady = row["steady_crops_per_s"]
    print(f"{name:44s} {row['crops_per_s']:8.0f} {steady:8.0f} crops/s  steady "
          f"{steady / model_only:5.2f}x  first→last shard {row['labeling_window_s']:.1f} s  "
          f"stages(s): {json.dumps(row['stage_seconds'])}", flush=True)


def kernel_time_per_step(step, batch: dict, device: torch.device, n: int = 5) -> tuple[float, float]:
    """(GPU kernel ms, kernels launched) per step, from the profiler's CUDA activity.

    Set against the step's wall time this says whether the GPU or the host (Python
    launching kernels) bounds the step. NaN where no CUDA activity is recorded.
    """
    if device.type != "cuda":
        return float("nan"), float("nan")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                step(batch)
            sync(device)
        kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    except (RuntimeError, AttributeError) as e:  # a profiler that cannot trace: keep the timings
        print(f"profiler unavailable ({e}); kernel time not measured", file=sys.stderr)
        return float("nan"), float("nan")
    busy_us = sum(e.self_device_time_total for e in kernels)
    return busy_us / n / 1e3, sum(e.count for e in kernels) / n


def time_steps(steps: dict, batch: dict, device: torch.device, n: int) -> dict[str, tuple[float, float]]:
    """Per preset: (median ms of one step with a sync on each side, ms per step of `n`
    steps run back to back with one sync at the end). The first is the step's latency;
    the second is what training runs at, where the host queues the next step's kernels
    while the GPU still runs the last one's. Presets alternate so drift hits all alike."""
    latency = {p: [] for p in steps}
    for i in range(n + 3):
        for preset, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step(batch)
            sync(device)
            if i >= 3:
                latency[preset].append(time.perf_counter() - t0)
    pipelined = {p: [] for p in steps}
    for _ in range(3):  # median of three windows: one GC pause or allocator growth is not the rate
        for preset, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                step(batch)
            sync(device)
            pipelined[preset].append((time.perf_counter() - t0) / n)
    return {p: (statistics.median(latency[p]) * 1e3, statistics.median(pipelined[p]) * 1e3)
            for p in steps}


def loader_crops_per_s(ann: Path, batches: int, decode: str = "host",
                       device: torch.device | None = None) -> float:
    """Crops/s the labeled training loader delivers: `host`, workers decode and crop
    (cv2 decode + affine + heatmaps); `device`, workers read bytes and make targets and
    the GPU decodes and crops each batch (`data.decode: device`), synced at the end."""
    from torch.utils.data import DataLoader

    from posemum_deploy.data.codec import HeatmapCodec
    from posemum_deploy.data.datasets import TopDownDataset, load_instances
    from posemum_deploy.data.transforms import AffineAugment
    from posemum_deploy.training.device_batches import (batch_crops, encoded_items,
                                                        loader_collate)

    ds = TopDownDataset(load_instances(ann, ann.parent / "images"),
                        HeatmapCodec((256, 192), (64, 48)), AffineAugment(),
                        encoded=encoded_items(decode))
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=os.cpu_count(),
                        drop_last=True, persistent_workers=True, collate_fn=loader_collate(decode))
    crops = batch_crops(decode, device or torch.device("cpu"), (256, 192))
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:  # small sets: start another epoch
            it = iter(loader)
            batch = next(it)
        if crops is not None:
            batch = crops(batch)
        n += len(batch["image"])
    if device is not None:
        sync(device)
    return n / (time.perf_counter() - t0)


def training_rows(ann: Path, device: torch.device, args) -> list[dict]:
    """pose-mum-plus step vs a plain semi-supervised step (fused Adam, teacher forward
    from a CUDA graph), the plain step once with PyTorch's default multi-tensor Adam and
    once with an eager teacher, GPU kernel time per step, and the loader's crop rate."""
    from step_overhead import labeled_batch, make_step

    ns = argparse.Namespace(input=(256, 192), tiles=(4, 3), batch=32, backbone="resnet18",
                            precision="bf16")
    steps = {p: make_step(p, ns, device) for p in ("eman", "pose-mum-plus")}
    steps["eman, default Adam"] = make_step("eman", ns, device)
    plain = steps["eman, default Adam"]
    plain.optimizer = torch.optim.Adam(plain.model.parameters(), lr=1e-3)
    steps["eman, eager teacher"] = make_step("eman", ns, device)
    steps["eman, eager teacher"]._teacher_graph = None
    lab = labeled_batch(ns)
    if device.type == "cuda":  # as the loader hands batches over (pin_memory=True)
        lab = {k: v.pin_memory() for k, v in lab.items()}
    timed = time_steps(steps, lab, device, args.train_steps)
    rows = []
    for preset, (latency, pipelined) in timed.items():
        gpu_ms, kernels = kernel_time_per_step(steps[preset], lab, device)
        rows += [{"what": f"{preset} step, ms (synced)", "value": latency},
                 {"what": f"{preset} step, ms (back to back)", "value": pipelined},
                 {"what": f"{preset} GPU kernel ms / step", "value": gpu_ms},
                 {"what": f"{preset} kernels / step", "value": kernels}]
    plus, plain_ms = timed["pose-mum-plus"][1], timed["eman"][1]
    loader_rate = loader_crops_per_s(ann, args.loader_batches)
    device_rate = loader_crops_per_s(ann, args.loader_batches, "device", device) \
        if device.type == "cuda" else None
    need = 64 / (plus / 1e3)  # labeled + unlabeled crops per step
    rows += [{"what": "pose-mum-plus / plain (back to back)", "value": plus / plain_ms},
             {"what": "crops a pose-mum-plus step consumes /s", "value": need},
             {"what": f"loader crops/s ({os.cpu_count()} workers)", "value": loader_rate},
             {"what": "loader / step need", "value": loader_rate / need}]
    if device_rate is not None:
        rows += [{"what": f"loader crops/s, --decode device ({os.cpu_count()} workers)",
                  "value": device_rate},
                 {"what": "loader (--decode device) / step need", "value": device_rate / need}]
    return rows


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
    report = {"device": name, "torch": torch.__version__, "inference": []}
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

"""gpu_bench's labeling section: `posemum label` end to end on a synthetic JPEG folder
(device and host decode, one process and N spawned ones), against the model-only rate."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.jpeg_decoders import nvimgcodec_installed
from posemum_deploy.inference.fast_torch import FastTorchBackend


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


def label_rows(ann: Path, fast: FastTorchBackend, batch: int, model_only: float,
               device: torch.device, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """`label_folder` (what `posemum label` runs) with the fast backend: device decode in
    one process (the warm in-process backend) and in N spawned processes sharing the
    GPU (each loads the checkpoint), and host decode threads for comparison."""
    from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder

    ckpt = Path(args.work) / "r18.pt"
    weights = {k: v.float().cpu() for k, v in fast.model.state_dict().items()}
    torch.save({"model": weights, "teacher": None, "model_meta": ModelMetadata().to_dict()}, ckpt)
    big = replicate(ann, args.label_repeat, Path(args.work))
    results: dict[str, dict[str, Any]] = {}

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

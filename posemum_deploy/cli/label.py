"""`posemum label | merge | visualize`: bulk pseudo-labels of image folders."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from posemum_deploy.cli.progress import RichLabelProgress, make_progress
from posemum_deploy.errors import ConfigError


def label(
    model: Annotated[Path, typer.Argument(help="Checkpoint (.pt), ONNX, engine or OpenVINO .xml.")],
    images_dir: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: shards, manifest, errors.")],
    boxes: Annotated[str, typer.Option(
        "--boxes", help="gt:ANN.json | det:DET.json | hog | full | detector:[ARCH:]WEIGHTS")] = "full",
    boxes_ann: Annotated[Path | None, typer.Option(
        "--boxes-ann", help="COCO json whose 'images' map file names to ids for det: boxes.",
        show_default="numeric file stem")] = None,
    box_score: Annotated[float, typer.Option("--box-score", help="Minimum person box score.")] = 0.0,
    max_people: Annotated[int, typer.Option("--max-people", min=1,
                                            help="People per image, best first.")] = 20,
    backend: Annotated[str, typer.Option(
        "--backend", help="auto | torch | torch-fast | onnxruntime | tensorrt | openvino")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per inference call.")] = 64,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Decode threads (local) or threads per actor (ray).",
        show_default="min(4, CPUs)")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Images per shard file.")] = 1000,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Flip test (2x the compute).")] = False,
    oks_nms: Annotated[float, typer.Option(
        "--oks-nms", min=0.0, max=1.0, help="Per-image OKS-NMS threshold; 0 turns it off.")] = 0.9,
    decode: Annotated[str, typer.Option(
        "--decode", help="host: CPU threads decode and crop | device: JPEG decode and "
        "grid_sample crops on the model's GPU (gt:/det:/full boxes)")] = "host",
    jpeg_decoder: Annotated[str, typer.Option(
        "--jpeg-decoder", help="--decode device: torchvision (nvjpeg) | nvimgcodec "
        "(hardware JPEG engines; pip install nvidia-nvimgcodec-cu13[nvjpeg])")] = "torchvision",
    processes: Annotated[int, typer.Option(
        "--processes", min=1, help="Labeling processes, each with its own model (several "
        "share one GPU: a GPU outruns one Python process)")] = 1,
    gpus: Annotated[str | None, typer.Option(
        "--gpus", help="GPUs to spread the --processes labelers over, round-robin "
        "(CUDA_VISIBLE_DEVICES entries, e.g. 0,1,2,3)", show_default="every visible GPU")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run in --out.")] = False,
    engine: Annotated[str, typer.Option(
        "--engine", help="local | ray (RAY_ADDRESS for a cluster)")] = "local",
    ray_actors: Annotated[int | None, typer.Option(
        "--ray-actors", min=1, help="Model actors for --engine ray.",
        show_default="one per GPU, else CPUs/2")] = None,
    tta: Annotated[str, typer.Option(
        "--tta", help="Views of every person, heatmaps averaged: flip | scales=0.8,1.0,1.2 | "
        "flip,scales=... (records each joint's agreement; docs/pseudo-labels.md)")] = "none",
    ensemble: Annotated[list[Path] | None, typer.Option(
        "--model", help="Another teacher averaged with MODEL (repeat for more; same input "
        "size and keypoints)")] = None,
    models_file: Annotated[Path | None, typer.Option(
        "--models", help="A text file of further teachers, one path a line.")] = None,
) -> None:
    """Pseudo-label every image under IMAGES_DIR into resumable JSONL shards."""
    from posemum_deploy.inference.tta import read_model_list
    from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
    from posemum_deploy.label.summary import hours_per_million_images

    members = [str(m) for m in ensemble or []]
    members += read_model_list(models_file) if models_file is not None else []
    settings = LabelSettings(boxes=boxes, boxes_ann=str(boxes_ann) if boxes_ann else None,
                             box_score_threshold=box_score, max_people=max_people, flip=flip,
                             oks_nms=oks_nms or None, shard_size=shard_size, decode=decode,
                             jpeg_decoder=jpeg_decoder, tta=tta, ensemble=members)
    run = RunSettings(backend=backend, batch_size=batch_size, workers=workers, resume=resume,
                      engine=engine, processes=processes, ray_actors=ray_actors,
                      gpus=[g.strip() for g in gpus.split(",") if g.strip()]
                      if gpus is not None else None)
    progress = RichLabelProgress()
    with progress.progress:
        summary = label_folder(model, images_dir, out, settings, run, progress)
    table = Table(title=f"labeled {images_dir} → {out}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [("images (this run)", f"{summary.images}"), ("persons", f"{summary.persons}"),
            ("skipped (errors.jsonl)", f"{summary.skipped}"),
            ("rate per shard", "label_log.jsonl"),
            ("shards written / resumed / total",
             f"{summary.shards_written} / {summary.shards_resumed} / {summary.shards_total}"),
            ("time", f"{summary.seconds:.1f} s"), ("images/s", f"{summary.images_per_s:.1f}"),
            ("crops/s", f"{summary.crops_per_s:.1f}")]
    steady = summary.steady_crops_per_s()
    if steady:  # without the start-up (labelers loading models), which a long job pays once
        rows.append(("crops/s after the first 20 % of images", f"{steady:.1f}"))
    # A number to plan with: the steady rate when there is one, else the run's own.
    per_s = summary.steady_images_per_s() or summary.images_per_s
    if per_s:
        rows.append(("hours per million images on this machine",
                     f"{hours_per_million_images(per_s):.2f}"))
    rows += [(f"  {k} (s, summed over threads)", f"{v:.2f}")
             for k, v in sorted(summary.stage_seconds.items())]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def merge(
    out_dir: Annotated[Path, typer.Argument(help="The --out folder of `posemum label`.")],
    out: Annotated[Path, typer.Option("--out", help="COCO pseudo-label json to write.")],
    min_joint_score: Annotated[float, typer.Option(
        "--min-joint-score", help="Joints below this become unlabeled (v=0).")] = 0.2,
    min_instance_score: Annotated[float, typer.Option(
        "--min-instance-score", help="Drop people scoring below this.")] = 0.0,
    min_joints: Annotated[int, typer.Option(
        "--min-joints", min=0, help="Drop people with fewer confident joints.")] = 1,
    results_out: Annotated[Path | None, typer.Option(
        "--results-out", help="Also write a COCO keypoint results list here.")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="coco: --out is a json | yolo: --out is a folder, an Ultralytics "
        "pose dataset (labels/, symlinked images/, data.yaml)")] = "coco",
    images: Annotated[Path | None, typer.Option(
        "--images", help="--format yolo: the folder that was labeled.")] = None,
    split: Annotated[str, typer.Option("--split", help="--format yolo: train | val | test")
                     ] = "train",
    min_agreement: Annotated[float, typer.Option(
        "--min-agreement", min=0.0, max=1.0, help="Joints whose TTA views / teachers agree "
        "less become unlabeled (labels made with --tta or several --model).")] = 0.0,
    thresholds: Annotated[Path | None, typer.Option(
        "--thresholds", help="Per-joint thresholds from `posemum calibrate`; they replace "
        "--min-joint-score / --min-agreement for the joints they set.")] = None,
) -> None:
    """Filter labeling shards into a training-ready COCO person-keypoints file."""
    from posemum_deploy.label.calibrate import load_thresholds
    from posemum_deploy.label.merge import MergeFilter, merge_labels

    flt = MergeFilter(min_joint_score, min_instance_score, min_joints, min_agreement,
                      load_thresholds(thresholds) if thresholds is not None else None)
    yolo_dir = None
    if fmt not in ("coco", "yolo"):
        raise ConfigError(f"--format {fmt!r}: choose coco or yolo")
    if fmt == "yolo":  # merge into DIR/<split>_coco.json, then write the YOLO split from it
        if images is None or not images.is_dir():
            raise ConfigError(f"--format yolo needs --images, the folder that was labeled "
                              f"(got {images})")
        yolo_dir, out = out, out / f"{split}_coco.json"
    with make_progress() as bar:
        task = bar.add_task("merge", total=None)
        stats = merge_labels(out_dir, out, flt, results_out,
                             lambda read, total: bar.update(task, completed=read, total=total))
    if yolo_dir is not None:
        from posemum_deploy.data.coco import load_json
        from posemum_deploy.data.yolo import write_yolo_dataset

        assert images is not None  # --format yolo checked it above
        out = write_yolo_dataset(load_json(out), images, yolo_dir, split)
    Console().print(f"{out}: {stats.images} images, {stats.annotations} of {stats.persons_in} "
                    f"people kept" + (f"; {stats.results} results → {results_out}"
                                      if results_out else ""), highlight=False, soft_wrap=True)


def visualize(
    out_dir: Annotated[Path, typer.Argument(help="The --out folder of `posemum label`.")],
    images: Annotated[Path, typer.Option("--images", help="The labeled image folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the drawn images.")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many images to draw.")] = 20,
    min_joint_score: Annotated[float, typer.Option(
        "--min-joint-score", help="Draw joints scoring at least this.")] = 0.2,
) -> None:
    """Draw skeletons of a sample of labeled images."""
    from posemum_deploy.label.visualize import visualize_run

    if not images.is_dir():
        raise ConfigError(f"{images}: not a folder; pass the image folder that was labeled")
    written = visualize_run(out_dir, images, out, n, min_joint_score)
    Console().print(f"drew {len(written)} image(s) into {out}", highlight=False, soft_wrap=True)

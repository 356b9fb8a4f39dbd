"""Pseudo-label rounds on synthetic people: does round 1 beat an equal-steps control?

Per seed (the seed draws the labeled, unlabeled and val sets as well as the training
randomness, so every seed is a fresh draw of the whole experiment): a small labeled
split, an unlabeled folder ≥ 10× its images (person boxes from its json, labels
ignored) and 1,000 val images (100 left ±2 AP of per-seed noise in ssl_synthetic).
Round 0 trains on the labeled split for `--teacher-steps` (default: `--steps`), round 1 for
`--steps`; each row is scored on the val set (COCO keypoint AP, GT boxes, flip test):

  a    labeled-only control at the same total steps (round 0 + round 1), at its best
       schedule per seed: the better of a-single (one schedule of all the steps) and
       a-restart (round 0, then `steps` more labeled-only steps from it: b's own
       schedule without the pseudo-labels)
  b    round 1, the full recipe: round 0 labels the folder with TTA (--tta), joints kept
       at per-joint thresholds calibrated on the val set (--precision; --no-calibrate:
       score ≥ --min-joint-score), the student (--init: fine-tuned from the round-0
       teacher, or from the initial weights) trains `steps` steps on mixed batches
       (--labeled-ratio) with its pseudo-labeled part noised (--noise)
  c-*  ablations of b: c-tta (labels from one flip-test pass, thresholds calibrated for
       it), c-noise (no noise), c-union (one union list, labeled repeated), c-init (the
       other --init)
  d    ResNet-50 teacher (steps on the labeled split) → ResNet-18 student as in b,
       against row a (a ResNet-18 with as many steps as teacher + student);
       --distill-teacher: its schedule, or a pose-mum-plus teacher (e's model, a ResNet-50)
  e    pose-mum-plus: round 0 → round 1 retrained with the preset on mixed batches,
       against e-control (pose-mum-plus for all the steps without pseudo-labels);
       labels by --label-members K round 0s, --label-teacher (row d's pose-mum-plus ResNet-50),
       --label-checkpoint (more members), together (e-own: e on its round 0's labels alone);
       --e-stage round0 | single trains that stage alone (a rerun on another host)
  u    the bound: b trained on the unlabeled set's hidden truth instead of its
       pseudo-labels (every visible joint kept): any labeling's ceiling at this budget
       (u − a ≤ 0: the control is not data-limited); u-masked with b (true positions only
       at the joints the labels kept); e-u with e (continue): e − e-control's ceiling
  q    pseudo-label quality against the hidden truth of the unlabeled set: share of
       kept joints within OKS 0.5, keep rate (kept / visible true joints), mean OKS; with
       TTA (q-*) and from one flip-test pass (q-notta-*), each at its calibrated thresholds

With --schedule continue (rows a b d e q u) the run is one schedule of --teacher-steps +
--steps: round 0 trains its first 2/3, up to the first LR decay; round 1 (or --rounds R,
splitting the rest) continues round 0's model at the decayed LR on mixed batches
(a-continue: labeled-only, a-single: the schedule unbroken); row e trains the schedule
with pose-mum-plus, row d continues the ResNet-18 round 0 on a ResNet-50's labels.

The table gives each row's AP as the mean over seeds with the per-seed values, then the
paired gaps (b−a, c−b, d−a, e−e-control), mean ± standard error over seeds. With --steps
800 (the default) one seed of rows a, b and q takes about 15 minutes on 2 cores.

    python benchmarks/rounds_synthetic.py                       # default: rows a b q, 3 seeds
    python benchmarks/rounds_synthetic.py --rows a b c d e q --seeds 3   # the full table
    python benchmarks/rounds_synthetic.py --schedule continue --teacher-steps 1600 \
        --pseudo-loss-weight 0.3                                   # the continued schedule
    python benchmarks/rounds_synthetic.py --seeds 1 --steps 4 --labeled-images 8 \
        --unlabeled-images 16 --val-images 8 --min-joint-score 0 --min-instance-score 0 \
        --min-joints 1 --out runs/rs_smoke                                # smoke run
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

# benchmarks/ is on sys.path when run
from rounds_continued import checkpoints_elsewhere, run_continued
from rounds_label_quality import report_quality, truth_as_pseudo, truth_masked_as_pseudo
from rounds_stages import (
    UNLABELED_IMAGES,
    base_config,
    label_knobs,
    pseudo_labels,
    say,
    seed_data,
    student_knobs,
    trained,
    unlabeled_knob,
)
from rounds_table import print_table

from posemum_deploy.rounds import SCHEDULES
from posemum_deploy.system import usable_cpus

ROWS = ("a", "b", "c", "d", "e", "q", "u")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Every asked row of one seed; AP ×100 per row name (and the q-* quality values)."""
    torch.set_num_threads(args.threads)
    root = Path(args.out)
    sets = seed_data(root, args, seed)
    rows, res = set(args.rows), {}
    t0 = time.perf_counter()

    def done(name: str, value: float) -> None:
        res[name] = value
        say(f"seed {seed}: {name:<15} {value:6.2f}  ({time.perf_counter() - t0:.0f}s)")

    if args.schedule == "continue":
        run_continued(args, seed, sets, res, done)
        return res
    teacher_steps = args.teacher_steps or args.steps
    total = teacher_steps + args.steps
    # labeled-only trainings from scratch are named by their steps (round 0 of one split
    # is then the a-single of another); the rest of a split with a longer round 0 apart
    seed_dir = root / f"s{seed}"
    split = "" if teacher_steps == args.steps else f"t{teacher_steps}"
    cfg = base_config(args, seed, sets, seed_dir / split)
    out = Path(cfg.out)
    knobs, unl = student_knobs(args), unlabeled_knob(args)

    def student(name: str) -> Path:
        return out / f"{name}{knobs}"

    if "a" in rows or "d" in rows:
        done("a-single", trained(cfg, seed_dir / f"labeled-{total}", total)[1])
    if rows & {"a", "b", "c", "q", "u"}:
        teacher, ap0 = trained(cfg, seed_dir / f"labeled-{teacher_steps}", teacher_steps)
        done("round0", ap0)
        start = teacher if args.init == "previous" else None  # where b, c-*, u start
    if "a" in rows:  # b's own schedule without pseudo-labels: round 0, then `steps` more
        done("a-restart", trained(cfg, out / "a-restart", args.steps, init_from=teacher)[1])
    if "a" in rows or "d" in rows:  # the control at its best schedule, per seed
        done("a", max(res["a-single"], res.get("a-restart", res["a-single"])))
    if rows & {"b", "c", "q"}:
        pseudo = pseudo_labels(cfg, out / f"labels{label_knobs(args)}", teacher)
        if "q" in rows:
            report_quality(pseudo, sets["unlabeled"], done)
        if rows & {"b", "c"}:
            done("b", trained(cfg, student("b"), args.steps, pseudo, init_from=start)[1])
        if "c" in rows or "q" in rows:
            single = base_config(args, seed, sets, out)
            single.label_tta = "none"  # one pass with flip test, as before issue 21
            pseudo1 = pseudo_labels(single, out / f"labels-notta{unl}", teacher)
            if "q" in rows:
                report_quality(pseudo1, sets["unlabeled"], done, "notta")
        if "c" in rows:
            done("c-tta", trained(cfg, student("c-tta"), args.steps, pseudo1, init_from=start)[1])
            quiet = base_config(args, seed, sets, out)
            quiet.pseudo_noise = "none"
            done("c-noise", trained(quiet, student("c-noise"), args.steps, pseudo,
                                    init_from=start)[1])
            union = base_config(args, seed, sets, out)
            union.mixed = False
            done("c-union", trained(union, student("c-union"), args.steps, pseudo,
                                    init_from=start)[1])
            other = None if start else teacher
            done("c-init", trained(cfg, student(f"c-init-{'scratch' if start else 'previous'}"),
                                   args.steps, pseudo, init_from=other)[1])
    if "u" in rows:
        truth = truth_as_pseudo(out, sets["unlabeled"], unl)
        done("u", trained(cfg, student("u"), args.steps, str(truth), init_from=start)[1])
        if rows & {"b", "c", "q"}:  # the true positions at the joints the labels kept
            masked = truth_masked_as_pseudo(out, truth, pseudo, label_knobs(args))
            done("u-masked", trained(cfg, student("u-masked"), args.steps, str(masked),
                                     init_from=start)[1])
    if "d" in rows:
        big, ap_big = trained(cfg, out / "d-teacher", teacher_steps, backbone="resnet50")
        done("d-teacher", ap_big)
        pseudo50 = pseudo_labels(cfg, out / f"d-labels{label_knobs(args)}", big)
        done("d", trained(cfg, student("d"), args.steps, pseudo50, backbone="resnet18")[1])
    if "e" in rows:
        ssl = base_config(args, seed, sets, out, preset="pose-mum-plus")
        done("e-control", trained(ssl, out / f"e-control{unl}", total)[1])
        teacher_e, ap_e0 = trained(ssl, out / f"e-round0{unl}", teacher_steps)
        done("e-round0", ap_e0)
        pseudo_e = pseudo_labels(ssl, out / f"e-labels{label_knobs(args)}", teacher_e)
        done("e", trained(ssl, student("e"), args.steps, pseudo_e)[1])
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_rounds_synthetic")
    p.add_argument("--rows", nargs="+", default=["a", "b", "q"], choices=ROWS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--labeled-images", type=int, default=40,
                   help="~2.5 persons each (40: ~100 persons, where labeled-only training "
                        "saturates soonest within the step budget)")
    p.add_argument("--unlabeled-images", type=int, default=UNLABELED_IMAGES, help="≥ 10× the labeled")
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--steps", type=int, default=800,
                   help="round 1's steps (and round 0's unless --teacher-steps)")
    p.add_argument("--teacher-steps", type=int, default=0,
                   help="round 0's steps (0: --steps); the controls train round 0 + round 1")
    p.add_argument("--schedule", choices=SCHEDULES, default="restart",
                   help="continue: round 0 is the first 2/3 of one schedule of "
                        "--teacher-steps + --steps (give --teacher-steps 2 × --steps), the "
                        "rounds continue it at the decayed LR (rounds --schedule continue); "
                        "rows a b d e q u")
    p.add_argument("--rounds", type=int, default=1,
                   help="--schedule continue: rounds sharing the decayed epochs (2: each "
                        "relabels with the last)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tiles", type=lambda v: tuple(int(x) for x in v.split("x")),
                   default=(4, 3), help="row e: MUM tile grid (2x2 for 64x64 crops)")
    p.add_argument("--input", type=lambda v: tuple(int(x) for x in v.split("x")),
                   default=(128, 96), help="crop size HxW (pilots: 64x48)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--labeled-ratio", type=float, default=0.5)
    p.add_argument("--pseudo-loss-weight", type=float, default=1.0,
                   help="scale of the pseudo part's loss (rounds --pseudo-loss-weight)")
    p.add_argument("--init", choices=("previous", "scratch"), default="previous",
                   help="row b's student: fine-tuned from the round-0 teacher, or from the "
                        "initial weights (row c-init runs the other)")
    p.add_argument("--noise", default="randaugment,cutout",
                   help="strong view of the pseudo crops: affine,randaugment,cutout,mum | none")
    p.add_argument("--distill-teacher", default="round0",
                   choices=("round0", "full", "pose-mum-plus", "pose-mum-plus-r50"),
                   help="--schedule continue, row d: the ResNet-50 teacher trains the "
                        "schedule's first part as round 0 does, or the full schedule; or "
                        "the teacher is row e's ResNet-18 after the full schedule, or a "
                        "pose-mum-plus ResNet-50 trained as round 0")
    p.add_argument("--label-members", type=int, default=1,
                   help="row e: label with e-round0, K - 1 round 0s of other seeds and "
                        "--label-teacher's ResNet-50 (e-own: e-round0's labels alone)")
    p.add_argument("--label-teacher", choices=("round0", "pose-mum-plus-r50"), default="round0",
                   help="row e: label with e-round0, or with row d's pose-mum-plus ResNet-50")
    p.add_argument("--label-checkpoint", action="append", default=[], metavar="PATH",
                   help="row e: one more ensemble member, trained elsewhere ({seed}: the seed)")
    p.add_argument("--clamp-targets", action="store_true",
                   help="train row e (and row d's pose-mum-plus teacher) --clamp-targets")
    p.add_argument("--no-single", action="store_true",
                   help="row e: skip e-single (more steps); e-control is then e-continue")
    p.add_argument("--e-stage", choices=("all", "round0", "single"), default="all",
                   help="--rows e: train only e-round0 or only e-single, in the row's folders "
                        "(a rerun of one stage, e.g. on another host)")
    p.add_argument("--min-joint-score", type=float, default=0.5)
    p.add_argument("--tta", default="flip,scales=0.8,1.0,1.2")
    p.add_argument("--precision", type=float, default=0.9,
                   help="calibrated thresholds: share of kept val joints within OKS 0.5")
    p.add_argument("--threshold-search", choices=("each", "pair"), default="each",
                   help="how calibrate picks score and agreement thresholds (--search)")
    p.add_argument("--threshold-z", type=float, default=0.0, help="calibrate --confidence-z")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="keep joints by --min-joint-score instead")
    p.add_argument("--min-instance-score", type=float, default=0.3)
    p.add_argument("--min-joints", type=int, default=1,
                   help="kept joints a person needs (a partial person is a good partial label)")
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds side by side (0: one per core; 3 seeds on 2 cores finish sooner with 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per job")
    args = p.parse_args()
    if args.schedule == "continue" and set(args.rows) - {"a", "b", "d", "e", "q", "u"}:
        p.error("--schedule continue runs rows a, b, d, e, q and u only")
    if args.distill_teacher != "round0" and args.schedule != "continue":
        p.error(f"--distill-teacher {args.distill_teacher} needs --schedule continue "
                "(restart: d-teacher trains --teacher-steps)")
    pmp_d = args.distill_teacher.startswith("pose-mum-plus") and "d" in args.rows
    row_e_only = (args.label_members != 1, args.no_single, args.label_teacher != "round0",
                  args.clamp_targets and not pmp_d, args.label_checkpoint)
    if any(row_e_only) and (args.schedule != "continue" or "e" not in args.rows):
        p.error("--label-members / --label-teacher / --label-checkpoint / --no-single / "
                "--clamp-targets are for row e with --schedule continue")
    if args.e_stage != "all" and (args.schedule != "continue" or args.rows != ["e"]):
        p.error(f"--e-stage {args.e_stage} trains one stage of row e: give --schedule "
                "continue --rows e")
    if args.label_members < 1:
        p.error(f"--label-members {args.label_members}: give 1 (e-round0 alone) or more")
    if args.rounds != 1 and args.schedule != "continue":
        p.error("--rounds needs --schedule continue (restart runs one round)")
    args.jobs = args.jobs or max(1, min(args.seeds, usable_cpus()))
    args.threads = args.threads or max(1, usable_cpus() // min(args.jobs, args.seeds))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for path in dict.fromkeys(c for s in seeds for c in checkpoints_elsewhere(args, s)[0]):
        if not Path(path).is_file():
            p.error(f"--label-checkpoint {path}: no such file; give one for each seed ({{seed}})")
    t0 = time.perf_counter()
    if args.jobs == 1:
        per_seed = [run_seed(args, s) for s in seeds]
    else:  # spawn: a forked child would inherit the parent's OpenMP pool state
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(pool.map(run_seed, [args] * len(seeds), seeds))
    print(f"\n# rounds_synthetic: {args.labeled_images} labeled / {args.unlabeled_images} "
          f"unlabeled / {args.val_images} val images per seed, "
          f"{args.teacher_steps or args.steps} + {args.steps} steps "
          f"(schedule {args.schedule}, {args.rounds} round(s)), "
          f"noise {args.noise}, ratio {args.labeled_ratio}, "
          f"pseudo loss x{args.pseudo_loss_weight:g}, tta {args.tta}, "
          f"{'calibrated at ' + str(args.precision) if args.calibrate else 'fixed'} thresholds"
          f"{f' (search {args.threshold_search}, z {args.threshold_z:g})' if args.calibrate else ''}"
          f"{', clamped targets' if args.clamp_targets else ''}, "
          f"{time.perf_counter() - t0:.0f} s")
    print_table(per_seed, seeds)


if __name__ == "__main__":
    main()

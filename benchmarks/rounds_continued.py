"""Rows a, b, d, e, q, u of benchmarks/rounds_synthetic.py with `--schedule continue` (rounds
--schedule continue): round 0 is the first part of one LR schedule, the rounds continue
it at the decayed LR."""
from __future__ import annotations

import argparse
import copy
import hashlib
from collections.abc import Callable
from pathlib import Path

from rounds_label_quality import (  # benchmarks/ on sys.path
    report_quality,
    truth_as_pseudo,
    truth_masked_as_pseudo,
)
from rounds_stages import (
    base_config,
    clamp_knob,
    label_knobs,
    pseudo_labels,
    ssl_knob,
    student_knobs,
    trained,
    unlabeled_knob,
)

from posemum_deploy.rounds import RoundsConfig, continued_schedule, fit_schedule
from posemum_deploy.rounds.schedule import schedule_segment
from posemum_deploy.training.config import OptimConfig


def run_continued(args: argparse.Namespace, seed: int, sets: dict[str, Path],
                  res: dict[str, float], done: Callable[[str, float], None]) -> None:
    """Rows a, b, d, q, u with `--schedule continue` (rounds --schedule continue): the run is one
    schedule of teacher + student steps; round 0 trains it to its first LR milestone and
    labels the folder; each round continues the schedule from the last round's model at
    the decayed LR on mixed batches (round k ≥ 2 relabels with round k − 1's model).
    a-continue is the same continuation labeled-only; a-single the schedule unbroken.
    Row d labels the folder with a ResNet-50 round 0 (the same first part of the schedule)
    and continues the ResNet-18 round 0 on those labels, as b does on its own. Row a (its
    control and b's) trains only when asked: `--rows d` alone trains round 0 and d."""
    rows, total = set(args.rows), args.teacher_steps + args.steps
    seed_dir = Path(args.out) / f"s{seed}"
    cfg = base_config(args, seed, sets, seed_dir / f"continue{total}")
    cfg.schedule, cfg.rounds, cfg.train.optim.max_steps = "continue", args.rounds, total
    parts = continued_schedule(cfg.train.optim, args.rounds)
    if parts[0].max_steps != args.teacher_steps:
        raise SystemExit(f"--schedule continue: round 0 ends at the first LR milestone, step "
                         f"{parts[0].max_steps} of {total}; give --teacher-steps so that it "
                         f"is 2/3 of the total (e.g. 2 × --steps)")
    out = Path(cfg.out)
    knobs = student_knobs(args)
    if "e" in rows:
        run_continued_ssl(args, seed, sets, res, done)
    if not rows & {"a", "b", "d", "q", "u"}:
        return
    controls = "a" in rows
    teacher = round0_and_continue(cfg, "a", "round0", controls, done)[0]
    if controls:
        single_and_control(cfg, seed_dir / f"labeled-{total}", "a", "a", res, done)
    if "d" in rows:
        run_continued_distillation(cfg, args, seed, sets, teacher, parts, done)
    if "u" in rows:  # round 1 on the unlabeled set's true labels: the bound
        truth = str(truth_as_pseudo(out, sets["unlabeled"], unlabeled_knob(args)))
        done("u", trained(cfg, out / f"u{knobs}", None, truth, init_from=teacher,
                          optim=parts[1])[1])
    for k in range(1, args.rounds + 1):
        if not rows & {"b", "q"}:
            break
        # rounds split the same epochs differently for each --rounds: their own folders
        of = f"r{k}of{args.rounds}" if args.rounds > 1 else ""
        labels = out / (f"labels{label_knobs(args)}" if k == 1 else f"labels-{of}{knobs}")
        pseudo = pseudo_labels(cfg, labels, teacher)
        if "q" in rows:
            report_quality(pseudo, sets["unlabeled"], done, "" if k == 1 else f"r{k}")
        if "b" not in rows:
            break
        name = "b" if k == args.rounds else f"b-r{k}"
        folder = out / (f"b-{of}{knobs}" if of else f"b{knobs}")
        teacher, ap = trained(cfg, folder, None, pseudo, init_from=teacher, optim=parts[k])
        done(name, ap)


def run_continued_distillation(cfg: RoundsConfig, args: argparse.Namespace, seed: int,
                               sets: dict[str, Path], student_start: str,
                               parts: list[OptimConfig],
                               done: Callable[[str, float], None]) -> None:
    """Row d with `--schedule continue`: a ResNet-50 trained on the labeled split for the
    schedule's first part (d-teacher, like round 0) labels the folder; the ResNet-18
    round 0 continues on the decayed epochs with those labels on mixed batches. The
    student's steps are the control's (row a, a ResNet-18 labeled-only at the same
    schedule); the teacher's steps come on top, the price of a bigger teacher.
    `--distill-teacher full` trains the ResNet-50 through the whole schedule instead (its
    first part continued labeled-only at the decayed LR, as a-continue does for the
    ResNet-18: d-teacher-full), as Data Distillation labels with a converged teacher.
    `--distill-teacher pose-mum-plus` labels with row e's model after the whole schedule
    (e-continue: a ResNet-18 trained with pose-mum-plus on the labeled split and the
    unlabeled folder; clamped with --clamp-targets): a teacher that knows more than the
    student without a bigger backbone. `pose-mum-plus-r50` trains that teacher as a
    ResNet-50 for the schedule's first part (d-teacher-pmp, as d-teacher: the costlier
    backbone at round 0's length). With row q, its labels are scored against the
    unlabeled set's truth."""
    out = Path(cfg.out)
    if args.distill_teacher == "pose-mum-plus-r50":  # its labels shared with row e's
        pseudo, tag = pmp_r50_labels(args, seed, sets, done), "-pmp-r50" + clamp_knob(args)
    else:
        if args.distill_teacher == "pose-mum-plus":
            big, tag = ssl_whole_schedule(args, seed, sets, done), "-pmp" + clamp_knob(args)
        else:
            big, ap_big = trained(cfg, out / "d-teacher", None, backbone="resnet50",
                                  optim=parts[0])
            done("d-teacher", ap_big)
            tag = "-full" if args.distill_teacher == "full" else ""
        if tag == "-full":  # the same decayed epochs as the student's, labeled-only
            big, ap_big = trained(cfg, out / "d-teacher-full", None, backbone="resnet50",
                                  init_from=big, optim=parts[1])
            done("d-teacher-full", ap_big)
        pseudo = pseudo_labels(cfg, out / f"d-labels{tag}{label_knobs(args)}", big)
    if "q" in args.rows:
        report_quality(pseudo, sets["unlabeled"], done, "d")
    done("d", trained(cfg, out / f"d{tag}{student_knobs(args)}", None, pseudo,
                      backbone="resnet18", init_from=student_start, optim=parts[1])[1])


def pmp_r50_teacher(args: argparse.Namespace, seed: int, sets: dict[str, Path],
                    done: Callable[[str, float], None]) -> tuple[RoundsConfig, str]:
    """(config, checkpoint) of a pose-mum-plus ResNet-50 trained as round 0 (d-teacher-pmp:
    the schedule's first part, clamped with --clamp-targets), cached for rows d and e."""
    ssl50 = ssl_config(args, seed, sets, backbone="resnet50")
    first = continued_schedule(ssl50.train.optim, 1)[0]  # round 0's part for any --rounds
    big, ap_big = trained(ssl50, Path(ssl50.out) / "round0", None, optim=first)
    done("d-teacher-pmp", ap_big)
    return ssl50, big


def pmp_r50_labels(args: argparse.Namespace, seed: int, sets: dict[str, Path],
                   done: Callable[[str, float], None]) -> str:
    """The folder's labels by the pose-mum-plus ResNet-50 round 0 (pmp_r50_teacher), in
    row d's folders: row d (--distill-teacher pose-mum-plus-r50) and row e (--label-teacher
    pose-mum-plus-r50) share the teacher and its labels. The json path."""
    ssl50, big = pmp_r50_teacher(args, seed, sets, done)
    d_out = Path(args.out) / f"s{seed}" / f"continue{args.teacher_steps + args.steps}"
    return pseudo_labels(ssl50, d_out / f"d-labels-pmp-r50{clamp_knob(args)}{label_knobs(args)}",
                         big)


def checkpoints_elsewhere(args: argparse.Namespace, seed: int) -> tuple[list[str], str]:
    """The `--label-checkpoint` members of `seed` ({seed} filled in; checked by main) and
    their folders' suffix ("-x{N}-{hash of the paths}": other members, other folders)."""
    paths = [p.replace("{seed}", str(seed)) for p in args.label_checkpoint]
    digest = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:6]
    return paths, f"-x{len(paths)}-{digest}" if paths else ""


def ssl_config(args: argparse.Namespace, seed: int, sets: dict[str, Path],
               backbone: str = "resnet18") -> RoundsConfig:
    """Row e's config: pose-mum-plus on the continued schedule, the unlabeled folder as
    its unlabeled stream, in folders of their own (ssl_knob; "-r50" for a ResNet-50)."""
    size = "" if backbone == "resnet18" else f"-r{backbone.removeprefix('resnet')}"
    ssl = base_config(args, seed, sets, Path(args.out) / f"s{seed}" /
                      f"continue{args.teacher_steps + args.steps}-pmp{size}{ssl_knob(args)}",
                      preset="pose-mum-plus")
    ssl.train.model.backbone = backbone
    ssl.schedule, ssl.rounds = "continue", 1
    ssl.train.optim.max_steps = args.teacher_steps + args.steps
    return ssl


def ssl_whole_schedule(args: argparse.Namespace, seed: int, sets: dict[str, Path],
                       done: Callable[[str, float], None]) -> str:
    """The checkpoint of row e's model after the whole schedule: e-round0 continued
    without pseudo-labels (e-continue; cached where row e trained it)."""
    whole = round0_and_continue(ssl_config(args, seed, sets), "e", "e-round0", True, done)[1]
    assert whole is not None  # with_control: the continuation was trained
    return whole


def run_continued_ssl(args: argparse.Namespace, seed: int, sets: dict[str, Path],
                      res: dict[str, float], done: Callable[[str, float], None]) -> None:
    """Row e with `--schedule continue`: the same schedule trained with pose-mum-plus (the
    unlabeled folder as its unlabeled stream). e-single is the schedule unbroken,
    e-round0 its part up to the first milestone, which labels the folder; e continues
    from it on the decayed epochs with the pseudo-labeled persons as extra labeled data
    on top of the unlabeled loss, e-continue the same without them. e-control is the
    better of e-single and e-continue, per seed (`--no-single`: e-continue alone).

    `--label-members K` labels with an ensemble: e-round0 and K − 1 more pose-mum-plus
    round 0s on the same data with other training seeds (e-round0-seed*, their steps on
    top of the student's, as row d's teacher). e then continues e-round0 on the
    ensemble's labels; e-own is the same student on e-round0's labels alone.
    `--label-teacher pose-mum-plus-r50` labels with row d's pose-mum-plus ResNet-50 round 0
    instead (pmp_r50_labels): labels from another model than the student; with
    `--label-members K` too, the ResNet-50 joins the K round 0s' ensemble ("-ens{K}-r50").
    Each `--label-checkpoint PATH` adds a member trained elsewhere ("-x{N}-{hash}"). With row
    u, e-u is that student on the unlabeled set's true labels (every visible joint): what
    perfect labels would add to pose-mum-plus, the ceiling of e − e-control; e-u-masked
    the same with the true positions only at the joints e-round0's labels kept, which
    splits e-own's distance to e-u into dropped joints (e-u − e-u-masked) and position
    errors (e-u-masked − e-own).

    `--clamp-targets` trains every pose-mum-plus stage with the teacher's heatmaps clamped
    to [0, 1] (`train --clamp-targets`), in folders of their own ("-clamp"). `--e-stage
    round0` or `single` trains that stage alone, in the folder the whole row uses."""
    ssl = ssl_config(args, seed, sets)
    if args.e_stage == "round0":  # one stage alone: a rerun, on another host or seed
        round0_and_continue(ssl, "e", "e-round0", False, done)
        return
    if args.e_stage == "single":
        done("e-single", trained(ssl, ssl_single_dir(args, seed, ssl),
                                 ssl.train.optim.max_steps)[1])
        return
    first, round1 = continued_schedule(ssl.train.optim, 1)
    out = Path(ssl.out)
    teacher = round0_and_continue(ssl, "e", "e-round0", True, done)[0]
    ensemble = args.label_members > 1 or bool(args.label_checkpoint)
    if ensemble:
        members = []
        for j in range(1, args.label_members):
            member = copy.deepcopy(ssl)
            member.train.runtime.seed = seed + 100 * j
            name = f"e-round0-seed{member.train.runtime.seed}"
            ckpt, ap = trained(member, out / name, None, optim=first)
            done(name, ap)
            members.append(ckpt)
        ens = f"-ens{args.label_members}"
        if args.label_teacher == "pose-mum-plus-r50":  # and row d's ResNet-50
            members.append(pmp_r50_teacher(args, seed, sets, done)[1])
            ens += "-r50"
        extra, ens_extra = checkpoints_elsewhere(args, seed)
        members, ens = members + extra, ens + ens_extra
        pseudo = pseudo_labels(ssl, out / f"labels{ens}{label_knobs(args)}", teacher, members)
        if "q" in args.rows:
            report_quality(pseudo, sets["unlabeled"], done, "e")
        done("e", trained(ssl, out / f"e{ens}{student_knobs(args)}", None, pseudo,
                          init_from=teacher, optim=round1)[1])
    elif args.label_teacher == "pose-mum-plus-r50":  # another model labels: row d's
        pseudo = pmp_r50_labels(args, seed, sets, done)
        if "q" in args.rows:
            report_quality(pseudo, sets["unlabeled"], done, "e")
        done("e", trained(ssl, out / f"e-pmp-r50{student_knobs(args)}", None, pseudo,
                          init_from=teacher, optim=round1)[1])
    # e-own after the ensemble's e: the row's figure first (stages cached by folder)
    own = pseudo_labels(ssl, out / f"labels{label_knobs(args)}", teacher)
    own_row = "e" if not ensemble and args.label_teacher == "round0" else "e-own"
    done(own_row, trained(ssl, out / f"e{student_knobs(args)}", None, own, init_from=teacher,
                          optim=round1)[1])
    if "q" in args.rows:
        report_quality(own, sets["unlabeled"], done, own_row)
    if "u" in args.rows:  # the same student on the unlabeled set's true labels: e's bound
        truth = truth_as_pseudo(out, sets["unlabeled"], unlabeled_knob(args))
        done("e-u", trained(ssl, out / f"e-u{student_knobs(args)}", None, str(truth),
                            init_from=teacher, optim=round1)[1])
        masked = truth_masked_as_pseudo(out, truth, own, label_knobs(args))
        done("e-u-masked", trained(ssl, out / f"e-u-masked{student_knobs(args)}", None,
                                   str(masked), init_from=teacher, optim=round1)[1])
    if args.no_single:
        done("e-control", res["e-continue"])
        return
    # last: the longest training, and e − e-continue already bounds e − e-control above
    single_and_control(ssl, ssl_single_dir(args, seed, ssl), "e", "e-control", res, done)


def ssl_single_dir(args: argparse.Namespace, seed: int, ssl: RoundsConfig) -> Path:
    """e-single's folder: beside the seed's schedules, named by its steps (no round's)."""
    return Path(args.out) / f"s{seed}" / f"pmp-{ssl.train.optim.max_steps}{ssl_knob(args)}"


def round0_and_continue(cfg: RoundsConfig, prefix: str, round0: str, with_control: bool,
                        done: Callable[[str, float], None]) -> tuple[str, str | None]:
    """Round 0 of `cfg`'s continued schedule (row `round0`, trained in cfg.out/round0) and,
    `with_control`, its decayed epochs continued from round 0 with the same recipe
    (`{prefix}-continue`): the control with round 1's steps and start, without the
    pseudo-labels. Returns the checkpoints of round 0 (the teacher that labels the
    folder) and of the continuation (None without it)."""
    optim, out = cfg.train.optim, Path(cfg.out)
    first = continued_schedule(optim, cfg.rounds)[0]
    teacher, ap0 = trained(cfg, out / "round0", None, optim=first)
    done(round0, ap0)
    if not with_control:
        return teacher, None
    # the epochs after the milestone, no pseudo-labels, in one training
    assert optim.max_steps is not None  # a continued schedule's total: run_continued, ssl_config set it
    whole = fit_schedule(optim, optim.max_steps)
    tail = schedule_segment(whole, first.epochs, whole.epochs)
    continued, ap = trained(cfg, out / f"{prefix}-continue", None, init_from=teacher, optim=tail)
    done(f"{prefix}-continue", ap)
    return teacher, continued


def single_and_control(cfg: RoundsConfig, single_dir: Path, prefix: str, control: str,
                       res: dict[str, float], done: Callable[[str, float], None]) -> None:
    """The schedule unbroken without pseudo-labels (`{prefix}-single`, in `single_dir`) and
    the control row `control`: the better of it and `{prefix}-continue`, per seed."""
    done(f"{prefix}-single", trained(cfg, single_dir, cfg.train.optim.max_steps)[1])
    done(control, max(res[f"{prefix}-single"], res[f"{prefix}-continue"]))

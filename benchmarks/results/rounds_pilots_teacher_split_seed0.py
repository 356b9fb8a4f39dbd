"""Seed-0 pilots at 40 labeled images, 800 steps per stage (cache: /tmp/p6/out40).
big:  teacher = a-single (1600 steps); labels; b-big (800 steps fine-tune with pseudo) vs
      a-big-restart (800 more labeled-only steps from a-single).
dark: round-0 labels with DARK decoding (calibration and labels): quality; then b-dark.
score: round-0 labels, pseudo-weight score: b-score."""
import copy, functools, sys, time
sys.path.insert(0, "/work/main/benchmarks")
import torch
import rounds_synthetic as rs
import posemum_deploy.label.runner as runner
import posemum_deploy.label.calibrate as calmod

job = sys.argv[1]
args = rs.argparse.Namespace(out="/tmp/p6/out40", labeled_images=40, unlabeled_images=600,
    val_images=1000, steps=800, batch=16, tiles=(4, 3), input=(128, 96), lr=2e-3,
    labeled_ratio=0.5, noise="randaugment,cutout", min_joint_score=0.5,
    tta="flip,scales=0.8,1.0,1.2", precision=0.9, calibrate=True, min_instance_score=0.3,
    min_joints=1, threads=1)
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
root = rs.Path(args.out); sets = rs.seed_data(root, args, 0)
cfg = rs.base_config(args, 0, sets, root / "s0"); out = rs.Path(cfg.out)
round0 = str(out / "round0/train/checkpoints/best.pt")
asingle = str(out / "a/train/checkpoints/best.pt")
t0 = time.perf_counter()
def say(n, v): rs.say(f"{job} {n:<14} {v:6.2f}  ({time.perf_counter() - t0:.0f}s)")
def quality(p, tag):
    for k, v in rs.label_quality(p, sets["unlabeled"]).items(): say(f"{tag}-{k}", v)
if job == "big":
    pseudo = rs.pseudo_labels(cfg, out / "labels-big", asingle); quality(pseudo, "big")
    say("b-big", rs.trained(cfg, out / "b-big", 800, pseudo, init_from=asingle)[1])
    say("a-big-restart", rs.trained(cfg, out / "a-big-restart", 800, init_from=asingle)[1])
elif job == "dark":
    runner.LabelSettings = functools.partial(runner.LabelSettings, dark=True)
    calmod.ensemble_estimator = functools.partial(calmod.ensemble_estimator, dark=True)
    pseudo = rs.pseudo_labels(cfg, out / "labels-dark", round0); quality(pseudo, "dark")
    say("b-dark", rs.trained(cfg, out / "b-dark", 800, pseudo, init_from=round0)[1])
elif job == "score":
    c = copy.deepcopy(cfg); c.pseudo_weight = "score"
    pseudo = rs.pseudo_labels(c, out / "labels-score", round0)
    say("b-score", rs.trained(c, out / "b-score", 800, pseudo, init_from=round0)[1])
if job == "a2400":
    say("a-single-2400", rs.trained(cfg, out / "a-2400", 2400)[1])
if job.startswith("ftl"):
    # phase 1: mixed batches at the full LR (no decay) for 2/3 of the steps; phase 2: the
    # decayed LR on labeled data only (a-restart's last third: 2e-4 then 2e-5)
    teacher = asingle if "big" in job else round0
    pseudo = str(out / ("labels-big" if "big" in job else "labels") / "pseudo.json")
    s1, s2 = 533, 267
    from posemum_deploy.rounds import StageLog
    d1 = out / f"{job}-p1"
    t1 = rs.retrain_config(cfg, pseudo, None, "previous"); t1.optim.milestones = (7, 8)
    ck1 = StageLog(d1).run("train", lambda: rs.train_stage(cfg, d1, cfg.train.data.labeled,
                           cfg.train.data.images, teacher, s1, tcfg=t1))["checkpoint"]
    say("phase1", 100 * StageLog(d1).run("evaluate", lambda: rs.evaluate_stage(cfg, ck1, d1))["metrics"]["AP"])
    d2 = out / f"{job}-p2"
    t2 = rs.retrain_config(cfg, None, None, "previous"); t2.optim.lr = 2e-4; t2.optim.milestones = (3,)
    ck2 = StageLog(d2).run("train", lambda: rs.train_stage(cfg, d2, cfg.train.data.labeled,
                           cfg.train.data.images, ck1, s2, tcfg=t2))["checkpoint"]
    say(job, 100 * StageLog(d2).run("evaluate", lambda: rs.evaluate_stage(cfg, ck2, d2))["metrics"]["AP"])
if job in ("lam-big", "r75-big"):
    import numpy as np
    import posemum_deploy.training.pseudo_mix as pm
    c = copy.deepcopy(cfg)
    if job == "lam-big":  # every kept pseudo-joint's loss × 0.3 (weight² through √)
        c.pseudo_weight = "score"
        pm.reliability = lambda ann, mode, k, source: np.full(k, 0.3, dtype=np.float32)
    else:
        c.labeled_ratio = 0.75
    pseudo = str(out / "labels-big" / "pseudo.json")
    say(job, rs.trained(c, out / job, 800, pseudo, init_from=asingle)[1])

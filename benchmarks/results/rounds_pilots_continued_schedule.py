"""Seed-S pilot: round 1 continues the control's schedule. The teacher is the labeled-only
2,400-step schedule stopped at step 1,600 (just before its first LR decay: the same
trajectory as a-single-2400); it labels the folder; round 1 trains the last 800 steps at
the decayed LRs (2e-4, then 2e-5) on mixed batches (pseudo loss x LW), or labeled-only (LW 0).
usage: cont.py SEED teacher | cont.py SEED student LW"""
import copy, sys, time
sys.path.insert(0, "/work/main/benchmarks")
import torch
import rounds_synthetic as rs
from posemum_deploy.rounds import StageLog
from posemum_deploy.rounds.retrain import fit_schedule
seed, job = int(sys.argv[1]), sys.argv[2]
lw = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
args = rs.argparse.Namespace(out="/tmp/p6/out40", labeled_images=40, unlabeled_images=600,
    val_images=1000, steps=800, batch=16, tiles=(4, 3), input=(128, 96), lr=2e-3,
    labeled_ratio=0.5, noise="randaugment,cutout", min_joint_score=0.5, pseudo_loss_weight=lw,
    tta="flip,scales=0.8,1.0,1.2", precision=0.9, calibrate=True, min_instance_score=0.3,
    min_joints=1, threads=1)
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
root = rs.Path(args.out); sets = rs.seed_data(root, args, seed)
cfg = rs.base_config(args, seed, sets, root / f"s{seed}" / "cont"); out = rs.Path(cfg.out)
t0 = time.perf_counter()
d = out / "teacher"
if job == "teacher":
    t = rs.retrain_config(cfg, None, None, "scratch")
    t.optim = fit_schedule(t.optim, 2400); t.optim.max_steps = 1600
    ck = StageLog(d).run("train", lambda: rs.train_stage(cfg, d, cfg.train.data.labeled,
                         cfg.train.data.images, None, None, tcfg=t))["checkpoint"]
    ap = 100 * StageLog(d).run("evaluate", lambda: rs.evaluate_stage(cfg, ck, d))["metrics"]["AP"]
    rs.say(f"seed {seed} cont-teacher {ap:.2f} ({time.perf_counter() - t0:.0f}s)")
    pseudo = rs.pseudo_labels(cfg, out / "labels", ck)
    for k, v in rs.label_quality(pseudo, sets["unlabeled"]).items():
        rs.say(f"seed {seed} cont-{k} {v:.2f}")
else:
    ck = str(d / "train/checkpoints/last.pt")
    pseudo = str(out / "labels" / "pseudo.json") if lw > 0 else None
    c = copy.deepcopy(cfg); c.train.optim.lr = 2e-4; c.train.optim.milestones = (3,)
    name = f"student-lw{lw:g}"
    ap = rs.trained(c, out / name, 800, pseudo, init_from=ck)[1]
    rs.say(f"seed {seed} cont-{name} {ap:.2f} ({time.perf_counter() - t0:.0f}s)")

"""Seed-S pilot: round 1 (1,600-step teacher, its labels, pseudo loss x LW) at a lower peak LR."""
import copy, sys, time
sys.path.insert(0, "/work/main/benchmarks")
import torch
import rounds_synthetic as rs
seed, lr, lw = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
args = rs.argparse.Namespace(out="/tmp/p6/out40", labeled_images=40, unlabeled_images=600,
    val_images=1000, steps=800, batch=16, tiles=(4, 3), input=(128, 96), lr=2e-3,
    labeled_ratio=0.5, noise="randaugment,cutout", min_joint_score=0.5, pseudo_loss_weight=lw,
    tta="flip,scales=0.8,1.0,1.2", precision=0.9, calibrate=True, min_instance_score=0.3,
    min_joints=1, threads=1)
torch.set_num_threads(1)
root = rs.Path(args.out); sets = rs.seed_data(root, args, seed)
cfg = rs.base_config(args, seed, sets, root / f"s{seed}" / "t1600"); out = rs.Path(cfg.out)
teacher = str(root / f"s{seed}" / "a/train/checkpoints/best.pt")
pseudo = str(out / "labels" / "pseudo.json")
c = copy.deepcopy(cfg); c.train.optim.lr = lr
t0 = time.perf_counter()
name = f"b-lw{lw:g}-lr{lr:g}" if pseudo else ""
ap = rs.trained(c, out / name, 800, pseudo if lw > 0 else None, init_from=teacher)[1]
rs.say(f"seed {seed} {name} {ap:.2f} ({time.perf_counter() - t0:.0f}s)")

"""A trained paper-shape model (SimpleBaseline-R18, 256×192, head 256) for the CPU speed
benchmarks, in minutes: the backbone comes from the trained demo model (written as a
torchvision-style state_dict and loaded through `pretrained`, the path ImageNet weights
take), then the whole network is fine-tuned on the demo's synthetic train set. Speed does
not depend on the weights, but INT8/bf16 accuracy drops only mean something on a
trained network.

    posemum demo                                       # makes runs/demo
    python benchmarks/paper_shape_model.py --epochs 4  # → runs/paper_shape/checkpoints/best.pt
    python benchmarks/cpu_backends.py --ckpt runs/paper_shape/checkpoints/best.pt \\
        --val-ann runs/demo/data/val/annotations.json --val-images runs/demo/data/val/images \\
        --calib runs/demo/data/train/annotations.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from posemum_deploy.demo import DemoConfig, demo_train_config, synth_sets
from posemum_deploy.models.simple_baseline import TORCHVISION_TO_STAGES, rename_prefixes
from posemum_deploy.training.trainer import train


def backbone_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's ResNet under torchvision names (what `pretrained` loads)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return rename_prefixes(state, {v: k for k, v in TORCHVISION_TO_STAGES.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished `posemum demo`")
    p.add_argument("--out", type=Path, default=Path("runs/paper_shape"))
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    weights = args.out / "backbone_from_demo.pth"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone_state(args.demo / "run" / "checkpoints" / "best.pt"), weights)
    cfg = DemoConfig(out=str(args.demo), epochs=args.epochs, input_hw=(256, 192),
                     deconv_channels=256, lr=1e-3)
    tcfg = demo_train_config(cfg, *synth_sets(cfg))
    tcfg.out, tcfg.runtime.val_every = str(args.out), args.epochs
    tcfg.model.pretrained = str(weights)
    result = train(tcfg)
    print(f"{args.out}/checkpoints/best.pt: val AP {result.last_metrics.get('AP', float('nan')):.4f}")


if __name__ == "__main__":
    main()

"""Mixed labeled/pseudo-labeled batches (issue 21, item 4) on tiny real data."""
import json

import numpy as np
import pytest
import torch

from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.errors import ConfigError
from posemum_deploy.training.batch_streams import make_labeled_loader
from posemum_deploy.training.config import DataConfig, OptimConfig, RuntimeConfig, TrainConfig
from posemum_deploy.training.trainer import train


def _pseudo_json(src, out, drop=(0, 5, 6, 15, 16), with_scores=True):
    """The labeled json turned into 'pseudo-labels': joints in `drop` dropped (v=0 at
    (0, 0), as merge writes them), the rest kept with a known per-joint score."""
    coco = json.loads(src.read_text())
    for a in coco["annotations"]:
        kps = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        kps[list(drop)] = 0
        kps[kps[:, 2] > 0, 2] = 2
        a["keypoints"] = kps.reshape(-1).tolist()
        a["num_keypoints"] = int((kps[:, 2] > 0).sum())
        if with_scores:
            a["joint_scores"] = [0.1 * (1 + j % 9) for j in range(17)]
    out.write_text(json.dumps(coco))
    return out


def _cfg(ann, pseudo, out, batch=8, ratio=0.25, **pseudo_opts):
    images = str(ann.parent / "images")
    cfg = TrainConfig(out=str(out),
                      data=DataConfig(labeled=str(ann), images=images, val_ann=str(ann),
                                      val_images=images, input_hw=(64, 64), workers=0,
                                      labeled_count=5),
                      optim=OptimConfig(batch_size=batch, epochs=1, milestones=(1,),
                                        steps_per_epoch=2),
                      runtime=RuntimeConfig(precision="fp32", log_every=1, val_every=0))
    cfg.pseudo.labels, cfg.pseudo.images, cfg.pseudo.labeled_ratio = str(pseudo), images, ratio
    for key, value in pseudo_opts.items():
        setattr(cfg.pseudo, key, value)
    return cfg


@pytest.mark.parametrize("batch, ratio, n_labeled", [(8, 0.25, 2), (8, 0.5, 4), (7, 0.6, 4)])
def test_every_batch_holds_the_asked_ratio_exactly(synthetic_small, tmp_path, batch, ratio,
                                                   n_labeled):
    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json")
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", batch=batch, ratio=ratio)
    loader = make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0))
    labeled = len(loader.dataset.labeled)
    assert labeled == 5  # labeled_count: far fewer labeled than pseudo-labeled persons
    batches = list(loader)
    assert len(batches) == len(loader.dataset.pseudo) // (batch - n_labeled) > 5
    seen_labeled = []
    for b in batches:
        idx = b["index"].tolist()
        assert len(idx) == batch
        assert all(i < labeled for i in idx[:n_labeled])
        assert all(i >= labeled for i in idx[n_labeled:])
        seen_labeled += idx[:n_labeled]
    # the small labeled split repeats, each person once before any twice
    assert sorted(seen_labeled[:labeled]) == list(range(labeled))


def test_dropped_joints_carry_weight_zero_and_scores_weight_the_rest(synthetic_small, tmp_path):
    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json")
    codec = HeatmapCodec((64, 64), (16, 16), 2.0)
    for mode in ("none", "score"):
        cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", weight=mode)
        cfg.data.rotation_factor = cfg.data.scale_factor = 0.0
        dataset = make_labeled_loader(cfg, codec).dataset
        n, flips = len(dataset.labeled), set()
        for i in range(n, n + 8):
            item = dataset[i]
            w, target = item["target_weight"], item["target"]
            flipped = dataset._flipped(i - n)
            flips.add(flipped)
            for j in (0, 5, 6, 15, 16):
                assert w[j] == 0 and float(target[j].abs().max()) == 0.0
            kept = [j for j in range(17) if j not in (0, 5, 6, 15, 16) and w[j] > 0]
            assert kept, "some joints must stay inside the crop"
            for j in kept:
                src = int(dataset.pseudo.flip_perm[j]) if flipped else j  # channel j's joint
                want = 1.0 if mode == "none" else (0.1 * (1 + src % 9)) ** 0.5
                assert float(w[j]) == pytest.approx(want, rel=1e-6)
                assert float(target[j].max()) > 0.5  # a real Gaussian, not background
        assert flips == {True, False}  # both ways of reading the weights were checked


def test_score_weights_need_the_field(synthetic_small, tmp_path):
    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json", with_scores=False)
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", weight="agreement")
    with pytest.raises(ConfigError, match="--pseudo-weight agreement needs a per-joint"):
        make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0))
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", ratio=0.05)
    with pytest.raises(ConfigError, match="--labeled-ratio 0.05 leaves 0 of 8"):
        make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0))
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", noise="randaugment,blur")
    with pytest.raises(ConfigError, match="--pseudo-noise: unknown blur"):
        make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0))


@pytest.mark.parametrize("noise", ["none", "affine,randaugment,cutout", "mum"])
def test_mixed_training_noises_only_the_pseudo_part(synthetic_small, tmp_path, noise):
    """Two real steps with each noise; the logged loss is the batch mean of both parts."""
    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json")
    cfg = _cfg(synthetic_small, pseudo, tmp_path / noise.replace(",", "_"), ratio=0.5,
               noise=noise)
    cfg.ssl.tiles = (2, 2)  # MUM's grid for 64x64 crops
    result = train(cfg)
    assert result.steps == 2
    rows = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len(train_rows) == 2
    for r in train_rows:
        assert r["loss"] == pytest.approx(0.5 * r["loss_labeled"] + 0.5 * r["loss_pseudo"],
                                          rel=1e-5)
    ckpt = torch.load(result.out_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["pseudo"]["noise"] == noise


def test_noise_touches_only_the_pseudo_crops(synthetic_small, tmp_path):
    """Same batch, same weights (eval-mode BN, lr 0): the labeled loss is identical with
    and without noise, the pseudo-labeled loss is not."""
    from posemum_deploy.models.simple_baseline import build_model
    from posemum_deploy.training.pseudo_mix import PseudoMixStep

    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json")
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", ratio=0.5)
    batch = next(iter(make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0))))
    torch.manual_seed(0)
    model = build_model("resnet18", 17, deconv_channels=64).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    logs = {}
    for noise in ("none", "affine,randaugment,cutout"):
        cfg.pseudo.noise = noise
        logs[noise] = PseudoMixStep(cfg, model, optimizer, torch.device("cpu"), None)(batch)
    assert torch.equal(logs["none"]["loss_labeled"], logs["affine,randaugment,cutout"]["loss_labeled"])
    assert not torch.equal(logs["none"]["loss_pseudo"], logs["affine,randaugment,cutout"]["loss_pseudo"])


def test_pseudo_loss_weight_scales_only_the_pseudo_part(synthetic_small, tmp_path):
    """Same batch and weights (eval-mode BN, lr 0): both parts' losses are unchanged, the
    total is share·labeled + (1 − share)·w·pseudo; w 0 trains on the labeled crops alone."""
    from posemum_deploy.models.simple_baseline import build_model
    from posemum_deploy.training.pseudo_mix import PseudoMixStep

    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json")
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", ratio=0.5, noise="none")
    batch = next(iter(make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0))))
    torch.manual_seed(0)
    model = build_model("resnet18", 17, deconv_channels=64).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    logs = {}
    for w in (1.0, 0.3, 0.0):
        cfg.pseudo.loss_weight = w
        logs[w] = PseudoMixStep(cfg, model, optimizer, torch.device("cpu"), None)(batch)
    for w, log in logs.items():
        assert torch.equal(log["loss_labeled"], logs[1.0]["loss_labeled"])
        assert torch.equal(log["loss_pseudo"], logs[1.0]["loss_pseudo"])
        expected = 0.5 * log["loss_labeled"] + 0.5 * w * log["loss_pseudo"]
        assert float(log["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(logs[0.3]["loss"]) < float(logs[1.0]["loss"])
    cfg.pseudo.loss_weight = -0.5
    with pytest.raises(ConfigError, match="--pseudo-loss-weight -0.5: must be ≥ 0"):
        PseudoMixStep(cfg, model, optimizer, torch.device("cpu"), None)


def test_a_first_person_without_keypoints_does_not_set_the_joint_count(synthetic_small, tmp_path):
    """K comes from the first person with keypoints, as TopDownDataset counts it (a file
    whose first person had none failed with len(None))."""
    pseudo = _pseudo_json(synthetic_small, tmp_path / "pseudo.json")
    coco = json.loads(pseudo.read_text())
    del coco["annotations"][0]["keypoints"]
    pseudo.write_text(json.dumps(coco))
    cfg = _cfg(synthetic_small, pseudo, tmp_path / "run", weight="score")
    dataset = make_labeled_loader(cfg, HeatmapCodec((64, 64), (16, 16), 2.0)).dataset
    assert dataset.pseudo.instances[0].keypoints is None
    assert tuple(dataset[len(dataset.labeled)]["target_weight"].shape) == (17,)

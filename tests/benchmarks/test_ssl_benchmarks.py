"""The benchmark scripts build what they claim to compare (cheap checks, tiny inputs)."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_overhead_runs_both_presets_on_the_same_batch():
    bench = _load("step_overhead")
    args = argparse.Namespace(input=(64, 64), tiles=(2, 2), batch=4, backbone="resnet18",
                              precision="fp32")
    batch = bench.labeled_batch(args)
    for preset in ("affine-s", "pose-mum-plus"):
        step = bench.make_step(preset, args, torch.device("cpu"))
        logs = step(batch)
        assert set(logs) >= {"loss", "loss_sup", "loss_unsup"}
        assert all(isinstance(v, torch.Tensor) for v in logs.values())  # read only when logged
        assert torch.isfinite(logs["loss"]) and logs["loss"] > 0
    assert step.mixer is not None and step.mixer.feature_level and step.affine is None


def test_ssl_synthetic_shares_one_config_across_presets(tmp_path):
    bench = _load("ssl_synthetic")
    args = argparse.Namespace(labeled=64, input=(64, 64), tiles=(2, 2), batch=8, workers=0,
                              steps=5, device="cpu", deconv_channels=128, lr=1e-3,
                              mix_stages=["stem", "layer1"], schedule="paper")
    cfgs = {p: bench.shared_config(args, p, 0, tmp_path / p, tmp_path / "a.json",
                                   tmp_path / "v.json") for p in bench.COMPARED}
    for cfg in cfgs.values():
        assert (cfg.data, cfg.optim) == (cfgs["supervised"].data, cfgs["supervised"].optim)
    assert cfgs["pose-mum-plus"].ssl.teacher == "eman" and cfgs["supervised"].ssl.teacher == "none"
    assert cfgs["pose-mum"].ssl.mix_stages == ("stem", "layer1")  # --mix-stages reaches Pose-MUM


def test_ssl_synthetic_paper_schedule_drops_the_lr_at_two_thirds_and_five_sixths():
    from posemum_deploy.training.config import TrainConfig
    from posemum_deploy.training.optimizer import make_scheduler

    bench = _load("ssl_synthetic")
    cfg = TrainConfig()
    bench.set_schedule(cfg, "paper", 600)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = make_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(cfg.optim.epochs):
        lrs += [optimizer.param_groups[0]["lr"]] * cfg.optim.steps_per_epoch
        optimizer.step()  # (no gradients: a no-op that keeps the scheduler's order check quiet)
        scheduler.step()
    assert len(lrs) == 600 and cfg.runtime.val_every == cfg.optim.epochs
    assert lrs[399] == 1e-3 and abs(lrs[400] - 1e-4) < 1e-12 and abs(lrs[500] - 1e-5) < 1e-12


def test_ssl_synthetic_makes_a_data_folder_per_size(tmp_path):
    """A run with another --val-images must not score on the set an earlier run left."""
    bench = _load("ssl_synthetic")
    train_a, val_a = bench.make_data(tmp_path, 3, 2)
    train_b, val_b = bench.make_data(tmp_path, 3, 4)
    assert train_a == train_b and val_a != val_b
    assert [len(json.loads(v.read_text())["images"]) for v in (val_a, val_b)] == [2, 4]


@pytest.mark.slow
def test_ssl_synthetic_clamp_targets_trains_a_twin_with_the_other_clamping(tmp_path, capsys):
    """--clamp-targets: pose-mum-plus (clamped by its preset) and mum (raw) train twice from
    the same warm-up, the twin with the other clamping (+raw, +clamp); supervised (no
    teacher) has no twin; the table pairs each twin with its preset."""
    from posemum_deploy.training.config import TrainConfig

    bench = _load("ssl_synthetic")
    args = argparse.Namespace(out=str(tmp_path), threads=1, presets=["supervised", "pose-mum-plus", "mum"],
                              clamp_targets=True, steps=3, warmup_steps=2, labeled=8,
                              input=(64, 64), tiles=(2, 2), batch=4, deconv_channels=32,
                              workers=0, lr=1e-3, device="cpu",
                              mix_stages=list(bench.SSLConfig.mix_stages), schedule="paper")
    assert bench.rows(args) == ["supervised", "pose-mum-plus", "mum", "pose-mum-plus+raw",
                                "mum+clamp"]
    assert bench.rows(argparse.Namespace(presets=["pose-mum-plus"], clamp_targets=False)) \
        == ["pose-mum-plus"]
    train_json, val_json = bench.make_data(tmp_path / "data", 4, 2)
    threads_before = torch.get_num_threads()
    try:
        aps = bench.run_seed(args, 0, train_json, val_json)
    finally:
        torch.set_num_threads(threads_before)
    assert list(aps) == bench.rows(args)
    saved = {row: TrainConfig.load(tmp_path / f"{row}-s0" / "config.yaml") for row in aps}
    assert [saved[r].ssl.clamp_targets for r in aps] == [False, True, False, False, True]
    assert saved["pose-mum-plus+raw"].ssl.init_from == saved["pose-mum-plus"].ssl.init_from
    assert saved["pose-mum-plus+raw"].ssl.teacher == "eman" and saved["mum+clamp"].ssl.mum
    bench.print_table({row: [ap, ap + 1.0] for row, ap in aps.items()})
    printed = capsys.readouterr().out
    assert "pose-mum-plus+raw - pose-mum-plus: +0.00 ± 0.00" in printed
    assert "mum+clamp - mum: +0.00 ± 0.00" in printed and "mum+clamp - supervised" in printed


@pytest.mark.slow
def test_ssl_synthetic_seeds_trained_side_by_side_train_as_one_at_a_time(tmp_path):
    """--jobs 2 runs each seed in its own spawned process; seed 1 there takes the same
    steps (losses, final weights) as seed 1 trained alone in this process, and the table
    lists the seeds in order."""
    import subprocess
    import sys

    out = tmp_path / "side_by_side"
    cmd = [sys.executable, str(ROOT / "ssl_synthetic.py"), "--out", str(out), "--jobs", "2",
           "--threads", "1", "--seeds", "2", "--presets", "pose-mum-plus", "--steps", "6",
           "--warmup-steps", "3", "--train-images", "6", "--val-images", "3", "--labeled", "8",
           "--input", "64x64", "--tiles", "2x2", "--batch", "4", "--deconv-channels", "32"]
    printed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert {line.split(":")[0] for line in printed.splitlines() if line.startswith("seed ")} \
        == {"seed 0", "seed 1"}

    bench = _load("ssl_synthetic")
    args = argparse.Namespace(out=str(tmp_path / "alone"), threads=1, presets=["pose-mum-plus"],
                              steps=6, warmup_steps=3, labeled=8, input=(64, 64), tiles=(2, 2),
                              batch=4, deconv_channels=32, workers=0, lr=1e-3, device="cpu",
                              mix_stages=list(bench.SSLConfig.mix_stages), schedule="paper")
    threads_before = torch.get_num_threads()
    try:
        bench.run_seed(args, 1, out / "data" / "train6" / "annotations.json",
                       out / "data" / "val3" / "annotations.json")
    finally:
        torch.set_num_threads(threads_before)

    def losses(run: Path) -> list[float]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["kind"] == "train"]

    for run in ("warmup-s1", "pose-mum-plus-s1"):
        alone, side = tmp_path / "alone" / run, out / run
        assert losses(alone) and losses(alone) == losses(side)
        a, b = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in (alone, side))
        for part in ("model", "teacher"):
            if a[part] is not None:
                assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert losses(out / "pose-mum-plus-s0") != losses(out / "pose-mum-plus-s1")


@pytest.mark.slow
def test_ssl_rescore_reproduces_the_trainers_ap_on_the_runs_own_val_set(tmp_path, monkeypatch):
    """Rescoring a finished run on its own val set gives the AP its training printed, for a
    student-only preset and a teacher preset (the teacher is what is scored)."""
    from posemum_deploy.training.trainer import train

    monkeypatch.syspath_prepend(str(ROOT))  # the script imports ssl_synthetic as a sibling
    bench, rescore = _load("ssl_synthetic"), _load("ssl_rescore")
    train_json, val_json = bench.make_data(tmp_path / "data", 6, 4)
    args = argparse.Namespace(labeled=8, input=(64, 64), tiles=(2, 2), batch=4, workers=0,
                              steps=3, device="cpu", deconv_channels=32, lr=1e-3,
                              mix_stages=["stem", "layer1", "layer2", "layer3"], schedule="cosine")
    aps = {}
    for preset in ("supervised", "pose-mum-plus"):
        cfg = bench.shared_config(args, preset, 0, tmp_path / "runs" / f"{preset}-s0",
                                  train_json, val_json)
        aps[preset] = 100 * train(cfg).last_metrics["AP"]
    (tmp_path / "runs" / "unrelated").mkdir()
    found = rescore.finished_runs([tmp_path / "runs"], ("supervised", "pose-mum-plus", "mum"))
    assert {p: list(r) for p, r in found.items()} == {"supervised": [0], "pose-mum-plus": [0],
                                                      "mum": []}
    for preset, ap in aps.items():
        assert rescore.rescore(found[preset][0], val_json) == pytest.approx(ap, abs=1e-9)

    # Tiny runs score ~0 AP, so also check what is scored: the teacher, on the given set.
    seen = {}

    def spy(model, cfg, device):
        seen.update(state=model.state_dict(), val_ann=cfg.data.val_ann)
        return {"AP": 0.0}

    monkeypatch.setattr(rescore, "validate", spy)
    run = found["pose-mum-plus"][0]
    rescore.rescore(run, train_json)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert seen["val_ann"] == str(train_json)
    assert all(torch.equal(seen["state"][k], v) for k, v in ckpt["teacher"].items())
    assert not all(torch.equal(seen["state"][k], v) for k, v in ckpt["model"].items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("preset", ["pose-mum-plus", "jc-s", "mum-ra", "ema"])
def test_a_cuda_ssl_step_never_makes_the_host_wait(preset):
    """Each sync inside a step idles the GPU while Python launches the next kernels; the
    trainer reads the losses only on the steps it logs, so a step itself must have none."""
    bench = _load("step_overhead")
    args = argparse.Namespace(input=(128, 96), tiles=(4, 3), batch=8, backbone="resnet18",
                              precision="bf16")
    batch = {k: v.pin_memory() for k, v in bench.labeled_batch(args).items()}  # as the loader gives it
    step = bench.make_step(preset, args, torch.device("cuda"))
    step.stream.batch = {k: v.pin_memory() for k, v in step.stream.batch.items()}
    step(batch)  # warm-up: cuDNN autotuning, allocator growth
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        logs = step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(logs["loss"])


def test_roofline_measures_every_arithmetic_the_cpu_tables_use():
    roofline = _load("roofline")
    threads_before = torch.get_num_threads()
    assert [roofline.arithmetic(n) for n in ("torch eager fp32", "openvino bf16",
                                             "openvino int8 (nncf)", "onnxruntime int8 (qdq)",
                                             "onnxruntime fp32")] == ["fp32", "bf16", "int8", "int8", "fp32"]
    for dtype in ("fp32", "bf16", "int8"):
        try:
            rate = roofline.gemm_gmacs(dtype, threads=1, n=128, reps=2)
        except RuntimeError:  # a torch without that CPU kernel: gemm_peaks leaves it out
            continue
        assert 0.01 < rate < 10_000  # GMAC/s of a real product, not a placeholder
    assert torch.get_num_threads() == threads_before  # the suite's thread count is left alone


def test_only_eval_mode_teachers_are_replayed_from_a_graph():
    from posemum_deploy.training.teachers import EmanTeacher, EmaTeacher, SingleTeacher

    assert SingleTeacher.eval_mode_predict and EmanTeacher.eval_mode_predict
    assert not EmaTeacher.eval_mode_predict  # BN in batch-statistics mode while predicting
    bench = _load("step_overhead")
    args = argparse.Namespace(input=(64, 64), tiles=(2, 2), batch=4, backbone="resnet18",
                              precision="fp32")
    assert bench.make_step("pose-mum-plus", args, torch.device("cpu"))._teacher_graph is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("preset", ["pose-mum-plus", "jc-s", "ema"])
def test_a_graphed_teacher_labels_as_the_eager_one_after_updates(preset):
    """After training steps (each updating the teacher in place), the replayed graph's
    pseudo-labels equal the eager teacher's on the same weak batch."""
    bench = _load("step_overhead")
    args = argparse.Namespace(input=(128, 96), tiles=(4, 3), batch=8, backbone="resnet18",
                              precision="bf16")
    step = bench.make_step(preset, args, torch.device("cuda"))
    if preset == "ema":  # BN in batch-statistics mode: stays eager
        assert step._teacher_graph is None
        return
    batch = bench.labeled_batch(args)
    weak = step._images(step.stream.next())
    with step._autocast():
        before = step._pseudo_labels(0, weak).float()
    for _ in range(3):
        assert torch.isfinite(step(batch)["loss"])
    with step._autocast():
        replayed = step._pseudo_labels(0, weak).float()
        eager = step.teacher.predict(weak).float()
    scale = eager.abs().max().item()
    assert (replayed - before).abs().max().item() > 1e-3 * scale  # the updates are seen
    torch.testing.assert_close(replayed, eager, rtol=0, atol=1e-3 * scale)

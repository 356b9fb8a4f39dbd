"""Bad input through the real console entry point: exit 2 and one line naming the file."""
import json
import subprocess
import sys

import pytest
import torch
from testdata import make_checkpoint


def _run(*args):
    return subprocess.run([sys.executable, "-m", "posemum_deploy.cli", *args],
                          capture_output=True, text=True, timeout=300)


def _checkpoint(path, input_hw):
    """A random-weight ResNet-18 checkpoint at `input_hw`, as `posemum train` writes one."""
    return make_checkpoint(path, input_hw=input_hw)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr.replace("\n", " ")


def test_train_on_json_without_persons(tmp_path):
    ann = tmp_path / "empty.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    _one_line_error(_run("train", "--labeled", str(ann), "--images", str(tmp_path), "--out",
                         str(tmp_path / "r")), "empty.json", "no person annotations")


def test_train_on_wrong_keypoint_count(tmp_path):
    ann = tmp_path / "k13.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 9,
                                           "height": 9}],
                               "annotations": [{"id": 7, "image_id": 1, "bbox": [0, 0, 5, 5],
                                                "keypoints": [1, 1, 2] * 13,
                                                "num_keypoints": 13}]}))
    _one_line_error(_run("train", "--labeled", str(ann), "--images", str(tmp_path), "--out",
                         str(tmp_path / "r")), "k13.json", "13 keypoints")


def test_evaluate_missing_checkpoint_and_corrupt_checkpoint(tmp_path, coco_mini):
    ann = str(coco_mini / "test_coco.json")
    _one_line_error(_run("evaluate", "--model", str(tmp_path / "nope.pt"), "--ann", ann),
                    "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = _run("evaluate", "--model", str(bad), "--ann", ann)
    _one_line_error(proc, "bad.pt", "weights_only loading refuses")
    assert "weights_only` set to `False" not in proc.stderr  # torch's unsafe advice


@pytest.mark.slow
def test_evaluate_model_with_detector_boxes_on_real_images(tmp_path, coco_mini):
    torch.manual_seed(0)
    ckpt = _checkpoint(tmp_path / "m.pt", (128, 96))
    out = tmp_path / "m.json"
    proc = _run("evaluate", "--model", str(ckpt), "--ann", str(coco_mini / "test_coco.json"),
                "--images", str(coco_mini), "--boxes",
                str(coco_mini / "test_coco_det_AP_H_56.json"), "--json-out", str(out),
                "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(out.read_text())
    assert set(stats) >= {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}
    results = json.loads((tmp_path / "results.json").read_text())
    # detector boxes on 4 images, OKS-NMS applied: several people per image survive
    assert len({r["image_id"] for r in results}) == 4 and len(results) >= 8


def test_evaluate_with_no_image_found_is_an_error_not_ap_zero(tmp_path, coco_mini):
    """Every image missing is a wrong --images folder: one line, no results, no AP 0."""
    ckpt = _checkpoint(tmp_path / "m.pt", (128, 96))
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    proc = _run("evaluate", "--model", str(ckpt), "--ann", str(coco_mini / "test_coco.json"),
                "--images", str(empty), "--json-out", str(tmp_path / "m.json"),
                "--backend", "torch")
    _one_line_error(proc, "elsewhere", "none of its first 4 images", "--images")
    assert "skipped" not in proc.stderr  # found out before the first image, not per image
    assert not (tmp_path / "m.json").exists()


def test_error_messages_print_verbatim_even_with_brackets(capsys, monkeypatch):
    """Install hints hold extras in brackets (pip install 'posemum[ray]'); rich markup
    must not eat them."""
    import pytest
    import typer

    from posemum_deploy.cli.errors import run_app
    from posemum_deploy.errors import BackendUnavailableError

    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise BackendUnavailableError("needs Ray: pip install 'posemum[ray]' (or 'ray[data]')")

    monkeypatch.setattr(sys, "argv", ["posemum"])
    with pytest.raises(SystemExit) as exit_info:
        run_app(app)
    assert exit_info.value.code == 2
    assert "pip install 'posemum[ray]' (or 'ray[data]')" in capsys.readouterr().err


def test_train_with_images_folder_missing_or_wrong(tmp_path, coco_mini):
    """A wrong --images fails at once, naming it: not one warning per instance and then a
    loader worker's traceback."""
    ann = str(coco_mini / "test_coco.json")
    missing = _run("train", "--labeled", ann, "--images", str(tmp_path / "nodir"), "--out",
                   str(tmp_path / "r1"))
    _one_line_error(missing, "nodir", "not a folder")
    wrong = _run("train", "--labeled", ann, "--images", str(tmp_path), "--out",
                 str(tmp_path / "r2"))
    _one_line_error(wrong, "test_coco.json", "none of its first")
    assert "skipped" not in wrong.stderr
    # a wrong val folder fails before the first step, not at the first validation
    val = _run("train", "--labeled", ann, "--images", str(coco_mini), "--val-ann", ann,
               "--val-images", str(tmp_path), "--batch-size", "4", "--max-steps", "1",
               "--out", str(tmp_path / "r3"))
    _one_line_error(val, "test_coco.json", "none of its first")
    assert not (tmp_path / "r3" / "checkpoints").exists()


def test_label_missing_model_and_empty_folder(tmp_path, coco_mini):
    """Both refused before anything is written to --out."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _one_line_error(_run("label", str(tmp_path / "nope.pt"), str(coco_mini), "--out",
                         str(tmp_path / "o1")), "nope.pt", "not found")
    ckpt = _checkpoint(tmp_path / "m.pt", (128, 96))
    _one_line_error(_run("label", str(ckpt), str(tmp_path / "empty"), "--out",
                         str(tmp_path / "o2")), "empty", "no images")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_output_path_under_a_file_is_one_line(tmp_path, coco_mini):
    """OS errors (here --out below a regular file) print the path and the reason."""
    (tmp_path / "afile").write_text("")
    ann = str(coco_mini / "test_coco.json")
    _one_line_error(_run("train", "--labeled", ann, "--images", str(coco_mini), "--out",
                         str(tmp_path / "afile" / "run"), "--batch-size", "4"),
                    "afile/run", "Not a directory")
    ckpt = _checkpoint(tmp_path / "m.pt", (64, 48))
    _one_line_error(_run("export", str(ckpt), "--out", str(tmp_path / "afile" / "m.onnx")),
                    "afile: is a file where a folder is needed")

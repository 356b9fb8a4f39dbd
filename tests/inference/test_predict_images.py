"""predict_coco over a folder that lacks images: one missing file is skipped and counted,
all of them missing is a wrong folder and an error naming it."""
import pytest
from testdata import make_checkpoint

from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.errors import ImageError
from posemum_deploy.inference.predict import predict_coco


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt")


def test_one_missing_image_is_skipped(coco_mini, checkpoint, tmp_path, caplog):
    ann = coco_mini / "test_coco.json"
    names = [im["file_name"] for im in load_coco_keypoints(ann)["images"]]
    for name in names[1:]:
        (tmp_path / name).symlink_to(coco_mini / name)
    results = predict_coco(checkpoint, ann, tmp_path, backend="torch")
    ids = {im["id"] for im in load_coco_keypoints(ann)["images"] if im["file_name"] != names[0]}
    assert results and {r["image_id"] for r in results} <= ids
    assert "1 image(s) could not be read" in caplog.text


def test_no_image_found_names_the_folder(coco_mini, checkpoint, tmp_path):
    """Found before the model loads: the json, a missing path in the folder, the option."""
    with pytest.raises(ImageError, match=rf"test_coco\.json: none of its first 4 images exist "
                                         rf"\(e\.g\. {tmp_path}/.*--images"):
        predict_coco(checkpoint, coco_mini / "test_coco.json", tmp_path, backend="torch")


def test_images_folder_that_is_not_a_folder(coco_mini, checkpoint, tmp_path):
    with pytest.raises(ImageError, match=f"{tmp_path / 'nope'}: not a folder"):
        predict_coco(checkpoint, coco_mini / "test_coco.json", tmp_path / "nope", backend="torch")


def test_every_image_unreadable_names_the_folder(coco_mini, checkpoint, tmp_path):
    """Files that exist but do not decode: each is skipped, and all of them is the error."""
    for im in load_coco_keypoints(coco_mini / "test_coco.json")["images"]:
        (tmp_path / im["file_name"]).write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="none of the 4 images"):
        predict_coco(checkpoint, coco_mini / "test_coco.json", tmp_path, backend="torch")

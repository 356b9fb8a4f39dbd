"""Import SimpleBaseline checkpoints trained elsewhere (mmpose 1.x / 0.x, the original
release) as ordinary posemum checkpoints, so a user can label with the teacher they have.

Key names follow the upstream sources (read at these commits):
- mmpose 1.x, open-mmlab/mmpose@759b39c13fea6ba094afc1fa932f51dc1b11cbf9:
  `mmpose/models/heads/heatmap_heads/heatmap_head.py` (HeatmapHead: `deconv_layers`
  Sequential of [ConvTranspose2d(bias=False), BN, ReLU]×n, `conv_layers`, `final_layer`),
  `mmpose/models/backbones/resnet.py` (`conv1`/`bn1`/`layer1..4`, torchvision names),
  `tools/misc/publish_model.py` (released files keep `meta` + `state_dict`); the top-down
  estimator names its parts `backbone.` and `head.`; `meta['dataset_meta']` holds NumPy
  arrays (`mmpose/datasets/datasets/utils.py`: sigmas, colours), hence the allow-list below.
- mmpose 0.x, open-mmlab/mmpose@3b8173463c4ecdcd3d82d566254bb2ae2eb0cc07 (branch 0.x):
  `mmpose/models/heads/topdown_heatmap_simple_head.py` (same `deconv_layers`/`final_layer`)
  under `keypoint_head.` (`mmpose/models/detectors/top_down.py`).
- original release, microsoft/human-pose-estimation.pytorch@49f3f4458c9d5917c75c37a6db48c6a0d7cd89a1:
  `lib/models/pose_resnet.py` (PoseResNet: `conv1`, `bn1`, `layer1..4`, `deconv_layers`,
  `final_layer`), saved by `pose_estimation/train.py` as a plain state dict (or inside
  `state_dict` with DataParallel's `module.`); images read with cv2 (BGR) and normalised
  with ImageNet's RGB mean/std, so its default channel order is BGR.

Everything is read with `torch.load(weights_only=True)`; nothing upstream is imported.
"""
from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posemum_deploy.artifacts import ModelMetadata, sha256_file
from posemum_deploy.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.models.simple_baseline import (
    TORCHVISION_TO_STAGES,
    build_model,
    check_input_hw,
    rename_prefixes,
)

log = logging.getLogger(__name__)
SOURCES = ("auto", "mmpose", "simplebaseline")
# flavour -> (backbone prefix, head prefix) inside the (de-`module.`d) state dict.
FLAVOURS = {"mmpose1": ("backbone.", "head."), "mmpose0": ("backbone.", "keypoint_head."),
            "simplebaseline": ("", "")}
SOURCE_OF = {"mmpose1": "mmpose", "mmpose0": "mmpose", "simplebaseline": "simplebaseline"}
# residual blocks per stage -> torchvision depth name (basic blocks / bottlenecks).
DEPTHS: dict[tuple[str, tuple[int, ...]], str] = {
    ("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152"}
HEAD_TO_POSEMUM = {"deconv_layers.": "deconv.", "final_layer.": "final."}
# upstream defaults: mmpose (both versions) normalises RGB, the original release BGR.
DEFAULT_ORDER = {"mmpose": "RGB", "simplebaseline": "BGR"}


def numpy_allow_list() -> list[Any]:
    """The few NumPy globals an mmpose `meta` pickles (arrays, dtypes, scalars), under the
    module names both NumPy 1.x (`numpy.core`) and 2.x (`numpy._core`) write."""
    try:
        from numpy._core import multiarray  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]  # same module, NumPy 1.x name

    allow: list[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allow += [(multiarray._reconstruct, f"{module}._reconstruct"),
                  (multiarray.scalar, f"{module}.scalar")]
    # the dtype classes (numpy.dtypes.Float32DType, ...) newer NumPy pickles dtypes with
    allow += list({type(np.dtype(code)) for code in "efdbhilqBHILQ?"})
    return allow


def read_upstream(path: Path) -> Any:
    """`torch.load(weights_only=True)` with only the NumPy allow-list added."""
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(numpy_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = str(e).split("Unsupported global: ")[-1].split(" was not")[0][:120]
        raise ArtifactError(f"{path}: holds objects beyond tensors, containers and NumPy arrays "
                            f"({found}); posemum reads checkpoints with weights_only=True and "
                            "imports only SimpleBaseline state dicts (mmpose, original release)"
                            ) from e
    except Exception as e:  # torch raises many types for a foreign or corrupt file
        raise ArtifactError(f"{path}: not a torch checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]})") from e


def find_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The tensor dict of an upstream file: the file itself or its `state_dict`, without
    DataParallel's `module.` prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        what = type(obj).__name__ if not isinstance(obj, dict) else \
            f"a dict with keys {', '.join(map(str, list(obj)[:5])) or '(none)'}"
        raise ArtifactError(f"{path}: not a state dict (found {what}); pass an mmpose "
                            "checkpoint (`meta` + `state_dict`) or a SimpleBaseline state dict")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def detect_flavour(state: dict[str, Tensor], path: Path, source: str) -> str:
    """mmpose1 / mmpose0 / simplebaseline from the key prefixes; refuses non-heatmap heads."""
    if source not in SOURCES:
        raise ConfigError(f"--from {source!r}: choose {', '.join(SOURCES)}")
    keys = list(state)
    if any(k.startswith("head.") for k in keys):
        flavour = "mmpose1"
    elif any(k.startswith("keypoint_head.") for k in keys):
        flavour = "mmpose0"
    elif any(k.startswith("deconv_layers.") for k in keys) and "conv1.weight" in state:
        flavour = "simplebaseline"
    else:
        raise ArtifactError(f"{path}: no SimpleBaseline layout found (first keys: "
                            f"{', '.join(keys[:4])}); supported: mmpose `backbone.`/`head.` "
                            "(1.x) or `keypoint_head.` (0.x), or `conv1.`…`deconv_layers.`")
    if source != "auto" and SOURCE_OF[flavour] != source:
        raise ConfigError(f"{path}: --from {source} but the keys are a {SOURCE_OF[flavour]} "
                          "layout; pass --from auto or the matching source")
    head = FLAVOURS[flavour][1]
    parts = {k[len(head):].split(".")[0] for k in keys if k.startswith(head)}
    if not head:  # the original release: one module, head parts beside the ResNet's
        parts -= {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    other = sorted(parts - {"deconv_layers", "final_layer", "conv_layers"})
    if other or f"{head}final_layer.weight" not in state:
        raise ArtifactError(f"{path}: the {head.rstrip('.') or 'head'} is not a heatmap head (parts: "
                            f"{', '.join(other) or 'no final_layer'}); supported: SimpleBaseline "
                            "heatmap heads (deconv_layers + final_layer)")
    return flavour


@dataclass(frozen=True)
class Architecture:
    """What the tensors' shapes say: ResNet depth, head widths/kernels, joints."""

    backbone: str
    deconv_widths: tuple[int, ...]
    deconv_kernels: tuple[int, ...]
    final_kernel: int
    num_joints: int


def infer_architecture(state: dict[str, Tensor], path: Path) -> Architecture:
    """Depth from blocks per stage and block type; head from deconv/final shapes
    (`state` in upstream names without flavour prefixes: conv1…, deconv_layers…)."""
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    blocks = tuple(len({m.group(1) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    if (kind, blocks) not in DEPTHS:
        raise ArtifactError(f"{path}: backbone is a ResNet with {kind} blocks {blocks} per "
                            "stage, not one of ResNet-18/34/50/101/152")
    deconvs = sorted(int(m.group(1)) for k in state
                     if (m := re.fullmatch(r"deconv_layers\.(\d+)\.weight", k))
                     and state[k].dim() == 4 and f"deconv_layers.{int(m.group(1)) + 1}.running_mean" in state)
    final = state["final_layer.weight"]
    return Architecture(DEPTHS[(kind, blocks)],
                        tuple(int(state[f"deconv_layers.{i}.weight"].shape[1]) for i in deconvs),
                        tuple(int(state[f"deconv_layers.{i}.weight"].shape[2]) for i in deconvs),
                        int(final.shape[2]), int(final.shape[0]))


def check_supported(arch: Architecture, state: dict[str, Tensor], path: Path) -> None:
    """posemum's SimpleBaseline is 3 × (deconv 4×4 s2, BN, ReLU) of one width + a 1×1 conv,
    the head of every released SimpleBaseline; anything else is refused, not approximated."""
    problems = []
    if len(arch.deconv_widths) != 3 or set(arch.deconv_kernels) != {4}:
        problems.append(f"{len(arch.deconv_widths)} deconvolutions of kernels "
                        f"{list(arch.deconv_kernels)} (posemum: 3 of kernel 4)")
    if len(set(arch.deconv_widths)) > 1:
        problems.append(f"widths {list(arch.deconv_widths)} (posemum: one width)")
    if arch.final_kernel != 1:
        problems.append(f"final conv kernel {arch.final_kernel} (posemum: 1)")
    if any(k.startswith("conv_layers.") for k in state):
        problems.append("extra conv layers between deconvolutions and final layer")
    if arch.num_joints != 17:
        problems.append(f"{arch.num_joints} joints (posemum imports COCO's 17)")
    if problems:
        raise ArtifactError(f"{path}: head not representable in posemum's SimpleBaseline: "
                            f"{'; '.join(problems)}")


def to_posemum_state(state: dict[str, Tensor], flavour: str, path: Path
                     ) -> tuple[dict[str, Tensor], Architecture]:
    """Upstream tensors renamed to posemum's, checked key by key against the built model."""
    backbone, head = FLAVOURS[flavour]
    origin: dict[str, str] = {}  # key without the flavour prefix -> the file's key
    for key in state:
        for prefix in dict.fromkeys((backbone, head)):
            if key.startswith(prefix):
                origin[key[len(prefix):]] = key
                break
    plain = {k: state[v] for k, v in origin.items()}
    dropped = [k for k in state if k not in origin.values()]
    arch = infer_architecture(plain, path)
    check_supported(arch, plain, path)
    mapping = {**TORCHVISION_TO_STAGES, **HEAD_TO_POSEMUM}
    own = rename_prefixes(plain, mapping)
    model = build_model(arch.backbone, arch.num_joints, deconv_channels=arch.deconv_widths[0])
    expected = model.state_dict()
    extra = dropped + [origin[k] for k in plain if not k.startswith(tuple(mapping))]
    extra += [upstream_name(k, flavour) for k in own if k not in expected]
    # Files saved before PyTorch 0.4.1 (the original release) have no num_batches_tracked.
    missing = [k for k in expected if k not in own and not k.endswith("num_batches_tracked")]
    missing = [upstream_name(k, flavour) for k in missing]
    shaped = [upstream_name(k, flavour) for k in own
              if k in expected and own[k].shape != expected[k].shape]
    if extra or missing or shaped:
        parts = [f"{name} {', '.join(keys[:4])}" for name, keys in
                 (("missing:", missing), ("unexpected:", extra), ("mis-shaped:", shaped)) if keys]
        raise ArtifactError(f"{path}: does not match a {arch.backbone} SimpleBaseline "
                            f"({'; '.join(parts)}); pass an unmodified upstream checkpoint")
    return {k: own.get(k, v) for k, v in expected.items()}, arch


def upstream_name(key: str, flavour: str) -> str:
    """A posemum state-dict key spelled as the upstream file spells it (for errors)."""
    backbone, head = FLAVOURS[flavour]
    for mapping, prefix in ((TORCHVISION_TO_STAGES, backbone), (HEAD_TO_POSEMUM, head)):
        for theirs, ours in mapping.items():
            if key.startswith(ours):
                return prefix + theirs + key[len(ours):]
    return key


def normalisation(mean: tuple[float, ...] | None, std: tuple[float, ...] | None
                  ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Mean/std on the 0..1 scale posemum stores (ImageNet's where not given). Both are on
    one scale, read from the mean (mmpose writes 123.675, torchvision 0.485), so a std of
    1 on the 0..255 scale stays 1/255."""
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != 3:
            raise ConfigError(f"--{name} needs 3 values (one per channel), got {len(values)}")
    ref = mean if mean is not None else std
    div = 255.0 if ref is not None and max(ref) > 1.0 else 1.0
    m = IMAGENET_MEAN if mean is None else _per_channel(mean, div)
    s = IMAGENET_STD if std is None else _per_channel(std, div)
    return m, s


def _per_channel(values: tuple[float, ...], div: float) -> tuple[float, float, float]:
    """Three values (`normalisation` checked the count) divided by `div`."""
    r, g, b = values
    return r / div, g / div, b / div


def input_normalisation(mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                        channel_order: str
                        ) -> tuple[tuple[float, float, float], tuple[float, float, float], bool]:
    """Mean/std for posemum's RGB crops, and whether the network's input channels must be
    reversed: a BGR network becomes an RGB one by reversing its first layer's input
    channels and the per-channel statistics, which is exact."""
    order = channel_order.upper()
    if order not in ("RGB", "BGR"):
        raise ConfigError(f"--channel-order {channel_order!r}: choose rgb or bgr")
    m, s = normalisation(mean, std)
    if order == "BGR":
        return m[::-1], s[::-1], True
    return m, s, False


def import_checkpoint(src: str | Path, out: str | Path, source: str = "auto",
                      input_hw: tuple[int, int] = (256, 192),
                      mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                      channel_order: str | None = None) -> ModelMetadata:
    """Read an upstream SimpleBaseline file and write a posemum checkpoint at `out`."""
    src, out = Path(src), Path(out)
    check_input_hw(input_hw)
    state = find_state_dict(read_upstream(src), src)
    flavour = detect_flavour(state, src, source)
    own, arch = to_posemum_state(state, flavour, src)
    order = (channel_order or DEFAULT_ORDER[SOURCE_OF[flavour]]).upper()
    m, s, reverse = input_normalisation(mean, std, order)
    if reverse:
        own["stages.0.0.weight"] = own["stages.0.0.weight"].flip(1).contiguous()
    model = build_model(arch.backbone, arch.num_joints, deconv_channels=arch.deconv_widths[0])
    model.load_state_dict(own)  # the exact check that posemum can load what it wrote
    meta = ModelMetadata(backbone=arch.backbone, num_joints=arch.num_joints,
                         deconv_channels=arch.deconv_widths[0], input_hw=input_hw,
                         heatmap_hw=(input_hw[0] // 4, input_hw[1] // 4), mean=m, std=s,
                         channel_order="RGB", weights="student", format="torch",
                         source_checkpoint_sha256=sha256_file(src),
                         extra={"imported_from": {"file": src.name, "layout": flavour,
                                                  "channel_order": order},
                                # upstream heatmaps peak at crop_xy / stride (MSRA encoding)
                                "heatmap_offset": 0.0})
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_meta": meta.to_dict(),
                "imported": {"source": SOURCE_OF[flavour], "layout": flavour}}, out)
    log.info("imported %s (%s, %s) to %s", src, flavour, arch.backbone, out)
    return meta

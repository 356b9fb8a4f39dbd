"""Option types shared by several commands."""
from __future__ import annotations

from posemum_deploy.errors import ConfigError


def parse_hw(text: str, option: str = "size", model_rule: bool = True) -> tuple[int, int]:
    """'256x192' → (256, 192) as (H, W); `model_rule` also applies posemum's own model's
    size rule (a foreign ONNX model imported as is need not follow it)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ConfigError(f"{option} {text!r} must look like HEIGHTxWIDTH, e.g. 256x192") from e
    if h <= 0 or w <= 0:
        raise ConfigError(f"{option} {text!r}: height and width must be positive")
    if not model_rule:
        return h, w
    from posemum_deploy.models.simple_baseline import check_input_hw  # torch: only when parsing

    check_input_hw((h, w))  # the model's rule, as the trainer checks it
    return h, w

"""The TensorRT Python API the code uses exists in TensorRT 10.16 and 11.4 alike.

TensorRT cannot run here, so a removed name (11.x dropped BuilderFlag.FP16/INT8, the
INT8 calibrators, `int8_calibrator`, `set_calibration_profile`) would first fail on a
user's GPU. The names the real bindings register are in tests/data/tensorrt_api_*.txt
(see tests/data/extract_tensorrt_api.py); this walks the AST of every TensorRT module and
checks each `trt.X` / `trt.X.Y`, and each method or attribute used on a TensorRT object
held in a conventionally named variable (builder, network, config, parser, profile,
timing, runtime, engine, context, self.engine, self.context), against both lists.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
VERSIONS = {"10.16": DATA / "tensorrt_api_10.16.txt", "11.4": DATA / "tensorrt_api_11.4.txt"}
MODULES = ["posemum_deploy/export/tensorrt.py", "posemum_deploy/export/trt_networks.py",
           "posemum_deploy/export/trt_cache.py", "posemum_deploy/export/fp16.py",
           "posemum_deploy/inference/trt_backend.py", "posemum_deploy/inference/trt_engine.py"]
TYPED = {"builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig",
         "parser": "OnnxParser", "profile": "IOptimizationProfile", "timing": "ITimingCache",
         "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext"}
REMOVED = re.compile(r"BuilderFlag\.(FP16|INT8)\b|IInt8\w*Calibrator|int8_calibrator|"
                     r"set_calibration_profile")


def api(version: str) -> set[str]:
    return {line.strip() for line in VERSIONS[version].read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def _chain(node: ast.AST) -> list[str] | None:
    """['trt', 'X', 'Y'] for trt.X.Y, ['self.engine', 'f'] for self.engine.f, else the
    chain of a typed variable; None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        parts.reverse()
        if len(parts) > 2 and parts[0] == "self" and parts[1] in ("engine", "context"):
            return [parts[1], *parts[2:]]
        return parts
    return None


def _link_parents(tree: ast.AST) -> None:
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent  # type: ignore[attr-defined]


def missing(path: Path, version: str) -> list[str]:
    names = api(version)
    tree = ast.parse(path.read_text(), str(path))
    _link_parents(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "parent", None),
                                                             ast.Attribute):
            continue
        parts = _chain(node)
        if not parts or len(parts) < 2:
            continue
        wanted = []
        if parts[0] == "trt":
            wanted = [parts[1]] + ([f"{parts[1]}.{parts[2]}"] if len(parts) > 2 else [])
        elif parts[0] in TYPED:
            wanted = [f"{TYPED[parts[0]]}.{parts[1]}"]
        out += [(node.lineno, f"{path.name}:{node.lineno}: trt.{w} is not in TensorRT {version}")
                for w in wanted if w not in names]
    return [text for _, text in sorted(out)]


@pytest.mark.parametrize("version", list(VERSIONS))
def test_tensorrt_modules_use_only_names_both_majors_have(version: str) -> None:
    problems = [p for m in MODULES for p in missing(REPO / m, version)]
    assert not problems, "\n".join(problems)
    counted = sum(len(uses(REPO / m)) for m in MODULES)
    assert counted >= 30  # the walk really sees the builder/backend calls


def uses(path: Path) -> list[tuple[int, str]]:
    """(line, chain) of every outermost trt./typed-variable attribute in the module."""
    tree = ast.parse(path.read_text(), str(path))
    _link_parents(tree)
    return [(n.lineno, c) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and not isinstance(getattr(n, "parent", None), ast.Attribute)
            and (c := ".".join(_chain(n) or [])).split(".")[0] in ("trt", *TYPED)]


def test_the_contract_catches_names_removed_in_11(tmp_path: Path) -> None:
    """A test of the test: the 10.x-only names that broke every FP16/INT8 export on 11.x."""
    module = tmp_path / "old_build.py"
    module.write_text("def build(trt, builder, network, calibrator):\n"
                      "    config = builder.create_builder_config()\n"
                      "    config.set_flag(trt.BuilderFlag.FP16)\n"
                      "    config.int8_calibrator = calibrator\n"
                      "    config.set_calibration_profile(builder.create_optimization_profile())\n"
                      "    class C(trt.IInt8EntropyCalibrator2):\n"
                      "        pass\n"
                      "    return builder.build_serialized_network(network, config)\n")
    assert missing(module, "10.16") == []
    problems = missing(module, "11.4")
    assert problems == [
        "old_build.py:3: trt.BuilderFlag.FP16 is not in TensorRT 11.4",
        "old_build.py:4: trt.IBuilderConfig.int8_calibrator is not in TensorRT 11.4",
        "old_build.py:5: trt.IBuilderConfig.set_calibration_profile is not in TensorRT 11.4",
        "old_build.py:6: trt.IInt8EntropyCalibrator2 is not in TensorRT 11.4"]


def test_no_implicit_precision_or_calibrator_api_anywhere() -> None:
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for p in sorted((REPO / "posemum_deploy").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if REMOVED.search(line)]
    assert not hits, "\n".join(hits)


def test_api_lists_name_their_source_and_differ_where_11_removed_names() -> None:
    v10, v11 = api("10.16"), api("11.4")
    for version, path in VERSIONS.items():
        header = path.read_text().splitlines()[0]
        assert header.startswith(f"# TensorRT {version}") and "Python API names" in header
    removed = {"BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2",
               "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile"}
    assert removed <= v10 and not removed & v11
    assert {"NetworkDefinitionCreationFlag.STRONGLY_TYPED", "ICudaEngine.get_tensor_dtype",
            "IBuilderConfig.set_timing_cache", "IExecutionContext.execute_async_v3"} <= v10 & v11

"""A recording stand-in for the `tensorrt` module, limited to the real 11.4 API.

`build_engine`, `export_tensorrt` and `TrtBackend` run against it without a GPU. Every
attribute the code reads from the module, or calls on a builder/config/context object,
must exist in tests/data/tensorrt_api_11.4.txt (the real bindings' names), so code that
reaches for a removed name (BuilderFlag.FP16, int8_calibrator, ...) fails here just as it
would on TensorRT 11. Calls are appended to `FakeTrt.calls` as (object, name, args).
"""
from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

API = Path(__file__).resolve().parent / "data" / "tensorrt_api_11.4.txt"


def api_names(path: Path = API) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


class _Recorder:
    """Records every method call and attribute write; refuses names the real class lacks."""

    _cls = ""

    def __init__(self, fake: FakeTrt) -> None:
        object.__setattr__(self, "_fake", fake)

    def _check(self, name: str) -> None:
        if f"{self._cls}.{name}" not in self._fake.api:
            raise AttributeError(f"tensorrt {self._fake.__version__}: '{self._cls}' has no "
                                 f"attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        self._check(name)
        self._fake.calls.append((self._cls, f"set {name}", (value,)))
        object.__setattr__(self, name, value)

    def _rec(self, name: str, *args: Any) -> None:
        self._check(name)
        self._fake.calls.append((self._cls, name, args))


class FakeTiming(_Recorder):
    _cls = "ITimingCache"

    def __init__(self, fake: FakeTrt, data: bytes) -> None:
        super().__init__(fake)
        object.__setattr__(self, "data", bytes(data))

    def serialize(self) -> bytes:
        self._rec("serialize")
        return self.data + b"+timings"


class FakeConfig(_Recorder):
    _cls = "IBuilderConfig"

    def __init__(self, fake: FakeTrt) -> None:
        super().__init__(fake)
        object.__setattr__(self, "timing", None)

    def add_optimization_profile(self, profile: Any) -> int:
        self._rec("add_optimization_profile", profile)
        return 0

    def create_timing_cache(self, data: bytes) -> FakeTiming:
        self._rec("create_timing_cache", bytes(data))
        if bytes(data).startswith(b"garbage"):
            raise RuntimeError("Timing cache deserialization failed")
        return FakeTiming(self._fake, data)

    def set_timing_cache(self, cache: FakeTiming, ignore_mismatch: bool) -> bool:
        self._rec("set_timing_cache", cache.data, ignore_mismatch)
        if cache.data and self._fake.timing_mismatch:
            return False
        object.__setattr__(self, "timing", cache)
        return True

    def get_timing_cache(self) -> FakeTiming | None:
        self._rec("get_timing_cache")
        return self.timing


class FakeProfile(_Recorder):
    _cls = "IOptimizationProfile"

    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        self._rec("set_shape", name, lo, opt, hi)


class FakeNetwork(_Recorder):
    _cls = "INetworkDefinition"

    def get_input(self, index: int) -> Any:
        self._rec("get_input", index)
        return SimpleNamespace(name="input")


class FakeParser(_Recorder):
    _cls = "OnnxParser"

    def __init__(self, fake: FakeTrt, network: FakeNetwork, logger: Any) -> None:
        super().__init__(fake)
        fake.calls.append(("trt", "OnnxParser", (network, logger)))
        object.__setattr__(self, "num_errors", 0)

    def parse_from_file(self, path: str) -> bool:
        self._rec("parse_from_file", path)
        self._fake.parsed.append(Path(path))
        return True

    def get_error(self, index: int) -> str:
        self._rec("get_error", index)
        return ""


class FakeBuilder(_Recorder):
    _cls = "Builder"

    def __init__(self, fake: FakeTrt, logger: Any) -> None:
        super().__init__(fake)
        fake.calls.append(("trt", "Builder", (logger,)))

    def create_network(self, flags: int) -> FakeNetwork:
        self._rec("create_network", flags)
        return FakeNetwork(self._fake)

    def create_builder_config(self) -> FakeConfig:
        self._rec("create_builder_config")
        return FakeConfig(self._fake)

    def create_optimization_profile(self) -> FakeProfile:
        self._rec("create_optimization_profile")
        return FakeProfile(self._fake)

    def build_serialized_network(self, network: Any, config: Any) -> bytes:
        self._rec("build_serialized_network", network, config)
        self._fake.builds += 1
        digest = hashlib.sha256(self._fake.parsed[-1].read_bytes()).hexdigest()
        return f"engine of {digest}".encode()


class FakeContext(_Recorder):
    """Binds buffers by address and 'runs' by writing sum(input) into every output cell."""

    _cls = "IExecutionContext"

    def __init__(self, fake: FakeTrt, out_khw: tuple[int, int, int], out_np: Any) -> None:
        super().__init__(fake)
        object.__setattr__(self, "shape", None)
        object.__setattr__(self, "addresses", {})
        object.__setattr__(self, "out_khw", out_khw)
        object.__setattr__(self, "out_np", out_np)

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self._rec("set_input_shape", name, shape)
        object.__setattr__(self, "shape", tuple(shape))
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        self._rec("get_tensor_shape", name)
        return (self.shape[0], *self.out_khw)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._rec("set_tensor_address", name, address)
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._rec("execute_async_v3", stream_handle)
        self._fake.on_device.append(("execute_async_v3", self._fake.current_device()))
        n_in, n_out = int(np.prod(self.shape)), self.shape[0] * int(np.prod(self.out_khw))
        x = np.ctypeslib.as_array((ctypes.c_float * n_in).from_address(self.addresses["input"]))
        raw = (ctypes.c_uint8 * (n_out * np.dtype(self.out_np).itemsize)).from_address(
            self.addresses["heatmaps"])
        np.frombuffer(raw, dtype=self.out_np)[:] = x.reshape(self.shape[0], -1).sum(1).repeat(
            n_out // self.shape[0])
        return True


class FakeEngine(_Recorder):
    _cls = "ICudaEngine"

    def __init__(self, fake: FakeTrt, out_dtype: Any) -> None:
        super().__init__(fake)
        object.__setattr__(self, "num_io_tensors", 2)
        object.__setattr__(self, "out_dtype", out_dtype)

    def get_tensor_name(self, i: int) -> str:
        self._rec("get_tensor_name", i)
        return ("input", "heatmaps")[i]

    def get_tensor_mode(self, name: str) -> str:
        self._rec("get_tensor_mode", name)
        return "INPUT" if name == "input" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        self._rec("get_tensor_dtype", name)
        return "FLOAT" if name == "input" else self.out_dtype

    def create_execution_context(self) -> FakeContext:
        self._rec("create_execution_context")
        self._fake.on_device.append(("create_execution_context", self._fake.current_device()))
        out_np = np.float16 if self.out_dtype == "HALF" else np.float32
        return FakeContext(self._fake, self._fake.out_khw, out_np)


class FakeRuntime(_Recorder):
    _cls = "Runtime"

    def __init__(self, fake: FakeTrt, logger: Any) -> None:
        super().__init__(fake)

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
        self._rec("deserialize_cuda_engine", len(data))
        self._fake.on_device.append(("deserialize_cuda_engine", self._fake.current_device()))
        return FakeEngine(self._fake, self._fake.out_dtype)


class FakeTrt:
    """The module object: `trt.Builder(...)`, `trt.Logger.WARNING`, enums as strings."""

    def __init__(self, version: str = "11.4.0.106", timing_mismatch: bool = False,
                 out_dtype: str = "FLOAT", out_khw: tuple[int, int, int] = (17, 32, 24)) -> None:
        self.api = api_names()
        self.__version__ = version
        self.calls: list[tuple[str, str, tuple]] = []
        self.parsed: list[Path] = []
        self.on_device: list[tuple[str, Any]] = []
        self.builds = 0
        self.timing_mismatch = timing_mismatch
        self.out_dtype, self.out_khw = out_dtype, out_khw
        self.device_stack: list[Any] = []

    def current_device(self) -> Any:
        return self.device_stack[-1] if self.device_stack else None

    def __getattr__(self, name: str) -> Any:
        if name not in self.__dict__.get("api", ()):
            raise AttributeError(f"module 'tensorrt' has no attribute '{name}'")
        members = {m.split(".", 1)[1] for m in self.api if m.startswith(name + ".")}
        factories = {"Builder": lambda logger: FakeBuilder(self, logger),
                     "OnnxParser": lambda net, logger: FakeParser(self, net, logger),
                     "Runtime": lambda logger: FakeRuntime(self, logger)}
        if name in factories:
            return factories[name]
        if name == "Logger":
            return type("Logger", (), {"WARNING": "WARNING", "__init__": lambda s, sev: None})
        if name == "NetworkDefinitionCreationFlag":
            return SimpleNamespace(STRONGLY_TYPED=0)
        return SimpleNamespace(**{m: m for m in members if "." not in m})

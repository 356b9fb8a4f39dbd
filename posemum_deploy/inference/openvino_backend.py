"""OpenVINO backend: the CPU fast path for labeling and evaluation without a GPU.
(Slightly over 300 lines: the async API and the layer introspection belong to the one
compiled model.)

Reads an exported ONNX file or an OpenVINO IR (.xml + .bin) and compiles it for the
CPU with an explicit precision, because OpenVINO's own default on CPUs with BF16 is to
run bf16 silently, which would change fp32 results without anyone asking for it.
The batch shape is fixed at compile time (static shapes are faster on the CPU plugin),
and an `AsyncInferQueue` keeps several requests in flight so that JPEG decode and crop
work in the caller overlap inference. Threads are always explicit (INFERENCE_NUM_THREADS,
default: the CPUs this process may use), so a labeler that decodes on one core can give
OpenVINO the rest. `graph` says which graph the artifact holds (the sidecar's
`extra["graph"]`, else read from the ops): OpenVINO's own ("convtranspose") or ONNX
Runtime's sub-pixel rewrite, which runs but 9-13 % slower here.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, sha256_file, sidecar_path
from posemum_deploy.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    import_optional,
)
from posemum_deploy.system import usable_cpus

log = logging.getLogger(__name__)

# our precision name -> OpenVINO INFERENCE_PRECISION_HINT for the float parts of the graph.
FLOAT_HINTS = {"fp32": "f32", "bf16": "bf16"}
ALIASES = {"f32": "fp32", "fp32": "fp32", "bf16": "bf16", "int8": "int8"}
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# capability OpenVINO must report for each precision (OPTIMIZATION_CAPABILITIES).
NEEDS = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}
QUANT_OPS = {"FakeQuantize", "FakeConvert"}
# graph kinds as `export.onnx` names them (that module sits above this one).
GRAPH_KINDS = ("subpixel-deconv", "convtranspose")
Callback = Callable[[np.ndarray, Any], None]


def require_openvino() -> Any:
    return import_optional("openvino", "OpenVINO is not installed; pip install 'posemum[cpu]' "
                           "(or `pip install openvino`)")


def cpu_precisions() -> tuple[str, ...]:
    """Precisions this machine's CPU plugin can run natively, e.g. ('fp32', 'bf16', 'int8')."""
    ov = require_openvino()
    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return tuple(p for p in ("fp32", "bf16", "int8") if NEEDS[p] in caps)


def check_supported(precision: str, capabilities: Iterable[str], device: str = "CPU") -> None:
    """Refuse bf16 (or int8) on a device whose OPTIMIZATION_CAPABILITIES lack it: OpenVINO
    would otherwise emulate or silently fall back, and the speed-up would not be there."""
    caps = set(capabilities)
    need = NEEDS[precision]
    if need not in caps:
        raise BackendUnavailableError(
            f"{device} has no native {need} support (capabilities: {', '.join(sorted(caps))}); "
            "run with --precision fp32 (or int8 on a quantised export)")


def is_quantized(model: Any) -> bool:
    """True when an ov.Model carries quantisation (NNCF FakeQuantize or ONNX QDQ pairs)."""
    return any(op.get_type_name() in QUANT_OPS for op in model.get_ops())


def graph_of(meta: ModelMetadata, model: Any) -> str:
    """The sidecar's graph kind, or (exports before kinds were recorded) the ops': an
    ov.Model with ConvolutionBackpropData holds plain deconvolutions."""
    if meta.extra.get("graph") in GRAPH_KINDS:
        return str(meta.extra["graph"])
    ops = {op.get_type_name() for op in model.get_ops()}
    return "convtranspose" if "ConvolutionBackpropData" in ops else "subpixel-deconv"


def resolve_precision(requested: str, meta: ModelMetadata, quantized: bool) -> str:
    """'auto' → what the sidecar says the artifact was made for; checks the rest fit it."""
    if requested not in ALIASES and requested != "auto":
        raise ConfigError(f"OpenVINO precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        if quantized:
            return "int8"
        wanted = ALIASES.get(meta.precision, "fp32")
        return "fp32" if wanted == "int8" else wanted
    precision = ALIASES[requested]
    if precision == "int8" and not quantized:
        raise ConfigError("precision int8 needs a quantised model; export one with "
                          "`posemum export --format openvino --precision int8 --calib DIR`")
    if quantized and precision != "int8":
        raise ConfigError(f"this model is INT8-quantised; run it with precision int8, not {requested}")
    return precision


class OpenVinoBackend:
    """OpenVINO CPU inference with fixed batch shape; `predict` float32 NCHW → heatmaps.

    Besides the synchronous `predict` of the Backend protocol it offers asynchronous
    use: `predict_async(batch, userdata, callback)` + `wait_all()`, or the ordered
    iterator `predict_iter(pairs)`, keeping `num_requests` batches in flight.
    """

    name = "openvino"

    def __init__(self, path: str | Path, precision: str = "auto", threads: int | None = None,
                 streams: int | None = None, batch_size: int = 32, num_requests: int | None = None,
                 metadata: ModelMetadata | None = None, device: str = "CPU",
                 perf_counts: bool = False) -> None:
        ov = require_openvino()
        self.path = Path(path)
        self.metadata = metadata if metadata is not None else load_sidecar(self.path)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        self.batch_size = batch_size
        self.core = ov.Core()
        model = _read_model(self.core, self.path)
        self._check_input(model)
        self.precision = resolve_precision(precision, self.metadata, is_quantized(model))
        self.graph = graph_of(self.metadata, model)
        self._check_cpu_supports(device)
        h, w = self.metadata.input_hw
        model.reshape({model.inputs[0].get_any_name(): [batch_size, 3, h, w]})
        self.config = compile_config(self.precision, threads, streams)
        if perf_counts:  # per-layer timings for `layer_profile` (costs a little speed)
            self.config["PERF_COUNT"] = True
        self.compiled = self.core.compile_model(model, device, self.config)
        # One synchronous request per calling thread: a labeler may run `predict` from
        # several threads at once, one per stream (`streams`).
        self._local = threading.local()
        self._sync_request = self._thread_request()
        n_req = num_requests or max(2, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = ov.AsyncInferQueue(self.compiled, n_req)
        self._queue.set_callback(self._on_done)
        self._done: list[tuple[Any, np.ndarray]] = []
        self.metadata.precision = self.precision
        log.info("OpenVINO %s on %s: %s graph, precision %s, batch %d, %d request(s), config %s",
                 self.path.name, device, self.graph, self.precision, batch_size, n_req, self.config)
        if self.graph != "convtranspose" and self.path.suffix.lower() == ".xml":
            log.warning("%s holds ONNX Runtime's sub-pixel graph; re-export the IR from the "
                        "checkpoint (posemum export CKPT --format openvino) to run OpenVINO's "
                        "faster ConvTranspose graph", self.path)

    @staticmethod
    def is_available(path: str | Path | None = None) -> tuple[bool, str]:
        """(usable, why not): OpenVINO importable and, for an IR, its .bin beside the .xml."""
        try:
            require_openvino()
        except BackendUnavailableError as e:
            return False, str(e)
        if path is not None and Path(path).suffix.lower() == ".xml" \
                and not Path(path).with_suffix(".bin").is_file():
            return False, f"{Path(path).with_suffix('.bin')} (the IR weights) is missing"
        return True, ""

    @property
    def num_requests(self) -> int:
        return len(self._queue)

    @property
    def streams(self) -> int:
        """Streams the CPU plugin compiled (each runs one request at a time)."""
        return int(self.compiled.get_property("NUM_STREAMS"))

    def _thread_request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def executed_layers(self) -> list[tuple[str, str, str]]:
        """(name, layer type, runtime precision) of each layer the CPU plugin runs after
        its fusions: shows whether deconvolutions really run in int8 or bf16."""
        return [(op.get_friendly_name(), str(op.get_rt_info()["layerType"].astype(str)),
                 str(op.get_rt_info()["runtimePrecision"].astype(str)))
                for op in self.compiled.get_runtime_model().get_ops()]

    def layer_profile(self) -> list[dict[str, Any]]:
        """Where the last synchronous `predict` call spent its time, per executed layer
        type and precision (needs `perf_counts=True`), slowest first: says what keeps a
        backend under its arithmetic's peak."""
        totals: dict[tuple[str, str], list[float]] = {}
        for info in self._sync_request.profiling_info:
            key = (info.node_type, info.exec_type)
            entry = totals.setdefault(key, [0.0, 0])
            entry[0] += info.real_time.total_seconds()
            entry[1] += 1
        rows = [{"layer": k[0], "kernel": k[1], "seconds": v[0], "count": v[1]}
                for k, v in totals.items()]
        return sorted(rows, key=lambda r: -r["seconds"])

    def _check_input(self, model: Any) -> None:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ArtifactError(f"{self.path}: expected one input and one output (crops → "
                                "heatmaps); re-export with `posemum export`")
        shape = model.inputs[0].get_partial_shape()
        h, w = self.metadata.input_hw
        if shape.rank.get_length() != 4 or any(
                d.is_static and d.get_length() != v for d, v in zip(list(shape)[1:], (3, h, w), strict=True)):
            raise ArtifactError(f"{self.path}: input shape {shape} does not match the sidecar's "
                                f"[N, 3, {h}, {w}]; the model.json belongs to another export")

    def _check_cpu_supports(self, device: str) -> None:
        check_supported(self.precision, self.core.get_property(device, "OPTIMIZATION_CAPABILITIES"),
                        device)

    def _pad(self, batch: np.ndarray) -> tuple[np.ndarray, int]:
        """Pad a batch of ≤ batch_size crops to the compiled shape; returns (padded, n)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = len(batch)
        if n > self.batch_size:
            raise ConfigError(f"batch of {n} exceeds the compiled batch size {self.batch_size}")
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n, *batch.shape[1:]), np.float32)
            batch = np.concatenate([batch, pad])
        return batch, n

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] → float32 heatmaps [N, K, h, w] (any N; chunks and pads)."""
        outs = []
        for start in range(0, max(len(batch), 1), self.batch_size):
            chunk, n = self._pad(batch[start:start + self.batch_size])
            request = self._sync_request = self._thread_request()  # the last one, for profiles
            request.infer({0: chunk})
            outs.append(request.get_output_tensor(0).data[:n].copy())
        return np.concatenate(outs)

    def _on_done(self, request: Any, userdata: tuple[int, Any, Callback | None]) -> None:
        """Runs on an OpenVINO thread: copy the output before the request is reused."""
        n, user, callback = userdata
        heatmaps = request.get_output_tensor(0).data[:n].copy()
        if callback is not None:
            callback(heatmaps, user)
        else:
            self._done.append((user, heatmaps))

    def predict_async(self, batch: np.ndarray, userdata: Any = None,
                      callback: Callback | None = None) -> None:
        """Start one batch (≤ batch_size) and return at once; blocks only when all requests
        are busy. `callback(heatmaps, userdata)` runs on an OpenVINO thread; without one,
        results are kept for `wait_all()`."""
        padded, n = self._pad(batch)
        self._queue.start_async({0: padded}, (n, userdata, callback))

    def wait_all(self) -> list[tuple[Any, np.ndarray]]:
        """Wait for every started batch; (userdata, heatmaps) of callback-less ones, in
        completion order, and forget them."""
        self._queue.wait_all()
        done, self._done = self._done, []
        return done

    def predict_iter(self, pairs: Iterable[tuple[np.ndarray, Any]]) -> Iterator[tuple[Any, np.ndarray]]:
        """(batch, userdata) pairs in → (userdata, heatmaps) out, in input order, while the
        next batches are already running (the caller's generator prepares more meanwhile)."""
        results: dict[int, np.ndarray] = {}
        pending: deque[tuple[int, Any]] = deque()

        def store(heatmaps: np.ndarray, seq: int) -> None:
            results[seq] = heatmaps

        for seq, (batch, user) in enumerate(pairs):
            pending.append((seq, user))
            self.predict_async(batch, seq, store)
            while pending and pending[0][0] in results:
                s, u = pending.popleft()
                yield u, results.pop(s)
        self._queue.wait_all()
        while pending:
            s, u = pending.popleft()
            yield u, results.pop(s)


def compile_config(precision: str, threads: int | None, streams: int | None) -> dict[str, Any]:
    """CPU plugin properties: explicit precision hint (an INT8 model's unquantised ops run
    f32), an explicit thread count (None: the CPUs this process may use, not every core
    of the host), NUM_STREAMS when given, else the LATENCY hint (one stream)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": FLOAT_HINTS.get(precision, "f32")}
    threads = usable_cpus() if threads is None else threads
    if threads < 1:
        raise ConfigError(f"threads must be ≥ 1, got {threads}")
    config["INFERENCE_NUM_THREADS"] = int(threads)
    if streams is not None:
        if streams < 1:
            raise ConfigError(f"streams must be ≥ 1, got {streams}")
        config["NUM_STREAMS"] = int(streams)
    else:
        config["PERFORMANCE_HINT"] = "LATENCY"
    return config


def load_sidecar(path: Path) -> ModelMetadata:
    """The model.json beside an exported artifact, or an error saying to re-export.

    A sidecar that records a sha256 must match the file: an IR and an ONNX of the same
    stem share `NAME.json`, and running one with the other's metadata must not pass."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ArtifactError(f"{path}: no {side.name} beside it; re-export with `posemum export "
                            "--format openvino` (or onnx) so the sidecar is written")
    meta = ModelMetadata.load(side)
    if meta.artifact_sha256 and meta.artifact_sha256 != sha256_file(path):
        raise ArtifactError(f"{side} does not describe {path} (sha256 differs); re-export "
                            "with `posemum export` into its own folder")
    return meta


def _read_model(core: Any, path: Path) -> Any:
    """ov.Model from .onnx or .xml, with a file-naming error for anything else."""
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    if path.suffix.lower() not in (".onnx", ".xml"):
        raise ArtifactError(f"{path}: OpenVINO reads .onnx or .xml (IR); export with "
                            "`posemum export --format openvino`")
    try:
        return core.read_model(str(path))
    except RuntimeError as e:
        raise ArtifactError(f"{path}: OpenVINO cannot read it ({str(e).splitlines()[0][:200]}); "
                            "re-export the model") from e

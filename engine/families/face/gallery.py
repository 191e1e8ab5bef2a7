"""The face gallery of 1:N identification: enrolled embeddings, the person each belongs to, one faiss index.

A gallery is one folder holding one file, ``gallery.npz``: the vectors (float32, L2-normalised, so inner product
is cosine similarity), the person of each vector, the index kind, and for an approximate index its serialized
graph. The person ids are the bank's customer ids, kept as given: identification must answer with them, and the
folder is personal data like a model version's ``customers.parquet`` (created 0700, the file 0600). The audit
log never sees them: callers record decisions under :meth:`engine.security.trail.Trail.subject` pseudonyms.

**The index.** Up to :data:`EXACT_LIMIT` vectors faiss scans them all (exact, nothing to build, a removal is a
slice); above it, an HNSW graph over inner product (``IndexHNSWFlat``, M=32, ``efSearch`` 128) answers instead.
What decided the limit: on 100,000 generated 128-dimension embeddings (five per person) on two shared cores, the
exact scan's p99 was already 7 ms of the 10 ms allowed, the graph's 4.5 ms with the same recall of the planted
person (``python -m bench.gallery``); the scan grows with the gallery, the graph barely. IVF was dropped: it
needs training on the gallery and found the person less often at the same speed. HNSW cannot remove a vector, so
a removal builds the graph again (~25 s at 100,000); an enrolment adds to it. The kind in use is stored in the
file; a gallery crossing the limit either way switches at its next save. On a GPU (:mod:`engine.device`) every
search is an exact scan there, whatever the size.

**Saving.** The file is written beside itself (``.gallery.npz.<random>.tmp``), flushed to disk, renamed into
place and the folder flushed: a crash at any point leaves the previous gallery whole and readable. Writers take
turns under a lock on the folder (:meth:`Gallery.editing`); a temporary file left by a crash is deleted by the
next writer (it may hold an erased person's vectors).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.device import Device, faiss_gpu_knn
from engine.errors import DataFileError, InvalidInputError, NotFoundError
from engine.serving.repository import fsync_dir

__all__ = [
    "EXACT_LIMIT",
    "FILE",
    "FORMAT",
    "Gallery",
    "IndexKind",
    "default_gallery",
    "person_id",
]

IndexKind = Literal["exact", "hnsw"]

#: The file's layout; a gallery written with another number is refused, never misread.
FORMAT = 1
FILE = "gallery.npz"
_LOCK = ".lock"
#: Above this many vectors the gallery searches an HNSW graph instead of scanning every vector.
EXACT_LIMIT = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
#: The longest person id kept (a customer id, not a document).
MAX_ID = 128


def default_gallery() -> Path:
    """The gallery ``finscore face`` and ``finscore forget`` use without ``--gallery``: ``gallery/`` in
    ``FINSCORE_HOME``."""
    from engine.security.trail import finscore_home

    return finscore_home() / "gallery"


def person_id(person: object) -> str:
    """``person`` stripped, or one sentence why it names nobody."""
    if not isinstance(person, str) or not person.strip():
        msg = "the person id is empty: give the customer id the face belongs to"
        raise InvalidInputError(msg)
    text = person.strip()
    if len(text) > MAX_ID:
        msg = f"the person id has {len(text)} characters, more than the {MAX_ID} a gallery keeps"
        raise InvalidInputError(msg)
    return text


class Gallery:
    """Enrolled face embeddings of ``dim`` dimensions; ``len()`` counts vectors, :attr:`persons` people.

    Build one with :meth:`load` (a saved folder), :meth:`editing` (load or start one, save on exit) or the
    constructor (empty, in memory)."""

    def __init__(self, dim: int, *, device: Device = "cpu", exact_limit: int = EXACT_LIMIT) -> None:
        if dim < 1:
            msg = f"a gallery's dimension must be at least 1, got {dim}"
            raise InvalidInputError(msg)
        self.dim = dim
        self.device: Device = device
        self.exact_limit = exact_limit
        #: Bumped by every save: the audit lines name the state of the gallery that answered.
        self.generation = 0
        self._vectors = np.empty((0, dim), np.float32)
        self._owner = np.empty(0, np.int64)
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self._hnsw: Any = None
        self._knn: Any = None
        self._changed = False

    def __len__(self) -> int:
        return len(self._owner)

    @property
    def persons(self) -> int:
        """How many people have at least one vector."""
        return len(np.unique(self._owner))

    @property
    def index_kind(self) -> IndexKind:
        """``exact`` or ``hnsw``: what the next search (and the next save) uses."""
        return "hnsw" if len(self) > self.exact_limit else "exact"

    def vectors_of(self, person: str) -> int:
        """How many vectors ``person`` has enrolled."""
        row = self._row_of.get(person.strip())
        return 0 if row is None else int(np.count_nonzero(self._owner == row))

    # -- input --------------------------------------------------------------------------------------------------

    def _checked(self, vectors: object, *, field: str) -> np.ndarray:
        """``vectors`` as a C-contiguous float32 ``[n, dim]`` array of unit rows, or one sentence why not."""
        try:
            x = np.array(vectors, dtype=np.float32, ndmin=2)
        except (TypeError, ValueError):
            msg = f"{field} must be numbers, an array of {self.dim}-dimension embeddings"
            raise InvalidInputError(msg) from None
        if x.ndim != 2 or x.shape[1] != self.dim:
            got = x.shape[-1] if x.ndim == 2 else f"shape {x.shape}"
            msg = f"{field} has {got} dimensions; this gallery holds {self.dim}-dimension embeddings"
            raise InvalidInputError(msg)
        if not len(x):
            msg = f"{field} holds no embedding"
            raise InvalidInputError(msg)
        if not np.isfinite(x).all():
            msg = f"{field} has NaN or infinite components"
            raise InvalidInputError(msg)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            msg = f"{field} has an all-zero embedding, which matches no face"
            raise InvalidInputError(msg)
        return np.ascontiguousarray(x / norms, dtype=np.float32)

    # -- changes ------------------------------------------------------------------------------------------------

    def enroll(self, person: str, vectors: object) -> int:
        """Add ``vectors`` ([n, dim] or one [dim]) as ``person``'s; returns how many the person has now."""
        pid = person_id(person)
        x = self._checked(vectors, field="the embedding")
        self._add([pid] * len(x), x)
        return self.vectors_of(pid)

    def enroll_many(self, persons: Sequence[str], vectors: object) -> None:
        """Add ``vectors`` [n, dim], the ``i``-th as ``persons[i]``'s, in one step (a migration, a benchmark):
        all of them or, on a bad id or vector, none."""
        pids = [person_id(p) for p in persons]
        x = self._checked(vectors, field="the embeddings")
        if len(pids) != len(x):
            msg = f"the embeddings are {len(x)} but the person ids {len(pids)}: give one id per embedding"
            raise InvalidInputError(msg)
        self._add(pids, x)

    def _add(self, pids: Sequence[str], x: np.ndarray) -> None:
        rows = np.empty(len(pids), np.int64)
        for i, pid in enumerate(pids):
            row = self._row_of.get(pid)
            if row is None:
                row = self._row_of[pid] = len(self._ids)
                self._ids.append(pid)
            rows[i] = row
        self._vectors = np.concatenate([self._vectors, x])
        self._owner = np.concatenate([self._owner, rows])
        if self._hnsw is not None and self.index_kind == "hnsw":
            self._hnsw.add(x)  # rows are positions: the new ones follow the old in both
        else:
            self._hnsw = None
        self._changed = True

    def build(self) -> None:
        """Build the HNSW graph now rather than at the first search (nothing to build for an exact search)."""
        if self.index_kind == "hnsw" and self.device == "cpu":
            self._index()

    def remove(self, person: str) -> int:
        """Remove every vector of ``person``; returns how many there were (0: not enrolled)."""
        row = self._row_of.pop(person.strip(), None) if isinstance(person, str) else None
        if row is None:
            return 0
        keep = self._owner != row
        removed = len(keep) - int(keep.sum())
        self._vectors = np.ascontiguousarray(self._vectors[keep])
        self._owner = self._owner[keep]
        self._ids[row] = ""  # rows of the others stay valid; save() compacts
        self._hnsw = None  # HNSW cannot remove a vector: built again when next needed
        self._changed = True
        return removed

    # -- search -------------------------------------------------------------------------------------------------

    def _index(self) -> Any:
        import faiss

        if self._hnsw is None:
            index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.add(self._vectors)
            self._hnsw = index
        return self._hnsw

    def _search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best vectors for ``query`` [1, dim], best first: (scores, rows), rows -1 past the end."""
        if self.device == "gpu":
            if self._knn is None:
                self._knn = faiss_gpu_knn()
            scores, rows = self._knn(query, self._vectors, k)
            return np.asarray(scores), np.asarray(rows)
        import faiss

        index = self._index() if self.index_kind == "hnsw" else None
        # One query is too small to share among OpenMP threads: on a busy machine they wait for each other (an
        # exact scan of 20,000 faces: a median 16 ms on two threads, 0.4 ms on one).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            if index is None:
                scores, rows = faiss.knn(query, self._vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
            else:
                index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
                scores, rows = index.search(query, k)
        finally:
            faiss.omp_set_num_threads(threads)
        return scores[0], rows[0]

    def identify(self, vector: object, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` people most like ``vector``, each with the best cosine of their vectors, best first."""
        if k < 1:
            msg = f"k must be at least 1, got {k}"
            raise InvalidInputError(msg)
        query = self._checked(vector, field="the query embedding")
        if len(query) != 1:
            msg = f"the query embedding must be one face, got {len(query)}"
            raise InvalidInputError(msg)
        n = len(self)
        if not n:
            return []
        wanted = min(n, max(4 * k, 32))  # a person has several vectors: look further than k
        while True:
            scores, rows = self._search(query, wanted)
            best: dict[int, float] = {}
            for score, r in zip(scores.tolist(), rows.tolist(), strict=True):
                if r >= 0:
                    owner = int(self._owner[r])
                    best.setdefault(owner, float(score))  # best first: the first seen is the person's best
            if len(best) >= k or wanted >= n:
                break
            wanted = min(n, wanted * 4)
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        return [(self._ids[owner], score) for owner, score in ranked]

    # -- files --------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path, *, device: Device = "cpu", exact_limit: int = EXACT_LIMIT) -> Gallery:
        """The gallery saved in ``folder``; a missing folder or file is :class:`NotFoundError`."""
        folder = Path(folder)
        path = folder / FILE
        if not folder.is_dir():
            msg = (
                f"gallery folder {folder} does not exist: enrol a face first (finscore face enroll), or check --gallery"
            )
            raise NotFoundError(msg)
        if not path.is_file():
            msg = f"gallery folder {folder} holds no gallery ({FILE}): enrol a face first (finscore face enroll)"
            raise NotFoundError(msg)
        try:
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as z:  # fh: closed on a bad file too
                meta = json.loads(str(z["meta"]))
                vectors, owner, ids = z["vectors"], z["owner"], z["ids"].tolist()
                graph = z["hnsw"] if "hnsw" in z.files else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            msg = f"{path}: the gallery file cannot be read ({type(exc).__name__}); restore it from a backup"
            raise DataFileError(msg) from None
        if meta.get("format") != FORMAT:
            msg = f"{path}: gallery format {meta.get('format')!r}, this finscore reads format {FORMAT}"
            raise DataFileError(msg)
        gallery = cls(int(meta["dim"]), device=device, exact_limit=exact_limit)
        if vectors.shape != (len(owner), gallery.dim) or (len(owner) and int(owner.max()) >= len(ids)):
            msg = f"{path}: the gallery's vectors, owners and ids disagree; restore it from a backup"
            raise DataFileError(msg)
        gallery.generation = int(meta["generation"])
        gallery._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        gallery._owner = owner.astype(np.int64)
        gallery._ids = [str(i) for i in ids]
        gallery._row_of = {pid: row for row, pid in enumerate(gallery._ids)}
        if graph is not None and gallery.index_kind == "hnsw":
            import faiss

            index = faiss.deserialize_index(graph)
            if index.ntotal == len(gallery) and index.d == gallery.dim:  # else built again from the vectors
                gallery._hnsw = index
        return gallery

    def save(self, folder: str | Path) -> Path:
        """Write the gallery to ``folder`` (created 0700) atomically; returns the file. Call it under
        :meth:`editing`'s lock when other writers may run."""
        folder = Path(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._compact()
        arrays: dict[str, np.ndarray] = {
            "vectors": self._vectors,
            "owner": self._owner,
            "ids": np.array(self._ids, dtype=str) if self._ids else np.empty(0, dtype="<U1"),
        }
        kind = self.index_kind
        if kind == "hnsw":
            import faiss

            arrays["hnsw"] = faiss.serialize_index(self._index())
        meta = {"format": FORMAT, "dim": self.dim, "index": kind, "generation": self.generation + 1}
        arrays["meta"] = np.array(json.dumps(meta))
        path = folder / FILE
        tmp = folder / f".{FILE}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(folder)
        self.generation += 1
        self._changed = False
        return path

    def _compact(self) -> None:
        """Drop the ids of removed people and renumber the owners."""
        if "" not in self._ids:
            return
        used = np.unique(self._owner)
        renumber = np.full(len(self._ids), -1, np.int64)
        renumber[used] = np.arange(len(used))
        self._owner = renumber[self._owner]
        self._ids = [self._ids[r] for r in used.tolist()]
        self._row_of = {pid: row for row, pid in enumerate(self._ids)}

    @classmethod
    @contextmanager
    def editing(
        cls, folder: str | Path, *, dim: int | None = None, create: bool = True, device: Device = "cpu"
    ) -> Iterator[Gallery]:
        """The gallery in ``folder`` (a new one of ``dim`` dimensions if none and ``create``), saved when the
        block ends without an error and changed it; other writers wait. Temporary files of a crashed save are
        deleted first."""
        folder = Path(folder)
        if create:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not folder.is_dir():
            msg = f"gallery folder {folder} does not exist"
            raise NotFoundError(msg)
        fd = os.open(folder / _LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by os.close
            for stale in folder.glob(f".{FILE}.*.tmp"):
                stale.unlink(missing_ok=True)
            if (folder / FILE).is_file() or not create or dim is None:
                gallery = cls.load(folder, device=device)
            else:
                gallery = cls(dim, device=device)
            yield gallery
            if gallery._changed:
                gallery.save(folder)
        finally:
            os.close(fd)

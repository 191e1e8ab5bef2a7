"""The recommender's erasure store: a customer's rows in every trained version, and a running server's memory.

Each version folder ``<repo>/recommender/<N>/`` keeps one row per customer, in the same order, in three files:
``customers.parquet`` (the id and the profile), ``users.npy`` (the ALS factors) and ``held.npz`` (the products
held). :func:`forget_customers` removes the customer's row from the three, then has a server that has the model
loaded load it again.

**The order of the files.** The scorer finds a customer's factors and holdings by the customer's row in
``customers.parquet`` and does not check that the three files agree, so a version with one file rewritten and
another not would load and answer for a customer with the next one's factors. Hence, in each version:

1. the three files are written beside themselves (``.<name>.erasing``) and flushed to disk;
2. ``customers.parquet`` is deleted: from here on the version refuses to load, with a sentence, instead of
   loading rows that do not match (and the ids and profiles go first);
3. ``users.npy`` and ``held.npz`` are renamed into place, then ``customers.parquet``: that last rename is the
   commit.

(A load already under way through steps 2 and 3, having read ``users.npy`` before and ``customers.parquet``
after, could still pair old rows with new: only the scorer can close that, by checking that the three agree.)

An erasure cut short after step 2 is finished by the next ``finscore forget`` (it renames the written files in
before it looks for anyone); one cut short before is started again (the written files are deleted). A version
from which nobody is removed is not rewritten. Two ``finscore forget`` at once take turns (a lock on the
model's folder), so neither writes back a row the other removed.

**The server.** It reads the files once, when the model loads, and writes nothing back (unlike the fraud
model), so the files are erased first and then a loaded ``recommender`` is loaded again through Triton's
repository API. A server that has not loaded it is left so: its next load reads the erased files. No server at
``ctx.url`` is not an error, as for the fraud store, but the line says what it means.

**What is not erased, and why.**

- The ALS item factors and the products' popularity (in ``products.faiss``), the content model's affinity
  table (in ``recommender.json``) and the held-out figures (``metrics.json``) are aggregates over every
  customer: no customer's factors, profile or holdings can be read back from them, and taking one customer's
  share out of them means training again.
- The training files (holdings, customers) are the user's, given to ``finscore train recommender`` by name:
  finscore does not know where they are kept. Erase there, then train again for a version with no trace.
- A version still being written (a training running, or one that stopped half-way) is reported as not erased:
  let it finish, or delete its folder, then run forget again.
"""

from __future__ import annotations

import fcntl
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.errors import FinscoreError, ServerUnavailableError
from engine.families.recommender.scorer import CUSTOMERS_FILE, SEEN_FILE, USERS_FILE
from engine.security.erasure import Erased, ErasureContext, erasure_store
from engine.serving.repository import ModelRepository, fsync_dir

__all__ = ["FILES", "forget_customers"]

STORE = MODEL = "recommender"
#: The files that keep a row per customer, in the order they are renamed into place: ``customers.parquet``
#: last, as the commit.
FILES = (USERS_FILE, SEEN_FILE, CUSTOMERS_FILE)


def _none(n: int) -> tuple[int, ...]:
    return (0,) * n


def _staged(path: Path) -> Path:
    return path.with_name(f".{path.name}.erasing")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by os.close
        yield
    finally:
        os.close(fd)


def _recover(d: Path) -> bool:
    """Finish an erasure of ``d`` cut short after its commit began, or drop one cut short before; True when one
    was finished."""
    customers = d / CUSTOMERS_FILE
    if customers.exists() or not _staged(customers).exists():
        for name in FILES:
            _staged(d / name).unlink(missing_ok=True)
        return False
    for name in FILES:
        if _staged(d / name).exists():  # the ones renamed before the cut are not staged any more
            _staged(d / name).replace(d / name)
    fsync_dir(d)
    return True


def _write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    # On disk before anything is renamed: the audit log records the erasure as done once the stores return.
    with _staged(path).open("wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite(d: Path, customers: pl.DataFrame, users: np.ndarray, held: sp.csr_matrix, keep: np.ndarray) -> None:
    """The three files of ``d`` with only the rows ``keep``, in the order of the module's docstring."""
    rows = np.flatnonzero(keep)
    _write(d / USERS_FILE, lambda fh: np.save(fh, users[rows]))
    _write(d / SEEN_FILE, lambda fh: sp.save_npz(fh, held[rows]))
    _write(d / CUSTOMERS_FILE, lambda fh: customers.filter(pl.Series(keep)).write_parquet(fh))
    (d / CUSTOMERS_FILE).unlink()
    for name in FILES:
        _staged(d / name).replace(d / name)
    fsync_dir(d)


def _version(d: Path, subjects: Sequence[str]) -> Erased:
    """Remove ``subjects``' rows from the version folder ``d``."""
    n, place = len(subjects), str(d)
    try:
        finished = _recover(d)
        present = [name for name in FILES if (d / name).is_file()]
        if not present:
            return Erased(STORE, place, _none(n), "holds no customer files (written by an older finscore)")
        if len(present) < len(FILES):
            missing = ", ".join(name for name in FILES if name not in present)
            note = f"not erased: {missing} is missing, so its rows cannot be matched; delete the version or retrain"
            return Erased(STORE, place, _none(n), note, complete=False)
        customers = pl.read_parquet(d / CUSTOMERS_FILE)
        users = np.load(d / USERS_FILE)
        held = sp.load_npz(d / SEEN_FILE).tocsr()
        if not customers.height == len(users) == held.shape[0]:
            note = (
                f"not erased: its files disagree ({customers.height} customers, {len(users)} factor rows, "
                f"{held.shape[0]} holding rows), so their rows cannot be matched; retrain"
            )
            return Erased(STORE, place, _none(n), note, complete=False)
        ids = customers["customer_id"].cast(pl.Utf8)
        drop = ids.is_in(list(subjects)).fill_null(False).to_numpy()
        found = Counter(ids.filter(pl.Series(drop)).to_list())
        if drop.any():
            _rewrite(d, customers, users, held, ~drop)
    except OSError as exc:
        note = f"not rewritten ({exc.strerror or type(exc).__name__}): run forget again"
        return Erased(STORE, place, _none(n), note, complete=False)
    except (ValueError, pl.exceptions.PolarsError) as exc:
        note = f"not erased: a customer file cannot be read ({type(exc).__name__}); retrain or delete the version"
        return Erased(STORE, place, _none(n), note, complete=False)
    note = "an erasure cut short earlier was finished first" if finished else ""
    return Erased(STORE, place, tuple(found.get(s, 0) for s in subjects), note)


def _server(subjects: Sequence[str], url: str, tls: Any, erased: Mapping[str, Erased]) -> Erased:
    """Have the server at ``url`` load the recommender again from the erased files, if it has it loaded; its
    counts are those of the versions it serves (``erased`` by version number)."""
    from clients.recommender import RecommenderClient

    n, place = len(subjects), f"server {url}"
    client = RecommenderClient(url, tls=tls)
    try:
        served = client.reload()
    except ServerUnavailableError:
        note = (
            f"no server at {url}: a server running elsewhere on this repository keeps the customers in memory "
            "until it loads the recommender again: run forget with its --url, or restart it"
        )
        return Erased(STORE, place, _none(n), note)
    except FinscoreError as exc:
        note = f"not reloaded ({exc}): it keeps the customers in memory; restart it"
        return Erased(STORE, place, _none(n), note, complete=False)
    finally:
        client.close()
    if not served:
        note = f"the recommender is not loaded at {url}: its next load reads the erased files"
        return Erased(STORE, place, _none(n), note)
    removed = [0] * n
    for v in served:
        if v in erased:
            removed = [a + b for a, b in zip(removed, erased[v].removed, strict=True)]
    return Erased(
        STORE, place, tuple(removed), f"reloaded: it serves version {', '.join(served)} from the erased files"
    )


@erasure_store(STORE)
def forget_customers(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]:
    """Erase the customers named ``subjects`` from every recommender version, then from a running server."""
    customers = list(subjects)
    n = len(customers)
    repo = ModelRepository(ctx.repo)
    model = repo.model_dir(MODEL)
    versions = repo.versions(MODEL)
    if not versions:
        return [Erased(STORE, str(model), _none(n), "no trained recommender: no customer is kept here")]
    with _locked(model):
        erased = {str(v): _version(model / str(v), customers) for v in versions}
    results = list(erased.values())
    for d in repo.unfinished(MODEL):
        if any((d / name).exists() for name in FILES):
            note = (
                "a version still being written holds customer files: let its training finish (or delete the "
                "folder), then run forget again"
            )
            results.append(Erased(STORE, str(d), _none(n), note, complete=False))
    if ctx.url:
        results.append(_server(customers, ctx.url, ctx.tls, erased))
    return results

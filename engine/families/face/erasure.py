"""The face gallery's erasure store: ``finscore forget ID`` removes every enrolled embedding of the person.

The gallery is the default one, ``gallery/`` in ``FINSCORE_HOME``
(:func:`~engine.families.face.gallery.default_gallery`), the one ``finscore face enroll`` uses without
``--gallery``. The removal is saved as every gallery change is: under the folder's lock, written aside and
renamed into place, so the file on disk holds the person or not, never half. Temporary files a crashed save left
behind are deleted first (they may hold the person's vectors).

A gallery kept elsewhere (``--gallery DIR``) is not searched; the line says so, so that whoever erases knows to
remove the person there too (``Gallery.editing(DIR)``, then ``remove``).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import FinscoreError
from engine.families.face.gallery import FILE, Gallery, default_gallery
from engine.security.erasure import Erased, ErasureContext, erasure_store

__all__ = ["forget_faces"]

STORE = "face"


@erasure_store(STORE)
def forget_faces(subjects: Sequence[str], ctx: ErasureContext) -> list[Erased]:
    """Remove the people named ``subjects`` from the default face gallery; the counts are their embeddings."""
    n = len(subjects)
    folder = default_gallery()
    place = str(folder)
    if not (folder / FILE).is_file():
        return [Erased(STORE, place, (0,) * n, "no face gallery: no face is kept here")]
    try:
        with Gallery.editing(folder, create=False) as gallery:
            removed = tuple(gallery.remove(s) for s in subjects)
    except OSError as exc:
        note = f"not rewritten ({exc.strerror or type(exc).__name__}): run forget again"
        return [Erased(STORE, place, (0,) * n, note, complete=False)]
    except FinscoreError as exc:
        return [Erased(STORE, place, (0,) * n, f"not erased: {exc}", complete=False)]
    total = sum(removed)
    removed_text = f"{total} {'embedding' if total == 1 else 'embeddings'} removed"
    note = f"{removed_text}; galleries kept elsewhere (--gallery) are not searched"
    return [Erased(STORE, place, removed, note)]

"""The pictures of a version: ``segments.png`` (a 2-D PCA projection of a sample, coloured by segment) and
``profiles.png`` (each segment's z-scores against the whole table, the dimensions that set segments apart most).

matplotlib runs on its Agg backend: no display, and safe in a server or a CI job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["PROFILE_DIMENSIONS", "PROFILES_PNG", "SEGMENTS_PNG", "write_plots"]

SEGMENTS_PNG = "segments.png"
PROFILES_PNG = "profiles.png"
#: Dimensions shown in the profile heat map: the ones whose z-scores spread most across segments.
PROFILE_DIMENSIONS = 24


def write_plots(
    folder: Path,
    points: np.ndarray,
    positions: np.ndarray,
    labels: Sequence[str],
    z: np.ndarray,
    dimension_labels: Sequence[str],
) -> tuple[Path, Path]:
    """Write both PNGs into ``folder``. ``points``: a sample of the space with each row's segment ``positions``;
    ``labels``: a legend line per segment; ``z``: ``[segments, dimensions]`` z-scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    k = len(labels)
    colours = plt.get_cmap("tab10" if k <= 10 else "tab20")
    segments_png, profiles_png = folder / SEGMENTS_PNG, folder / PROFILES_PNG

    xy = PCA(n_components=2, random_state=0).fit_transform(points) if points.shape[1] >= 2 else np.c_[points, points]
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    for r in range(k):
        mine = positions == r
        ax.scatter(xy[mine, 0], xy[mine, 1], s=6, alpha=0.5, color=colours(r % colours.N), label=labels[r])
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.set_title(f"Customer segments: {len(points):,} customers, 2-D PCA projection")
    legend = ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, fontsize=9, markerscale=3, frameon=False
    )
    fig.savefig(segments_png, bbox_extra_artists=(legend,), bbox_inches="tight")
    plt.close(fig)

    spread = np.nan_to_num(np.abs(z)).max(0)
    shown = np.sort(np.argsort(-spread, kind="stable")[:PROFILE_DIMENSIONS])
    values = np.clip(np.nan_to_num(z[:, shown]), -3, 3)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * len(shown) + 4), 1.0 + 0.55 * k + 2.2), dpi=110)
    image = ax.imshow(values, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(shown)), [dimension_labels[i] for i in shown], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for r in range(k):
        for c in range(len(shown)):
            ink = "white" if abs(values[r, c]) > 1.5 else "black"
            ax.text(c, r, f"{values[r, c]:.1f}", ha="center", va="center", fontsize=6.5, color=ink)
    ax.set_title("Segment profiles: z-score against all customers (category values: their share's z-score)")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, label="z-score (clipped at ±2 in colour)")
    fig.savefig(profiles_png, bbox_inches="tight")
    plt.close(fig)
    return segments_png, profiles_png

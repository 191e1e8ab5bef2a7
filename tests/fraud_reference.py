"""A plain pandas reference of the transaction features, used only by the parity tests.

Row by row, with boolean masks over each card's and terminal's earlier rows: slow and obvious, so it can be
read against the definitions in ``kernels/transactions.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kernels.transactions import CARD_WINDOWS, DAY_US, HOUR_US, TERMINAL_WINDOWS, feature_names


def reference_features(tx: pd.DataFrame, *, delay_us: int) -> pd.DataFrame:
    """Features of every row of ``tx`` (canonical columns), in ``tx``'s row order."""
    tx = tx.reset_index(drop=True)
    label = tx["label"].fillna(0).to_numpy() if "label" in tx else np.zeros(len(tx))
    out = pd.DataFrame(index=tx.index, columns=feature_names(), dtype=float)
    for i, row in tx.iterrows():
        t, a = int(row["time"]), float(row["amount"])
        # A card's earlier rows: earlier in time, or the same time and earlier in arrival.
        same_card = (tx["card"] == row["card"]).to_numpy()
        earlier = same_card & ((tx["time"] < t) | ((tx["time"] == t) & (tx.index < i))).to_numpy()
        prev_t = tx["time"].to_numpy()[earlier]
        prev_a = tx["amount"].to_numpy()[earlier]
        f: dict[str, float] = {"amount": a, "hour": (t // HOUR_US) % 24, "weekday": (t // DAY_US + 3) % 7}
        for w, size in CARD_WINDOWS.items():
            inside = np.r_[prev_a[prev_t > t - size], a]
            f |= {
                f"card_count_{w}": len(inside),
                f"card_sum_{w}": inside.sum(),
                f"card_mean_{w}": inside.mean(),
                f"card_max_{w}": inside.max(),
            }
        f["seconds_since_previous"] = (t - prev_t.max()) / 1e6 if len(prev_t) else np.nan
        f["amount_zscore"] = (
            (a - prev_a.mean()) / prev_a.std(ddof=1) if len(prev_a) >= 2 and prev_a.std() > 0 else np.nan
        )
        at_terminal = (tx["terminal"] == row["terminal"]).to_numpy()
        for w, size in TERMINAL_WINDOWS.items():
            when = tx["time"].to_numpy()
            inside = at_terminal & (when > t - delay_us - size) & (when <= t - delay_us)
            count = int(inside.sum())
            f[f"terminal_count_{w}"] = count
            f[f"terminal_risk_{w}"] = label[inside].sum() / count if count else 0.0
        out.loc[i] = pd.Series(f)
    return out

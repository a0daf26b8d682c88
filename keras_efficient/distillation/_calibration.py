"""Calibration bins and the reliability figure of `TeacherAccuracy`
(private)."""

import numpy as np


def calibration_bins(confidence, correct, estimated, num_bins):
    """Equal-width bins of `confidence`: `(bins, ece, ece_estimator)`.

    Each bin is a dict of its edges `lo` / `hi`, its `count` and the means
    of `confidence`, `correct` (as `accuracy`) and `estimated` over it
    (None when empty); the two ECEs weight each bin by its share.
    """
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, num_bins - 1)
    bins, ece, ece_est = [], 0.0, 0.0
    for b in range(num_bins):
        sel = which == b
        count = int(sel.sum())
        row = {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": count,
            "confidence": None,
            "accuracy": None,
            "estimated": None,
        }
        if count:
            row["confidence"] = float(confidence[sel].mean())
            row["accuracy"] = float(correct[sel].mean())
            row["estimated"] = float(estimated[sel].mean())
            w = count / len(confidence)
            ece += w * abs(row["confidence"] - row["accuracy"])
            ece_est += w * abs(row["estimated"] - row["accuracy"])
        bins.append(row)
    return bins, float(ece), float(ece_est)


def reliability_figure(bins, ece, knots=None):
    """Accuracy against confidence per bin, and the fitted map `knots`.

    A `matplotlib.figure.Figure`, not pyplot: the user's matplotlib
    backend stays as it is.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover
        raise ImportError("`TeacherAccuracy.plot` needs matplotlib.") from e
    rows = [r for r in bins if r["count"]]
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    ax.plot(
        [r["confidence"] for r in rows],
        [r["accuracy"] for r in rows],
        "o-",
        label=f"teacher (ECE {ece:.3f})",
    )
    if knots is not None:
        m = np.linspace(0, 1, 101)
        ax.plot(m, np.interp(m, *knots), "-", label="alpha(margin)")
    ax.set_xlabel("confidence / margin")
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    return fig

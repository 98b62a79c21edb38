"""Report figures: a precision-at-k curve and a contact sheet of queries with their top matches."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402


def precision_plot(precision_at_k: list[float], title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 3.5), dpi=100)
    ks = list(range(1, len(precision_at_k) + 1))
    axis.plot(ks, precision_at_k, marker="o")
    axis.set_xlabel("k")
    axis.set_ylabel("precision at k")
    axis.set_ylim(0, 1.02)
    axis.set_xticks(ks)
    axis.grid(alpha=0.3)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _thumbnail(path: Path, size: int = 160) -> Image.Image:
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            image.thumbnail((size, size))
            return image
    except OSError:
        return Image.new("RGB", (size, size), "gray")


def contact_sheet(rows: list[tuple[Path, str, list[tuple[Path, str]]]], path: Path) -> None:
    """One row per query: the query photo, then its matches titled with the name (green: right, red: wrong)."""
    if not rows:
        rows = []
    columns = 1 + max((len(matches) for _, _, matches in rows), default=0)
    figure, axes = plt.subplots(
        max(1, len(rows)),
        max(1, columns),
        figsize=(1.9 * max(1, columns), 2.1 * max(1, len(rows))),
        dpi=90,
        squeeze=False,
    )
    for axis in axes.flat:
        axis.axis("off")
    for r, (query, person, matches) in enumerate(rows):
        axes[r][0].imshow(_thumbnail(query))
        axes[r][0].set_title(f"query: {person}", fontsize=8, fontweight="bold")
        for c, (match_path, name) in enumerate(matches, start=1):
            axes[r][c].imshow(_thumbnail(match_path))
            axes[r][c].set_title(f"#{c} {name}", fontsize=8, color="green" if name == person else "red")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def open_set_plot(curve: list[dict], default: dict, title: str, path: Path) -> None:
    """FPIR and FNIR against the threshold, the default threshold marked."""
    figure, axis = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    thresholds = [point["threshold"] for point in curve]
    axis.plot(thresholds, [point["fpir"] for point in curve], label="FPIR (strangers named)")
    axis.plot(thresholds, [point["fnir"] for point in curve], label="FNIR (enrolled not named right)")
    axis.axvline(default["threshold"], color="gray", linestyle="--", linewidth=1)
    axis.annotate(
        f"default {default['threshold']:.3f}\nFPIR {default['fpir']:.3f}, FNIR {default['fnir']:.3f}",
        xy=(default["threshold"], 0.5), fontsize=8, ha="left",
    )  # fmt: skip
    axis.set_xlabel("threshold on the identity score")
    axis.set_ylabel("rate")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

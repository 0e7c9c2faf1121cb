"""Figures: image grids, ranking strips, metric bars with confidence intervals, sweep plots.

Every figure is saved under ``figures/`` by :func:`save_figure` (PNG, modest DPI) so notebooks
can keep their committed outputs small.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: notebooks display the saved PNGs; tests never need a screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cirlib.config import figures_dir  # noqa: E402
from cirlib.data.types import Gallery, Query  # noqa: E402

HIT_COLOR = "#1a9850"
MISS_COLOR = "#d73027"


def save_figure(fig: plt.Figure, name: str, folder: Path | None = None, dpi: int = 110) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` (atomically replaced) and close it."""
    if folder is None:  # CIRLIB_FIGURES redirects smoke runs away from the committed figures/
        folder = figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    plt.close(fig)
    return path


def show(fig: plt.Figure, name: str, preview_dpi: int = 60):
    """Save ``fig`` under figures/ at full resolution and return a small JPEG preview to display
    inline, so committed notebooks stay small while figures/ keeps the real images."""
    import io

    from IPython.display import Image as IPImage

    path = save_figure(fig, name)
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im = im.convert("RGB")
        scale = preview_dpi / 110
        im = im.resize(
            (max(1, int(im.width * scale)), max(1, int(im.height * scale))), PILImage.Resampling.LANCZOS
        )
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=70)
    return IPImage(data=buffer.getvalue(), format="jpeg")


def image_grid(
    images: np.ndarray, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.4
) -> plt.Figure:
    """A grid of uint8 images with optional (wrapped) titles."""
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.35)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title("\n".join(textwrap.wrap(titles[i], 18)), fontsize=6.5)
    fig.tight_layout()
    return fig


def shade_regions(
    image: np.ndarray, missing: np.ndarray, grid: int, box: Sequence[int] | None = None
) -> np.ndarray:
    """A copy of a uint8 image with the regions flagged in ``missing`` (``[grid*grid]``, row-major)
    washed out towards white, and ``box`` (x0, y0, x1, y1 in regions) outlined: a source view's
    crop drawn on its target view."""
    out = image.astype(np.float32).copy()
    cell = image.shape[0] // grid
    for region in np.flatnonzero(missing):
        y, x = divmod(int(region), grid)
        patch = out[y * cell : (y + 1) * cell, x * cell : (x + 1) * cell]
        patch[:] = 0.35 * patch + 0.65 * 255
    if box is not None:
        x0, y0, x1, y1 = (int(v) * cell for v in box)
        color = np.array([215, 48, 39], dtype=np.float32)
        out[y0, x0:x1] = out[y1 - 1, x0:x1] = color
        out[y0:y1, x0] = out[y0:y1, x1 - 1] = color
    return out.round().astype(np.uint8)


def ranking_strips(
    queries: Sequence[Query],
    gallery: Gallery,
    rankings: Sequence[Sequence[str]],
    k: int = 5,
    size: float = 1.3,
    title: str | None = None,
) -> plt.Figure:
    """One row per query: the reference, its text, then the top-k with valid targets framed green."""
    fig, axes = plt.subplots(
        len(queries), k + 1, figsize=((k + 1) * size + 1.5, len(queries) * (size + 0.45)), squeeze=False
    )
    for row, (q, ranked) in enumerate(zip(queries, rankings, strict=True)):
        ax = axes[row, 0]
        ax.imshow(gallery.pixels([q.reference])[0], interpolation="nearest")
        ax.set_title("reference", fontsize=7)
        ax.set_ylabel(
            "\n".join(textwrap.wrap(" | ".join(q.texts), 22)),
            fontsize=6.5,
            rotation=0,
            ha="right",
            va="center",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        valid = set(q.ground_truth) | ({q.target} if q.target else set())
        for col, image_id in enumerate(ranked[:k], start=1):
            ax = axes[row, col]
            ax.imshow(gallery.pixels([image_id])[0], interpolation="nearest")
            hit = image_id in valid
            for spine in ax.spines.values():
                spine.set_edgecolor(HIT_COLOR if hit else "#bbbbbb")
                spine.set_linewidth(3 if hit else 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{col}" + (" ✓" if hit else ""), fontsize=7, color=HIT_COLOR if hit else "black")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def metric_bars(
    labels: Sequence[str],
    values: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    ylabel: str,
    title: str = "",
    colors: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Bars with asymmetric CI whiskers (values and bounds in percent)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 0.7 * len(labels) + 1), 2.8))
    else:
        fig = ax.figure
    values = np.asarray(values)
    err = np.vstack([values - np.asarray(lows), np.asarray(highs) - values])
    ax.bar(range(len(labels)), values, yerr=err, capsize=3, color=colors or "#4575b4")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def draw_layout(plan, size: int = 64) -> np.ndarray:
    """A plan's layout as a picture (uint8 ``[size, size, 3]``): each box outlined on a light canvas,
    filled with its phrase's colour word when it names one of the world's colours."""
    from PIL import Image, ImageDraw

    from cirlib.world.language import COLOR_WORDS
    from cirlib.world.render import RGB

    scale = 4
    canvas = Image.new("RGB", (size * scale, size * scale), (235, 235, 230))
    draw = ImageDraw.Draw(canvas)
    for obj in plan.objects:
        words = obj.phrase.split()
        colour = next((RGB[c] for c, names in COLOR_WORDS.items() if any(n in words for n in names)), None)
        x0, y0, x1, y1 = (v * size * scale for v in obj.box)
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(40, 40, 40), width=scale)
        draw.text(
            (x0 + scale, y0 + scale), words[-1][:6], fill=(0, 0, 0) if colour is None else (255, 255, 255)
        )
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)

"""Artefacts of a run: metrics.json, sample MP4s, a PNG contact sheet, a markdown table and a plot of
quality against chunk index (for docs/results)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from selfforcing.inference.video_io import write_mp4

HEADLINE = (
    "frechet_distance", "real_frechet_distance", "fidelity", "colour_agreement", "shape_agreement",
    "direction_agreement", "speed_agreement", "motion_agreement", "moving_fraction", "trajectory_error",
    "extrap_frechet_distance", "extrap_fidelity", "extrap_motion_agreement", "extrap_moving_fraction",
    "extrap_trajectory_error",
    "frechet_vs_ode_init_margin", "frechet_vs_ode_init_margin_std", "frechet_vs_ode_init_closer_fraction",
    "extrap_frechet_vs_ode_init_margin", "extrap_frechet_vs_ode_init_margin_std",
    "extrap_frechet_vs_ode_init_closer_fraction",
    "x0_error_t900", "frame_oracle_x0_error_t900", "oracle_x0_error_t900",
    "x0_error_t850", "frame_oracle_x0_error_t850", "oracle_x0_error_t850",
    "still_x0_moving_t850", "still_oracle_moving_t850", "still_x0_moving_t950", "still_oracle_moving_t950",
)

# Per-chunk measures of extrapolated rollouts: the plots and tables of quality against chunk index.
BY_CHUNK = ("extrap_fidelity_by_chunk", "extrap_frechet_by_chunk", "extrap_moving_fraction_by_chunk",
            "extrap_motion_agreement_by_chunk")


def display_scale(height: int, target: int = 60) -> int:
    """Integer nearest-neighbour upscale that makes toy frames about ``target`` pixels tall: a 10x10 frame is
    hard to see, and H.264's 4:2:0 chroma would smear single-pixel colours."""
    return max(1, target // height)


def upscale(videos: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [..., H, W, 3] -> [..., H f, W f, 3], each pixel repeated f x f times (exact, no blur)."""
    if factor == 1:
        return videos
    return videos.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_videos(
    videos: np.ndarray, folder: Path, stem: str, fps: int, count: int, scale: int | None = None
) -> list[Path]:
    """The first ``count`` of uint8 videos [N, T, H, W, 3] as ``folder/stem_i.mp4``, upscaled by ``scale``
    (default: ``display_scale`` of the frame height)."""
    factor = display_scale(videos.shape[-3]) if scale is None else scale
    return [
        write_mp4(upscale(videos[i], factor), folder / f"{stem}_{i}.mp4", fps)
        for i in range(min(count, len(videos)))
    ]


def contact_sheet(
    rows: Mapping[str, np.ndarray], path: Path, scale: int | None = None, max_frames: int = 36
) -> Path:
    """One labelled row of frames per entry: rows maps a label to one uint8 video [T, H, W, 3]; frames are
    upscaled by ``scale`` (default: about 48 pixels tall)."""
    label_w, pad = 110, 2
    t = min(max_frames, max(v.shape[0] for v in rows.values()))
    h, w = next(iter(rows.values())).shape[1:3]
    scale = display_scale(h, 48) if scale is None else scale
    cell_h, cell_w = h * scale + pad, w * scale + pad
    sheet = Image.new("RGB", (label_w + t * cell_w, len(rows) * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, video) in enumerate(rows.items()):
        draw.text((4, r * cell_h + cell_h // 3), label[:18], fill=(0, 0, 0))
        for i, frame in enumerate(video[:t]):
            img = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(img, (label_w + i * cell_w, r * cell_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_metrics(metrics: Mapping[str, Mapping], path: Path) -> Path:
    path.write_text(json.dumps(metrics, indent=1, sort_keys=False))
    return path


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))


def markdown_table(metrics: Mapping[str, Mapping], keys: Sequence[str] = HEADLINE) -> str:
    """Stages as columns, headline metrics as rows (only the metrics some stage has)."""
    stages = list(metrics)
    lines = ["| metric | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for k in keys:
        if any(k in metrics[s] for s in stages):
            lines.append(f"| {k} | " + " | ".join(_fmt(metrics[s].get(k)) for s in stages) + " |")
    return "\n".join(lines)


def by_chunk_table(metrics: Mapping[str, Mapping], key: str) -> str:
    """One row per stage with ``key`` (a per-chunk list)."""
    rows = {s: m[key] for s, m in metrics.items() if isinstance(m.get(key), list)}
    if not rows:
        return ""
    n = max(len(v) for v in rows.values())
    lines = [f"| {key} | " + " | ".join(f"chunk {i}" for i in range(n)) + " |", "|---" * (n + 1) + "|"]
    for s, v in rows.items():
        lines.append(f"| {s} | " + " | ".join(_fmt(x) for x in v) + " |")
    return "\n".join(lines)


def plot_by_chunk(metrics: Mapping[str, Mapping], keys: Sequence[str], path: Path, window: int | None = None) -> Path:
    """Quality against chunk index, one panel per key, one line per stage (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        for stage, m in metrics.items():
            values = m.get(key)
            if isinstance(values, list):
                ax.plot(range(len(values)), [np.nan if v is None else v for v in values], marker="o", label=stage)
        if window:
            ax.axvline(window - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("chunk index")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_summary(
    folder: Path, name: str, title: str, metrics: Mapping[str, Mapping], window_chunks: int,
    command: str = "", notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """``folder/name.md`` (headline table + per-chunk tables) and ``folder/name_by_chunk.png``: what
    docs/results quotes, written by the run itself so the published numbers have one source."""
    png = plot_by_chunk(metrics, BY_CHUNK, folder / f"{name}_by_chunk.png", window=window_chunks)
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [*notes, "", markdown_table(metrics), ""]
    for key in ("fidelity_by_chunk", "frechet_by_chunk", *BY_CHUNK):
        table = by_chunk_table(metrics, key)
        if table:
            lines += [table, ""]
    md = folder / f"{name}.md"
    md.write_text("\n".join(lines))
    return md, png

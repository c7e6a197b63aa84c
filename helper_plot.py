"""Plots and image grids of a run, drawn from the files in its run folder
(metrics.csv, events.jsonl, grids/), so any run, finished or not, can be redrawn:

    python helper_plot.py runs/mnist_gan
"""
import argparse
import shutil
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files only: works on servers with no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torchvision  # noqa: E402

from helper_files import atomic_write, read_events, read_metrics  # noqa: E402


def save_grid(images, path, nrow=8):
    """N x C x H x W in [-1, 1] -> an nrow-wide PNG grid, written at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(images, path, nrow=nrow, padding=2, normalize=True,
                                 value_range=(-1, 1))


def epoch_axis(m):
    """Fractional epochs for each batch row, so the x axis reads in epochs."""
    per_epoch = m["batch"].max()
    return m["epoch"] - 1 + m["batch"] / per_epoch


def running_mean(x, window):
    window = max(1, min(window, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    head = c[1:window] / np.arange(1, window)          # shorter windows at the start
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


def plot_losses(run_dir, m, window):
    x = epoch_axis(m)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, color, label in (("g_loss", "C0", "generator"), ("d_loss", "C1", "discriminator")):
        ax.plot(x, m[key], color=color, alpha=0.25, lw=0.6)
        ax.plot(x, running_mean(m[key], window), color=color, lw=1.5,
                label=f"{label} (running mean of {window} batches)")
    _mark_warnings(ax, run_dir, x, m)
    ax.set(xlabel="epoch", ylabel="BCE loss", title="GAN losses per batch")
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, Path(run_dir) / "loss.png")


def _mark_warnings(ax, run_dir, x, m):
    """Health-monitor warnings as red ticks on the loss plot."""
    steps = [e["step"] for e in read_events(run_dir, "warning")]
    for i, step in enumerate(steps):
        at = np.searchsorted(m["step"], step - 1)
        if at < len(x):
            ax.axvline(x[at], color="red", alpha=0.4, lw=0.8,
                       label="health warning" if i == 0 else None)


def plot_accuracy(run_dir, m, window):
    x = epoch_axis(m)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(x, running_mean(m["d_acc_real"], window), label="D accuracy on real")
    ax.plot(x, running_mean(m["d_acc_fake"], window), label="D accuracy on fake")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02),
           title=f"discriminator accuracy (running mean of {window} batches)")
    ax.legend(fontsize=8)
    _save(fig, Path(run_dir) / "accuracy.png")


def plot_progress(run_dir, max_panels=6):
    """Fixed-noise grids at evenly spaced epochs, side by side."""
    grids = sorted((Path(run_dir) / "grids").glob("epoch_*.png"))
    if not grids:
        return
    pick = sorted({round(i) for i in np.linspace(0, len(grids) - 1, min(max_panels, len(grids)))})
    side_by_side([grids[i] for i in pick], [f"epoch {int(grids[i].stem[6:])}" for i in pick],
                  Path(run_dir) / "progress.png")


def plot_eval(run_dir):
    evals = read_events(run_dir, "eval")
    keys = [k for k in (evals[0] if evals else {}) if isinstance(evals[0][k], float)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([e["epoch"] for e in evals], [e[key] for e in evals], marker="o")
        ax.set(xlabel="epoch", title=key)
    _save(fig, Path(run_dir) / "eval.png")


def side_by_side(paths, titles, out):
    fig, axes = plt.subplots(1, len(paths), figsize=(3 * len(paths), 3.3), squeeze=False)
    for ax, p, t in zip(axes[0], paths, titles):
        ax.imshow(plt.imread(p))
        ax.set_title(t, fontsize=10)
        ax.axis("off")
    _save(fig, out)


def _save(fig, path):
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:   # never leave a half-written plot
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def plot_run(run_dir, window=100):
    """Redraw every plot of a run folder from its files; returns the paths written."""
    run_dir = Path(run_dir)
    m = read_metrics(run_dir)
    if m:
        plot_losses(run_dir, m, window)
        plot_accuracy(run_dir, m, window)
    plot_progress(run_dir)
    plot_eval(run_dir)
    grids = sorted((run_dir / "grids").glob("epoch_*.png"))
    if grids:
        shutil.copyfile(grids[-1], run_dir / "final_grid.png")
        if (run_dir / "reals.png").exists():
            side_by_side([run_dir / "reals.png", grids[-1]],
                          ["real", f"generated (epoch {int(grids[-1].stem[6:])})"],
                          run_dir / "real_vs_fake.png")
    return sorted(run_dir.glob("*.png"))


def main(argv=None):
    p = argparse.ArgumentParser(description="Redraw the plots of a run folder from its files.")
    p.add_argument("run_dir", help="a run folder (holding metrics.csv)")
    run_dir = Path(p.parse_args(argv).run_dir)
    if not (run_dir / "metrics.csv").is_file():
        p.error(f"{run_dir} is not a run folder (no metrics.csv there)")
    for path in plot_run(run_dir):
        print(path)


if __name__ == "__main__":
    main()

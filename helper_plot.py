"""Plots and image grids of a run, drawn from the files in its run folder
(metrics.csv, events.jsonl, grids/), so any run, finished or not, can be
redrawn, with its progress.gif and report.html (helper_report):

    python helper_plot.py runs/mnist_gan
    python helper_plot.py compare runs/a runs/b --out runs/compare

compare refuses an --out that holds an earlier comparison unless --overwrite.
"""
import os
import shutil
import sys
import textwrap
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files only: works on servers with no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import helper_report  # noqa: E402
from helper_files import atomic_write, read_events, read_metrics  # noqa: E402


def save_grid(images, path, nrow=8, row_labels=None):
    """N x C x H x W in [-1, 1] -> an nrow-wide PNG grid, written at once.
    Images under 32 px (MNIST's 28) are doubled, pixel for pixel, so that a
    grid reads at its natural size. row_labels: names drawn left of the rows
    (a class grid's classes)."""
    grid = helper_report.grid_image(readable(images), nrow)
    save_image(helper_report.label_rows(grid, row_labels) if row_labels else Image.fromarray(grid), path)


def readable(images):
    """N x C x H x W, doubled pixel for pixel where under 32 px."""
    if images.shape[-1] < 32:
        return F.interpolate(images.float(), scale_factor=2, mode="nearest")
    return images


def save_image(image, path):
    """A PIL image as a PNG, written at once, its folder made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")


def epoch_axis(m):
    """Fractional epochs for each batch row, so the x axis reads in epochs."""
    per_epoch = m["batch"].max()
    return m["epoch"] - 1 + m["batch"] / per_epoch


def running_mean(x, window):
    window = max(1, min(window, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    head = c[1:window] / np.arange(1, window)          # shorter windows at the start
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


def smoothing(m, window):
    """The running-mean window actually used: at most a tenth of the run, so short runs still show a trend."""
    return max(1, min(window, len(m["step"]) // 10))


def plot_losses(run_dir, m, window):
    x, window = epoch_axis(m), smoothing(m, window)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, color, label in (("g_loss", "C0", "generator"), ("d_loss", "C1", "discriminator")):
        ax.plot(x, m[key], color=color, alpha=0.25, lw=0.6)
        ax.plot(x, running_mean(m[key], window), color=color, lw=1.5, label=label)
    _mark_warnings(ax, run_dir, x, m)
    ax.set(xlabel="epoch", ylabel="loss",
           title=f"GAN losses per batch (lines: running mean of {window} batches)")
    _legend_above(ax)
    _save(fig, Path(run_dir) / "loss.png")


def _legend_above(ax):
    """The legend in a row above the axes, where it covers no curve."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.07), ncol=3, fontsize=8, frameon=False)


def _mark_warnings(ax, run_dir, x, m):
    """Health-monitor warnings as red lines at the batch each one names
    (recoveries in green), so a reader can match them with the curves."""
    for kind, color in ((False, "red"), (True, "green")):
        steps = [e["step"] for e in read_events(run_dir, "warning") if e.get("ended", False) == kind]
        at = np.searchsorted(m["step"], steps)
        at = at[at < len(x)]
        for i, j in enumerate(at):
            ax.axvline(x[j], color=color, alpha=0.5, lw=0.8,
                       label=("recovery" if kind else "health warning (events.jsonl)") if i == 0 else None)


def plot_accuracy(run_dir, m, window):
    x, window = epoch_axis(m), smoothing(m, window)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(x, running_mean(m["d_acc_real"], window), label="D accuracy on real")
    ax.plot(x, running_mean(m["d_acc_fake"], window), label="D accuracy on fake")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02),
           title=f"discriminator accuracy (running mean of {window} batches; 0.5: can't tell)")
    _legend_above(ax)
    _save(fig, Path(run_dir) / "accuracy.png")


def plot_progress(run_dir, max_panels=6):
    """Fixed-noise grids at evenly spaced epochs, three to a row."""
    grids = sorted((Path(run_dir) / "grids").glob("epoch_*.png"))
    if not grids:
        return
    pick = sorted({round(i) for i in np.linspace(0, len(grids) - 1, min(max_panels, len(grids)))})
    labels = helper_report.epoch_labels(run_dir)
    side_by_side([grids[i] for i in pick], [labels[int(grids[i].stem[6:])] for i in pick],
                  Path(run_dir) / "progress.png", per_row=3)


# the scores drawn over training, when an evaluation has them
PLOTTED = ["fid", "inception_score", "min_class_share", "swd_mean", "ms_ssim", "modes", "kl",
           "inception_fid", "inception_kid_x1e3", "inception_precision", "inception_recall"]


def plot_eval(run_dir):
    """The sample-quality scores over training, one panel each (the main ones, by name)."""
    evals = read_events(run_dir, "eval")
    keys = [k for k in PLOTTED if evals and isinstance(evals[0].get(k), float)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([e["epoch"] for e in evals], [e[key] for e in evals], marker="o")
        ax.set(xlabel="epoch", title=helper_report.score_label(key))
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.title.set_fontsize(9)
    _save(fig, Path(run_dir) / "eval.png")


def side_by_side(paths, titles, out, per_row=4):
    """Images with a title each, at their own pixel size (a grid stays readable), per_row to a row."""
    images = [plt.imread(p) for p in paths]
    rows, cols = -(-len(images) // per_row), min(per_row, len(images))
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    dpi = 100
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w / dpi, rows * (h + 30) / dpi),
                             squeeze=False, dpi=dpi)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 30 / (h + 30) / rows * 0.9, wspace=0.02,
                        hspace=30 / h)
    _save(fig, out, tight=False)


def _save(fig, path, tight=True):
    if tight:
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
        with atomic_write(run_dir / "final_grid.png") as tmp:   # a full disk keeps the old one whole
            shutil.copyfile(grids[-1], tmp)
        if (run_dir / "reals.png").exists():
            side_by_side([run_dir / "reals.png", grids[-1]],
                          ["real", f"generated ({helper_report.epoch_labels(run_dir)[int(grids[-1].stem[6:])]})"],
                          run_dir / "real_vs_fake.png")
    written = sorted(run_dir.glob("*.png"))
    return written + [p for p in (helper_report.write_progress_gif(run_dir),
                                  helper_report.write_report(run_dir)) if p]


# ---------------------------------------------------------------- several runs

def _plot_curves(axes, keys, run_dirs, labels):
    """Smoothed G and D losses (axes[0], axes[1]) and eval scores (axes[2:]), one colour a run."""
    for i, (run, label) in enumerate(zip(run_dirs, labels)):
        m = read_metrics(run)
        if m:   # a running mean over half an epoch, so runs of any length read alike
            x, window = epoch_axis(m), max(1, int(m["batch"].max()) // 2)
            for ax, key in zip(axes, ("g_loss", "d_loss")):
                ax.plot(x, running_mean(m[key], window), color=f"C{i}", label=label)
        for ax, key in zip(axes[2:], keys):
            pts = [(e["epoch"], e[key]) for e in read_events(run, "eval")
                   if isinstance(e.get(key), float)]
            if pts:
                ax.plot(*zip(*pts), color=f"C{i}", marker="o", label=label)
    for ax, title in zip(axes, ["G loss", "D loss", *keys]):
        ax.set(xlabel="epoch", title=title)


def _compare_figure(run_dirs, labels, path):
    labels = [label.replace("$", r"\$") for label in labels]   # text, never mathtext
    keys = sorted({k for r in run_dirs for e in read_events(r, "eval")
                   for k, v in e.items() if isinstance(v, float)})
    width = max(9, 3.2 * max(2 + len(keys), len(run_dirs)))
    fig = plt.figure(figsize=(width, 7.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    axes = top.subplots(1, 2 + len(keys), squeeze=False)[0]
    _plot_curves(axes, keys, run_dirs, labels)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:   # above the plots: long labels would squeeze an axes
        top.legend(handles, names, loc="outside upper center", ncols=min(3, len(names)), fontsize=8)
    for i, ax in enumerate(bottom.subplots(1, len(run_dirs), squeeze=False)[0]):
        grids = helper_report.grids(run_dirs[i])
        if grids:
            ax.imshow(plt.imread(grids[-1][1]))
        last = helper_report.epoch_labels(run_dirs[i])[grids[-1][0]] if grids else "no epoch"
        ax.set_title(textwrap.fill(f"{labels[i]} ({last})", 40), fontsize=8, color=f"C{i}")
        ax.axis("off")
    _save(fig, path, tight=False)


def compare(run_dirs, out_dir, labels=None):
    """out_dir/compare.png (losses, evals and final grids of the runs overlaid) and
    out_dir/compare.html (the figure and the settings that differ). Returns both paths."""
    if not run_dirs:
        raise ValueError("compare needs at least one run folder")
    run_dirs = [helper_report.check_run(r) for r in run_dirs]
    labels = list(labels) if labels else helper_report.run_labels(
        run_dirs, [helper_report.read_config(r) for r in run_dirs])
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _compare_figure(run_dirs, labels, out_dir / "compare.png")
    return out_dir / "compare.png", helper_report.compare_page(run_dirs, out_dir, labels)


# ---------------------------------------------------------------- command line

USAGE = "usage: python helper_plot.py RUN_DIR | compare RUN_DIR [RUN_DIR...] [--out DIR] [--overwrite]"


def _split_out(args):
    """compare's arguments -> (run folders, the --out value, '' when it is missing, or None)."""
    if "--out" not in args:
        return args, None
    at = args.index("--out")
    return args[:at] + args[at + 2:], (args[at + 1:at + 2] or [""])[0]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    is_compare = argv[:1] == ["compare"]
    overwrite = is_compare and "--overwrite" in argv
    runs, out = _split_out([a for a in argv[1:] if a != "--overwrite"]) if is_compare else (argv, None)
    if "-h" in argv or "--help" in argv:
        print(USAGE + "\n\n" + __doc__.strip())
        sys.exit(0)
    if not runs or out == "" or (not is_compare and len(runs) != 1):
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    try:
        if is_compare:   # default: beside the runs, e.g. runs/a runs/b -> runs/compare
            out = out or Path(os.path.commonpath([Path(r).resolve().parent for r in runs]), "compare")
            earlier = [Path(out, f) for f in ("compare.png", "compare.html") if Path(out, f).exists()]
            if earlier and not overwrite:
                raise ValueError(f"{earlier[0]} exists: add --overwrite to replace it, or choose another --out")
            print(*compare(runs, out), sep="\n")
        else:
            print(*plot_run(helper_report.check_run(runs[0])), sep="\n")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

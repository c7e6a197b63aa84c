"""Look at a run the way people look at GANs: the fixed-noise grids as an
animated GIF, one static HTML page per run folder, and several runs side by side.
Everything is drawn from the run folder's files; helper_plot.plot_run calls
these after drawing the plots, and its command line redraws any run:

    python helper_plot.py runs/mnist_gan                  # plots, progress.gif, report.html
    python helper_plot.py compare runs/a runs/b --out runs/compare

The pages hold no JavaScript and only relative links, so they open from file://,
from a copied folder, or from any static web server.
"""
import html
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from helper_files import atomic_write, read_events

LABEL_PX = 14   # text on generate.py's pictures: a truncation row's psi, nearest.png's titles
GAP = 8         # px of white between nearest.png's samples and their nearest training images
# Settings that say where or how a run was kept, not what was trained: not worth a label.
NOT_RECIPE = {"out", "data_dir", "cache_dir", "resume", "overwrite", "num_workers", "log_every",
              "plot_every", "device", "device_used", "torch", "host"}
ENDINGS = ("interrupted", "diverged", "time_budget")
CSS = """body{font:15px/1.4 system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}
img{max-width:100%;vertical-align:top;margin:0 .5em .5em 0}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}table{margin-bottom:.8em}
.cfg td:nth-child(odd),.note{color:#666}"""


# ---------------------------------------------------------------- files

def _atomic(path, write):
    """write(tmp) through helper_files.atomic_write; returns path."""
    with atomic_write(path) as tmp:
        write(tmp)
    return Path(path)


def check_run(run_dir):
    run_dir = Path(run_dir)
    if not ((run_dir / "metrics.csv").exists() or (run_dir / "events.jsonl").exists()):
        raise ValueError(f"{run_dir} is not a run folder (no metrics.csv and no events.jsonl)")
    return run_dir


def _read(path, reader, *args):
    """reader(*args), naming the file in its error (say, a line cut short by a killed run)."""
    try:
        return reader(*args)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def read_config(run_dir):
    path = Path(run_dir) / "config.json"
    cfg = _read(path, json.loads, path.read_text()) if path.exists() else {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a JSON object of settings")
    return cfg


def _events(run_dir, kind=None):
    return _read(Path(run_dir) / "events.jsonl", read_events, run_dir, kind)


def grids(run_dir):
    """(epoch, path) of every grids/epoch_NNN.png, in epoch order."""
    found = [(int(m[1]), p) for p in Path(run_dir, "grids").glob("epoch_*.png")
             if (m := re.fullmatch(r"epoch_(\d+)\.png", p.name))]
    return sorted(found)


# ---------------------------------------------------------------- image grids

def grid_image(images, nrow=8, padding=2):
    """N x C x H x W in [-1, 1] (C = 1 or 3) -> uint8 rows x cols x 3: the
    images nrow to a row on a black background, as torchvision's make_grid +
    save_image draw them (without importing torchvision, which costs over a
    second of start-up)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).mul(255).add(0.5).clamp(0, 255)
    x = x.to(torch.uint8).expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.to(torch.uint8)
    n, _, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.zeros(3, rows * (h + padding) + padding, cols * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid.permute(1, 2, 0).numpy()


def font(px):
    return ImageFont.load_default(size=px)


def fitting_font(text, width, px):
    """The default font at px, smaller (down to 8 px) where text would be wider than width."""
    while px > 8 and font(px).getlength(text) > width:
        px -= 1
    return font(px)


def label_rows(grid, labels, px=LABEL_PX):
    """A grid (rows x cols x 3 uint8, as grid_image draws it) with a white strip on
    its left that names each of its rows, e.g. "psi 0.5"."""
    image, pad = Image.fromarray(grid), px // 2
    width = round(max(font(px).getlength(t) for t in labels)) + 2 * pad
    out = Image.new("RGB", (width + image.width, image.height), "white")
    out.paste(image, (width, 0))
    draw, row = ImageDraw.Draw(out), image.height / len(labels)
    for i, text in enumerate(labels):
        draw.text((pad, round((i + 0.5) * row)), text, fill="black", font=font(px), anchor="lm")
    return out


def title_height(px=LABEL_PX):
    return px + px // 2 + 4


def titled(image, titles, px=LABEL_PX):
    """A PIL image under a white strip of titles: (left, width, text) each, centred over its part."""
    strip = title_height(px)
    out = Image.new("RGB", (image.width, image.height + strip), "white")
    out.paste(image, (0, strip))
    draw = ImageDraw.Draw(out)
    for left, width, text in titles:
        draw.text((left + width / 2, strip / 2), text, fill="black", anchor="mm",
                  font=fitting_font(text, width - 4, px))
    return out


def beside(left, right, titles, gap=GAP, px=LABEL_PX):
    """Two grids (arrays) of one height side by side, GAP px of white between them,
    each under its title: nearest.png's samples and their nearest training images."""
    left, right = Image.fromarray(left), Image.fromarray(right)
    body = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), "white")
    body.paste(left, (0, 0))
    body.paste(right, (left.width + gap, 0))
    return titled(body, [(0, left.width, titles[0]), (left.width + gap, right.width, titles[1])], px)


def epoch_labels(run_dir):
    """{epoch: "epoch N"} for the run's epochs, or "epoch N (of B batches)" when
    --max-batches cut its epochs short (or they were not all of one length): "epoch 3"
    alone would read as three passes over the data."""
    cfg, ends = read_config(run_dir), {e["epoch"]: e["step"] for e in _events(run_dir, "epoch")
                                       if isinstance(e.get("epoch"), int) and isinstance(e.get("step"), int)}
    batches = {n: step - ends.get(n - 1, 0) for n, step in ends.items()}
    short = cfg.get("max_batches") or len(set(batches.values())) > 1
    labels = {}
    for n in {*ends, *(n for n, _ in grids(run_dir))}:
        b = batches.get(n) or cfg.get("max_batches")
        labels[n] = f"epoch {n} (of {b} batches)" if short and b else f"epoch {n}"
    return labels


# ---------------------------------------------------------------- the progress GIF

def save_gif(frames, path, seconds_per_frame=0.25, last_pause=2.0):
    """PIL images (or H x W x C uint8 arrays) as a GIF that loops forever; the last
    frame stays last_pause seconds, so the eye rests on the final samples."""
    frames = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f, np.uint8))
              for f in frames]
    if not frames:
        raise ValueError("save_gif: no frames")
    ms = [round(1000 * seconds_per_frame)] * (len(frames) - 1) + [round(1000 * last_pause)]
    return _atomic(path, lambda tmp: frames[0].save(
        tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0,
        optimize=True))


def label_px(width):
    """The GIF's label text in proportion to its frame: 20 px on a 400 px frame."""
    return max(12, round(width / 20))


def strip_height(width):
    """px of label strip above each GIF frame of this width, so the label hides no sample."""
    return round(1.5 * label_px(width))


def _labelled(path, label, size):
    """One grid scaled to size, under a white strip that names its epoch."""
    with Image.open(path) as im:
        grid = im.convert("RGB").resize(size, Image.LANCZOS)
    strip = strip_height(size[0])
    frame = Image.new("RGB", (size[0], size[1] + strip), "white")
    frame.paste(grid, (0, strip))
    ImageDraw.Draw(frame).text((strip // 4, strip / 2), label, fill="black", anchor="lm",
                               font=fitting_font(label, size[0] - strip // 2, label_px(size[0])))
    return frame


def write_progress_gif(run_dir, max_frames=40, max_side=400):
    """grids/epoch_NNN.png as run_dir/progress.gif (None when there are no grids)."""
    if max_frames < 2:
        raise ValueError("max_frames must be at least 2 (the first and the last epoch)")
    found = grids(run_dir)
    if not found:
        return None
    # Evenly spaced picks; rounding the ends of linspace keeps the first and last grid.
    picks = sorted({round(i) for i in np.linspace(0, len(found) - 1, min(max_frames, len(found)))})
    with Image.open(found[-1][1]) as im:
        w, h = im.size
    scale = min(1.0, max_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    labels = epoch_labels(run_dir)
    frames = [_labelled(found[i][1], labels[found[i][0]], size) for i in picks]
    return save_gif(frames, Path(run_dir) / "progress.gif")


# ---------------------------------------------------------------- the run report

def _esc(x):
    return html.escape(str(x), quote=True)


def _fmt(v):
    if isinstance(v, str):
        return v
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


def _tr(cells, tag="td"):
    return "<tr>" + "".join(f"<{tag}>{_esc(c)}</{tag}>" for c in cells) + "</tr>"


def _table(rows, header=(), cls=""):
    """An HTML table of escaped cells."""
    return (f'<table class="{cls}">' + (_tr(header, "th") if header else "")
            + "".join(_tr(r) for r in rows) + "</table>")


def _images(run_dir, *names):
    """<img> tags for those of the files that exist, by relative name only."""
    return "".join(f'<img src="{_esc(n)}" alt="{_esc(n)}">' for n in names
                   if (Path(run_dir) / n).exists())


def _how_it_ended(events):
    """(the ending event of the last session or {}, whether the run was resumed).
    An interrupted/diverged/time_budget event ends the run unless a new start or
    epoch follows it; one that is followed also tells a resume (for runs logged
    before "start" events existed)."""
    kinds = [e.get("event") for e in events]
    last = max((i for i, k in enumerate(kinds) if k in ("epoch", "start")), default=-1)
    end = next((e for e in reversed(events[last + 1:]) if e.get("event") in ENDINGS), {})
    resumed = (any(e.get("resumed") for e in events if e.get("event") == "start")
               or any(k in ENDINGS for k in kinds[:last]))
    return end, resumed


def _summary(cfg, events):
    """The facts of "What was run" as (name, value) rows."""
    start = next((e for e in reversed(events) if e.get("event") == "start"), {})
    epochs = [e for e in events if e.get("event") == "epoch"]
    seconds = [e["seconds"] for e in epochs if "seconds" in e]
    done = max((e.get("epoch", 0) for e in epochs), default=0)
    end, resumed = _how_it_ended(events)
    ended = {None: "finished" if done and done >= cfg.get("epochs", done)
             else "not finished (running, or killed)",
             "interrupted": f"interrupted at epoch {end.get('epoch')}, batch {end.get('batch')}",
             "diverged": f"diverged at step {end.get('step')}: {end.get('message', '')}",
             "time_budget": (f"stopped by the time budget at epoch {end.get('epoch')}, batch {end['batch']}"
                             if "batch" in end else   # runs before it stopped mid-epoch
                             f"stopped by the time budget after epoch {end.get('epoch')}"),
             }[end.get("event")]
    classes = ([("classes (the grids' rows: the first 10)", ", ".join(cfg["classes"]))]
               if cfg.get("conditional") else [])
    return [("model", cfg.get("model", "?")), *classes,
            ("epochs done / planned", f"{done} / {cfg.get('epochs', '?')}"),
            ("seconds per epoch (median)", f"{np.median(seconds):.3g}" if seconds else "-"),
            ("ended", ended), ("resumed", "yes" if resumed else "no"),
            ("machine", start.get("host", "-")),
            ("device", start.get("device", cfg.get("device_used", "-"))),
            ("CPU threads", cfg.get("threads_used", cfg.get("threads", "-"))),
            ("torch", start.get("torch", cfg.get("torch", "-"))),
            ("processes", cfg.get("world_size", 1))]


def _config_table(cfg, per_row=3):
    """All settings, per_row key/value pairs a row, to keep the table short."""
    pairs = [(k, _fmt(v)) for k, v in sorted(cfg.items())]
    return _table([sum(pairs[i:i + per_row], ()) for i in range(0, len(pairs), per_row)], cls="cfg")


# Every score an evaluation gives: what it is and which way is better ("" for
# none). The bare names are in the project's own features (the 28 x 28 sets'
# classifier); "inception_" ones are the standard scores (helper_features).
_FEATURE_SCORES = {"fid": ("FID", "lower"), "kid_x1e3": ("KID x 1e3", "lower"),
                   "kid_std_x1e3": ("KID's std over subsets x 1e3", ""),
                   "precision": ("precision", "higher"), "recall": ("recall", "higher")}
SCORES = {**{k: (f"classifier {label}", b) for k, (label, b) in _FEATURE_SCORES.items()},
          **{f"inception_{k}": (f"Inception {label}", b) for k, (label, b) in _FEATURE_SCORES.items()},
          "inception_score": ("classifier Inception Score", "higher"),
          "min_class_share": ("rarest class share, 0.1 = balanced", "higher"),
          "class_agreement": ("class agreement (read as asked)", "higher"),
          "min_class_agreement": ("worst class's agreement", "higher"),
          "mean_class_fid": ("classifier FID per class, mean", "lower"),
          "mean_class_swd": ("SWD x 1e3 per class, mean", "lower"),
          "swd_mean": ("SWD x 1e3, mean of the levels", "lower"),
          **{f"swd_{r}": (f"SWD x 1e3 at {r} x {r} px", "lower") for r in (16, 32, 64, 128, 256)},
          "ms_ssim": ("MS-SSIM among samples", "lower: more varied"),
          "ms_ssim_real": ("MS-SSIM among real images", ""),
          "modes": ("StackedMNIST modes, of 1000", "higher"),
          "kl": ("KL(mode histogram || uniform)", "lower")}


def score_label(key):
    """'Inception FID (lower is better)' for a score's key; the key itself when unknown."""
    label, better = SCORES.get(key, (key, ""))
    if not better:
        return label
    return f"{label} ({better})" if ":" in better else f"{label} ({better} is better)"


def _eval_table(evals):
    keys = sorted({k for e in evals for k, v in e.items() if isinstance(v, float)})
    if not keys:
        return '<p class="note">No evaluations (train with --eval-every K).</p>'
    return _table([[e.get("epoch"), e.get("step"), *(_fmt(e.get(k, "")) for k in keys)]
                   for e in evals], header=["epoch", "step", *(score_label(k) for k in keys)])


def _event_list(events, kinds, none, keep=lambda e: True, title=""):
    """The events of these kinds (that `keep` accepts) as a list; `none` when there are none."""
    items = [f"{e['event']} at step {e.get('step', '?')}, epoch {e.get('epoch', '?')}"
             + (f": {e['message']}" if "message" in e else "")
             for e in events if e.get("event") in kinds and keep(e)]
    if not items:
        return f'<p class="note">{_esc(none)}</p>' if none else ""
    heading = f"<h3>{_esc(title)}</h3>" if title else ""
    return heading + "<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul>"


def _write_page(path, title, sections):
    """A whole HTML page of (heading, html body) sections, written atomically."""
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><h1>{_esc(title)}</h1>"
            + "".join(f"<h2>{_esc(h)}</h2>{body}" for h, body in sections) + "</body></html>\n")
    return _atomic(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def write_report(run_dir):
    """run_dir/report.html: one static page of the run, pointing at its plots and
    grids. The samples first, then the losses and scores; the settings last."""
    run_dir = check_run(run_dir)
    cfg, events = read_config(run_dir), _events(run_dir)
    evals = [e for e in events if e.get("event") == "eval"]
    evaluates = [e for e in events if e.get("event") == "evaluate"]   # evaluate.py's
    samples = (_images(run_dir, "real_vs_fake.png")      # else the two halves of it
               or _images(run_dir, "final_grid.png", "reals.png")
               or '<p class="note">No grids yet.</p>')
    return _write_page(run_dir / "report.html", f"GAN run {run_dir.resolve().name}", [
        ("Samples", samples + _table(_summary(cfg, events))),
        ("Losses", _images(run_dir, "loss.png", "accuracy.png")),
        ("Sample quality", _images(run_dir, "eval.png") + _eval_table(evals)
         + _evaluate_table(evaluates) + _class_table(evaluates, cfg.get("classes"))),
        ("Progress", _images(run_dir, "progress.gif", "progress.png")),
        ("Health", _event_list(events, ("warning", "diverged", "interrupted"), "No health warnings.",
                               lambda e: "recovered" not in e.get("message", ""))
         + _event_list(events, ("warning",), "", lambda e: "recovered" in e.get("message", ""),
                       title="Recoveries")),
        ("Settings", _settings(cfg))])


def _evaluate_table(runs):
    """The scores evaluate.py added to the run, with the real-image floor of the last."""
    if not runs:
        return ('<p class="note">No scores from evaluate.py yet (python evaluate.py RUN adds them '
                'here).</p>')
    keys = sorted({k for e in runs for k, v in e.items() if isinstance(v, float)})
    floor = runs[-1].get("real_floor", {})
    rows = [[f"evaluate.py, epoch {e.get('epoch', '?')}", e.get("num", "?"),
             *(_fmt(e.get(k, "")) for k in keys)] for e in runs]
    rows.append(["real images (floor)", runs[-1].get("num", "?"), *(_fmt(floor.get(k, "")) for k in keys)])
    return _table(rows, header=["scores", "samples", *(score_label(k) for k in keys)])


# A conditional run's scores by class, as evaluate.py keeps them: key -> column title.
PER_CLASS = {"class_agreement_per_class": "class agreement", "class_fid_per_class": "classifier FID",
             "class_swd_per_class": "SWD x 1e3"}


def _class_table(runs, classes):
    """The last evaluate.py scores of a conditional run by class, a row per class
    (named by the config's classes), each score beside its floor; "" without them."""
    found = (runs[-1].get("per_class") or {}) if runs else {}
    keys = [k for k in PER_CLASS if isinstance(found.get(k), dict)]
    if not keys or not classes:
        return ""

    def cell(values, i):   # a class without enough images was NaN, kept as null
        value = values[i] if isinstance(values, list) and i < len(values) else None
        return _fmt(value) if isinstance(value, float) else "-"
    rows = [[name, *(cell(found[k][side], i) for k in keys for side in ("samples", "real_floor"))]
            for i, name in enumerate(classes)]
    header = ["class", *(f"{PER_CLASS[k]}{which}" for k in keys for which in ("", " (floor)"))]
    note = f'<p class="note">By class, evaluate.py at epoch {runs[-1].get("epoch", "?")}:</p>'
    return note + _table(rows, header=header)


def _settings(cfg):
    """The preset and the settings typed on the command line; all of them folded away."""
    typed = [(k, _fmt(cfg[k])) for k in cfg.get("typed", []) if k in cfg]
    shown = _table([("preset", cfg.get("preset", "-")), *typed], header=["setting", "value"])
    note = "" if "typed" in cfg else '<p class="note">(this run did not record its typed flags)</p>'
    return (shown + note + "<details><summary>All settings (config.json)</summary>"
            + _config_table(cfg) + "</details>")


# ---------------------------------------------------------------- comparing runs

def _differing(configs):
    """Keys whose values are not the same in every config (absent counts as a value)."""
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys
            if len({json.dumps(c.get(k, "<absent>"), sort_keys=True) for c in configs}) > 1]


def run_labels(run_dirs, configs):
    """'loss=hinge, lr_gen=0.0001' from the recipe settings that differ; the folder
    name when nothing (or not enough) differs to tell the runs apart."""
    keys = [k for k in _differing(configs) if k not in NOT_RECIPE]
    labels = [", ".join(f"{k}={_fmt(c.get(k, '-'))}" for k in keys) for c in configs]
    if not keys or len(set(labels)) < len(labels):
        return [Path(r).resolve().name for r in run_dirs]
    return labels


def _settings_html(run_dirs, configs, labels, out_dir):
    """The settings that differ (runs as columns), and links to the runs' own reports."""
    names = [r.resolve().name for r in run_dirs]
    rows = [["label", *labels]] + [[k, *(_fmt(c.get(k, "-")) for c in configs)]
                                   for k in _differing(configs)]
    links = [f'<a href="{_esc(_relative_url(r / "report.html", out_dir))}">'
             f"{_esc(n)}</a>" for r, n in zip(run_dirs, names) if (r / "report.html").exists()]
    return (_table(rows, header=["setting", *names])
            + (f"<p>Reports: {' &middot; '.join(links)}</p>" if links else ""))


def _relative_url(path, start):
    """path relative to the folder start, as a link that is always a path: a run
    folder named "javascript:..." would otherwise read as a scheme, and run code."""
    return "./" + Path(os.path.relpath(path, start)).as_posix()


def compare_page(run_dirs, out_dir, labels, figure="compare.png"):
    """out_dir/compare.html: the comparison figure and the settings that differ."""
    configs = [read_config(r) for r in run_dirs]
    return _write_page(Path(out_dir) / "compare.html", "GAN runs compared", [
        ("Losses, scores and final samples", f'<img src="{_esc(figure)}" alt="{_esc(figure)}">'),
        ("Settings that differ", _settings_html(run_dirs, configs, labels, out_dir))])

"""Sample images from a trained generator, and look inside it.

    python generate.py runs/mnist_gan                    # 64 samples -> runs/mnist_gan/samples.png
    python generate.py runs/mnist_gan/checkpoint.pt --num 1000 --out samples.pt
        # a float tensor N x C x H x W in [-1, 1]
    python generate.py runs/mnist_gan --interpolate 8    # -> RUN/interpolation.png, a walk per row
    python generate.py runs/mnist_gan --interpolate 8 --out walk.gif   # the walks, animated
    python generate.py runs/mnist_gan --truncation 0.25 0.5 1 2        # -> RUN/truncation.png
    python generate.py runs/mnist_gan --nearest 5        # -> RUN/nearest.png
    python generate.py runs/mnist_cond --class 7 --num 16        # a --conditional run: sevens
    python generate.py runs/mnist_cond --class all       # -> RUN/classes.png, a row per class
    python generate.py runs/mnist_cond --interpolate 4 --class 3 --to-class 8    # 3 -> 8, noise fixed

--interpolate K walks from K random latent points to K others in --steps steps
along great circles (slerp): Gaussian noise lives near a sphere, and a straight
line's middle would leave it for points the generator never saw.
--truncation PSI draws every latent value from N(0, 1) cut to [-PSI, PSI]: a
smaller PSI gives more typical, less varied images. Several PSI give a row each
(its PSI written on its left), from the same draws, so a column shows one sample
at growing truncation.
--nearest K puts each sample (left, apart) beside the K training images nearest
to it, closest first: a distance near 0 means the generator copied its data. Grey 28 x 28 runs are
compared in the features of the MNIST classifier (trained once and cached, as
for evaluate.py), colour runs in pixels.

--class K (a run trained with --conditional; K: the class's number or name)
draws that class in every mode; --class all draws a class grid, one row per
class, the same noise down each column (--num columns, default 8).
--interpolate with --class walks the noise within the class; with --class A
--to-class B it walks from class A to class B at fixed noise (K noise draws,
a row each), along a straight line between the two classes' weights (their
embeddings, or conditional BatchNorm's scales and shifts).

Uses the EMA generator when the run kept one. The checkpoint is opened with
weights_only=True, so a file from someone else cannot run code. An existing
output file is left alone unless --force.
"""
import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning, which
# on a CPU shared with other jobs is many times faster (README, "Speed"). A value
# set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from helper_checkpoint import load_generator, pick_device  # noqa: E402
from helper_data import DataError, data_of_run, dataset_images  # noqa: E402
from helper_eval import load_mnist_classifier  # noqa: E402
from helper_files import RunError, check_output_file  # noqa: E402
from helper_flags import IDX_SETS  # noqa: E402
from helper_explore import interpolation_frames, interpolation_noise, nearest, nearest_grid, truncation_rows  # noqa: E402
from helper_plot import readable, save_grid, save_image  # noqa: E402
from helper_report import beside, grid_image, label_rows, save_gif, titled  # noqa: E402
from models import class_grid, sample, samples_of  # noqa: E402

MODES = ("interpolate", "truncation", "nearest")    # None: plain samples
DEFAULT_OUT = {None: "samples.png", "interpolate": "interpolation.png",
               "truncation": "truncation.png", "nearest": "nearest.png", "classes": "classes.png"}
SUFFIXES = {None: (".png", ".pt"), "interpolate": (".png", ".gif"),
            "truncation": (".png",), "nearest": (".png",)}
GRID_LIMIT = 1024      # images in one picture
STEPS = 8                # --interpolate: points per walk, both ends included
GIF_SECONDS = 0.12       # per frame; the ping-pong loop has no pause at its turns


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    p.add_argument("--num", type=int, help="number of samples (default 64; --nearest: 8; "
                                           "several --truncation PSI: per row, default 8)")
    p.add_argument("--out", help="FILE.png (grid), FILE.pt (tensor) or, with --interpolate, FILE.gif "
                                 "(default: samples.png, interpolation.png, truncation.png or "
                                 "nearest.png in the run folder)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row (per GIF frame row)")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--interpolate", type=int, metavar="K", help="K slerp walks, a row each")
    modes.add_argument("--truncation", type=float, nargs="+", metavar="PSI",
                       help="samples from noise truncated to [-PSI, PSI]; several PSI: a row each")
    modes.add_argument("--nearest", type=int, nargs="?", const=3, metavar="K",
                       help="each sample beside its K (default 3) nearest training images")
    p.add_argument("--steps", type=int, help=f"--interpolate: points per walk (default {STEPS})")
    p.add_argument("--class", dest="label", metavar="K",
                   help="a --conditional run: draw class K (its number or name); all: a class grid, "
                        "a row per class, the same noise down each column (--num columns, default 8)")
    p.add_argument("--to-class", metavar="B", help="--interpolate with --class A: walk from class A "
                                                   "to class B at fixed noise")
    p.add_argument("--data-dir", help="--nearest: dataset root (default: the run's own)")
    p.add_argument("--cache-dir", help="--nearest: where decoded images and the MNIST classifier are "
                                       "cached (default: ~/.cache/gan-lecture)")
    args = p.parse_args(argv)
    args.mode = next((m for m in MODES if getattr(args, m) is not None), None)
    problem = flag_problem(args)
    if problem:
        p.error(problem)
    return p, args


def flag_problem(a):
    """What is wrong with the flags, in one line, or None."""
    if a.num is not None and a.num < 1:
        return f"--num must be >= 1, not {a.num}"
    for flag, value, low in (("--nrow", a.nrow, 1), ("--interpolate", a.interpolate, 1),
                             ("--nearest", a.nearest, 1), ("--steps", a.steps, 2)):
        if value is not None and value < low:
            return f"{flag} must be >= {low}, not {value}"
    bad_psi = [psi for psi in a.truncation or [] if not psi > 0]
    if bad_psi:
        return f"--truncation PSI must be > 0, not {bad_psi[0]:g}"
    if a.steps is not None and a.mode != "interpolate":
        return "--steps goes with --interpolate"
    if a.num is not None and a.mode == "interpolate":
        return "--num does not go with --interpolate: its grid is K walks x --steps"
    if a.label == "all" and a.mode is not None:
        return f"--class all draws a class grid: it does not go with --{a.mode}"
    if a.to_class is not None and (a.mode != "interpolate" or a.label in (None, "all")):
        return "--to-class goes with --interpolate K --class A (a walk from class A to class B)"
    for flag, value in (("--data-dir", a.data_dir), ("--cache-dir", a.cache_dir)):
        if value is not None and a.mode != "nearest":
            return f"{flag} goes with --nearest"
    suffix = Path(a.out).suffix if a.out else ".png"
    if a.label == "all" and suffix != ".png":
        return f"--class all draws a picture: --out must end in .png, not {Path(a.out).name!r}"
    if suffix not in SUFFIXES[a.mode]:
        return f"--out must end in {' or '.join(SUFFIXES[a.mode])} here, not {Path(a.out).name!r}"
    n = grid_size(a)
    if suffix in (".png", ".gif") and n > GRID_LIMIT:
        return (f"a grid of {n:,} images is too many (at most {GRID_LIMIT}): lower "
                f"{'--interpolate or --steps' if a.mode == 'interpolate' else '--num'}")
    return None


def grid_size(a):
    """Images in the picture each mode draws."""
    if a.mode == "interpolate":
        return a.interpolate * (a.steps or STEPS)
    if a.mode == "truncation":
        return len(a.truncation) * truncation_per_row(a)
    if a.mode == "nearest":
        return (a.num or 8) * (a.nearest + 1)
    return a.num or 64


def truncation_per_row(a):
    return a.num or (64 if len(a.truncation) == 1 else 8)


def output_path(p, args):
    """--out, or the mode's file in the run folder; its folder created. Refuses a folder, or a file
    that exists without --force."""
    run_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    out = Path(args.out) if args.out else run_dir / DEFAULT_OUT["classes" if args.label == "all" else args.mode]
    try:
        check_output_file(out, "--out")   # a folder in its place, a folder we cannot write to
    except RunError as e:
        p.error(str(e))
    if out.exists() and not args.force:
        p.error(f"{out} exists: pass --force to overwrite it")
    return out


def main(argv=None):
    p, args = parse_args(argv)
    try:
        device = pick_device(args.device)
        gen, cfg = load_generator(args.checkpoint, device)
        args.label, args.to_class = (class_number(name, cfg, flag) for name, flag in
                                     ((args.label, "--class"), (args.to_class, "--to-class")))
    except RunError as e:   # a missing or unreadable run is bad input, as a bad flag: exit code 2
        p.error(str(e))
    try:
        out = output_path(p, args)
        write = {None: write_class_grid if args.label == "all" else write_samples,
                 "interpolate": write_class_walk if args.to_class is not None else write_interpolation,
                 "truncation": write_truncation, "nearest": write_nearest}[args.mode]
        write(gen, cfg, args, out)
    except (RunError, DataError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:     # a full disk, a folder we may not write to
        sys.exit(f"error: {e}")


def class_number(name, cfg, flag):
    """--class / --to-class: None, "all", or the number of a class of this conditional run."""
    if name is None:
        return None
    if not cfg.get("conditional"):
        raise RunError(f"{flag}: this run was trained without --conditional, so it has no classes")
    classes = cfg["classes"]
    if name == "all" and flag == "--class":
        return name
    if name in classes:
        return classes.index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
    raise RunError(f"{flag} {name!r} is not a class of this run: give a number from 0 to "
                   f"{len(classes) - 1} or a name ({shown})")


# ---------------------------------------------------------------- the pictures

def images_from(gen, noise, labels=None):
    """sample() on the generator's device; the images come back on the CPU."""
    return sample(gen, noise.to(next(gen.parameters()).device), labels=labels)


def labels_of(args, n):
    """The classes of n samples: --class K's, else None (a conditional run: every class in turn)."""
    return None if args.label is None else torch.full((n,), args.label)


def write_samples(gen, cfg, args, out):
    check_fits(gen, cfg, args.num or 64, out)
    n = args.num or 64
    images = samples_of(gen, cfg["latent_dim"], n, args.seed, labels=labels_of(args, n))
    if out.suffix == ".png":
        save_grid(images, out, nrow=args.nrow)
    else:
        torch.save(images, out)
    print(f"wrote {len(images)} images ({tuple(images.shape[1:])}) to {out}")


def check_fits(gen, cfg, num, out):
    """Refuse, before drawing any, samples whose tensor (and noise) would not fit
    in the memory available, or whose file would not fit on the disk."""
    one = images_from(gen, torch.zeros(1, cfg["latent_dim"]))   # (a conditional G: class 0)
    need = num * 4 * (one[0].numel() + cfg["latent_dim"])   # float32 images and noise
    free_disk = shutil.disk_usage(out.parent).free
    for what, free in (("memory available", available_memory()), (f"free space in {out.parent}", free_disk)):
        if free is not None and need > free:
            raise RunError(f"--num {num:,} samples need {need / 1e9:,.1f} GB, more than the "
                           f"{free / 1e9:,.1f} GB of {what}: lower --num")


def available_memory():
    """Bytes of memory a new allocation may take (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def write_class_grid(gen, cfg, args, out):
    classes, cols = cfg["classes"], args.num or 8
    if len(classes) * cols > GRID_LIMIT:
        raise RunError(f"a grid of {len(classes)} classes x {cols} is too many images (at most "
                       f"{GRID_LIMIT}): lower --num")
    noise = torch.randn(cols, cfg["latent_dim"], generator=torch.Generator().manual_seed(args.seed))
    images = class_grid(gen, noise.to(next(gen.parameters()).device), cols, rows=len(classes))
    save_grid(images, out, nrow=cols, row_labels=classes)
    print(f"wrote a class grid to {out}: a row per class ({len(classes)}), the same noise down each "
          f"of its {cols} columns")


def write_class_walk(gen, cfg, args, out):
    """K rows of fixed noise, each from class A to class B in --steps steps (class
    weights from A's one-hot to B's: a straight line through the class embeddings)."""
    pairs, steps, a, b = args.interpolate, args.steps or STEPS, args.label, args.to_class
    noise = torch.randn(pairs, cfg["latent_dim"], generator=torch.Generator().manual_seed(args.seed))
    ends = torch.eye(gen.num_classes)[[a, b]]                                     # 2 x K
    path = torch.lerp(ends[0], ends[1], torch.linspace(0, 1, steps)[:, None])     # steps x K
    images = images_from(gen, noise.repeat_interleave(steps, 0), path.repeat(pairs, 1))
    walk = walk_pictures(images, pairs, steps, args, out)
    names = cfg["classes"]
    print(f"wrote {pairs} walks from class {names[a]} to class {names[b]} (the noise fixed along "
          f"each){walk} to {out}")


def write_interpolation(gen, cfg, args, out):
    pairs, steps = args.interpolate, args.steps or STEPS
    noise = interpolation_noise(cfg["latent_dim"], pairs, steps, args.seed)
    walk = walk_pictures(images_from(gen, noise, labels_of(args, len(noise))), pairs, steps, args, out)
    print(f"wrote {pairs} walks of {steps} steps{walk} to {out}")


def walk_pictures(images, pairs, steps, args, out):
    """Walks (row by row, `steps` each) as a grid, a walk per row, or as a GIF. Returns how."""
    if out.suffix == ".gif":
        frames = [to_pil(frame, args.nrow) for frame in interpolation_frames(images, pairs, steps)]
        save_gif(frames, out, seconds_per_frame=GIF_SECONDS, last_pause=GIF_SECONDS)
        return f" as {len(frames)} looping frames"
    save_grid(images, out, nrow=steps)
    return ", a row each,"


def to_pil(images, nrow):
    """N x C x H x W in [-1, 1] -> a GIF frame: the grid at the images' own size."""
    return Image.fromarray(grid_image(images, nrow))


def write_truncation(gen, cfg, args, out):
    psis, per_row = args.truncation, truncation_per_row(args)
    noise = truncation_rows(cfg["latent_dim"], psis, per_row, args.seed)
    images = readable(images_from(gen, noise, labels_of(args, len(noise))))
    if len(psis) == 1:   # one grid, its psi above it
        grid = Image.fromarray(grid_image(images, args.nrow))
        save_image(titled(grid, [(0, grid.width, f"psi {psis[0]:g}")]), out)
        print(f"wrote {per_row} samples at psi {psis[0]:g} to {out}")
        return
    save_image(label_rows(grid_image(images, per_row), [f"psi {psi:g}" for psi in psis]), out)
    print(f"wrote {len(psis)} rows of {per_row} samples (the same draws, truncated) to {out}:")
    for row, psi in enumerate(psis, 1):
        print(f"  row {row}: psi {psi:g}")


def write_nearest(gen, cfg, args, out):
    k, num = args.nearest, args.num or 8
    cfg = data_of_run(cfg, args.data_dir, args.cache_dir)
    samples = samples_of(gen, cfg["latent_dim"], num, args.seed, labels=labels_of(args, num))
    train = dataset_images(cfg)   # uint8, as training reads them
    features, space = feature_space(cfg, samples, next(gen.parameters()).device)
    try:
        idx, dist = nearest(samples, train, k, features)
        rows = readable(nearest_grid(samples, train, idx)).unflatten(0, (num, k + 1))   # num x (k+1) x C x H x W
    except ValueError as e:        # k above the training set's size, or another image shape
        raise RunError(str(e)) from None
    save_image(beside(grid_image(rows[:, 0], 1), grid_image(rows[:, 1:].flatten(0, 1), k),
                      ("sample", f"its {k} nearest training images" if k > 1 else "nearest training image")),
               out)
    print(f"wrote {num} samples, each followed by its {k} nearest of {len(train):,} training "
          f"images, to {out}")
    print(f"mean distance to the nearest training image ({space}): {float(dist[:, 0].mean()):.4f} "
          f"(0 would be a copy); to all {k}: {float(dist.mean()):.4f}")


def feature_space(cfg, samples, device):
    """(features for nearest(), its name): the MNIST classifier's for grey 28 x 28
    images, where a digit shifted by a pixel is far away in pixels; pixels otherwise."""
    if cfg["dataset"] not in IDX_SETS:
        return None, "pixels"
    classifier = load_mnist_classifier(cfg["data_dir"], cfg["cache_dir"], device, name=cfg["dataset"])
    return (lambda x: classifier.features(x.to(device))), f"{cfg['dataset']} classifier features"


if __name__ == "__main__":
    main()

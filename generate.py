"""Sample images from a trained generator.

    python generate.py runs/mnist_gan --num 64 --out samples.png   # an 8-wide grid
    python generate.py runs/mnist_gan/checkpoint.pt --num 1000 --out samples.pt
        # a float tensor N x C x H x W in [-1, 1]

Uses the EMA generator when the run kept one. The checkpoint is opened with
weights_only=True, so a file from someone else cannot run code. A grid holds at
most 1024 images; a .pt file any number (sampled 1000 at a time).
"""
import argparse
import sys
from pathlib import Path

import torch

from helper_cli import pick_device
from helper_files import atomic_write, check_output_file
from helper_plot import save_grid
from helper_train import RunError, load_generator
from models import samples_of

MAX_GRID = 1024   # images in one PNG grid (32 x 32 of them); more belong in a .pt file


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    p.add_argument("--num", type=int, default=64, help="number of images")
    p.add_argument("--out", default="samples.png", help="FILE.png (grid) or FILE.pt (tensor)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row")
    args = p.parse_args(argv)
    out = Path(args.out)
    check_args(p, args, out)
    try:
        gen, cfg = load_generator(args.checkpoint, pick_device(args.device))
        images = samples_of(gen, cfg["latent_dim"], args.num, args.seed)
        with atomic_write(out) as tmp:   # a full disk leaves no half file
            if out.suffix == ".png":
                save_grid(images, tmp, nrow=args.nrow)
            else:
                torch.save(images, tmp)
    except RunError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: cannot write {out}: {e.strerror}")
    print(f"wrote {args.num} images ({tuple(images.shape[1:])}) to {out}")


def check_args(p, args, out):
    """One line and exit code 2 for flags that cannot work, before any sampling."""
    if args.num < 1:
        p.error(f"--num must be >= 1, not {args.num}")
    if args.nrow < 1:
        p.error(f"--nrow must be >= 1, not {args.nrow}")
    if out.suffix not in (".png", ".pt"):
        p.error(f"--out must end in .png (grid) or .pt (tensor), not {out.name!r}")
    if out.suffix == ".png" and args.num > MAX_GRID:
        p.error(f"--num {args.num}: a grid holds at most {MAX_GRID} images; "
                f"use --out FILE.pt for more")
    try:
        check_output_file(out, "--out")
    except RunError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()

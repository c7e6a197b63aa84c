"""Sample images from a trained generator.

    python generate.py runs/mnist_gan --num 64 --out samples.png   # an 8-wide grid
    python generate.py runs/mnist_gan/checkpoint.pt --num 1000 --out samples.pt
        # a float tensor N x C x H x W in [-1, 1]

Uses the EMA generator when the run kept one. The checkpoint is opened with
weights_only=True, so a file from someone else cannot run code.
"""
import argparse
import sys
from pathlib import Path

import torch

from helper_plot import save_grid
from helper_train import RunError, load_checkpoint, pick_device, sample
from models import build_models


def load_generator(path, device="cpu"):
    """The trained generator of a checkpoint (its EMA copy when there is one), in eval mode."""
    ckpt = load_checkpoint(path, device)
    gen, _ = build_models(ckpt["config"])
    gen.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["gen"])
    return gen.to(device).eval(), ckpt["config"]


def samples_of(gen, latent_dim, num, seed=0):
    """num images N x C x H x W in [-1, 1] from noise seeded by `seed` (the same on any device)."""
    noise = torch.randn(num, latent_dim, generator=torch.Generator().manual_seed(seed))
    return sample(gen, noise.to(next(gen.parameters()).device))


def generate(path, num, seed=0, device="cpu"):
    """num images from a checkpoint's generator, see samples_of."""
    gen, cfg = load_generator(path, device)
    return samples_of(gen, cfg["latent_dim"], num, seed)


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
    if args.num < 1:
        p.error(f"--num must be >= 1, not {args.num}")
    if out.suffix not in (".png", ".pt"):
        p.error(f"--out must end in .png (grid) or .pt (tensor), not {out.name!r}")
    try:
        images = generate(args.checkpoint, args.num, args.seed, pick_device(args.device))
    except RunError as e:
        sys.exit(f"error: {e}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(images, out, nrow=args.nrow)
    else:
        torch.save(images, out)
    print(f"wrote {args.num} images ({tuple(images.shape[1:])}) to {out}")


if __name__ == "__main__":
    main()

"""Fully connected GAN on MNIST, as in the lecture (defaults = the lecture's settings).

    python train_mnist_gan.py                                # 100 epochs, batch 128, data in ./data
    python train_mnist_gan.py --dataset fashion-mnist        # or kmnist: same 28 x 28 IDX layout
    python train_mnist_gan.py --epochs 5 --out runs/quick
    python train_mnist_gan.py --out runs/quick --resume --epochs 10     # continue a run
    python train_mnist_gan.py --preset best                  # the measured best recipe
    torchrun --nproc_per_node=2 train_mnist_gan.py           # several GPUs (DDP)

The run folder (--out) gets config.json, metrics.csv, events.jsonl,
grids/epoch_NNN.png, reals.png, loss.png, accuracy.png, progress.png,
final_grid.png, real_vs_fake.png and checkpoint.pt.

This file holds the presets; the lecture's training loop is in helper_train.py.
"""
import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning, which
# on a CPU shared with other jobs is many times faster (README, "Speed"). A value
# set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

from helper_flags import COMMON_DEFAULTS, IDX_SETS, add_common_args, flag_adder, parse_flags  # noqa: E402

PRESETS = {
    # Exactly the lecture: 128-unit hidden layers, dropout 0.5, Adam 2e-4 (0.5, 0.999).
    "lecture": dict(COMMON_DEFAULTS, dataset="mnist", model="fc", img_shape=[1, 28, 28],
                    data_dir="./data", out="runs/mnist_gan", epochs=100, batch_size=128,
                    lr_gen=2e-4, lr_disc=2e-4, beta1=0.5, latent_dim=100, g_hidden=[128],
                    d_hidden=[128], dropout=0.5, g_batchnorm=False, slope=0.01, fresh_noise=False,
                    label_smoothing=0.0, ema_decay=0.0, init="default", gen_activation="leaky",
                    channels_last=False,
                    # One CPU thread: these matrices are too small to split, and more threads
                    # only wait for each other (README, "Speed": as fast on a quiet CPU, faster on a busy one).
                    threads=1),
}
# The best recipe we measured at equal CPU time (README, ablate.py): wider and deeper
# layers, BatchNorm in the generator, LeakyReLU 0.2, no dropout, batch 64, Adam 5e-4,
# one-sided label smoothing 0.1, sampling from an EMA of the generator weights, and an
# R1 penalty (gamma 0.1) on D's slope at the real digits.
PRESETS["best"] = {**PRESETS["lecture"], "out": "runs/mnist_gan_best", "g_hidden": [256, 512, 1024],
                   "d_hidden": [512, 256], "g_batchnorm": True, "slope": 0.2, "dropout": 0.0,
                   "batch_size": 64, "lr_gen": 5e-4, "lr_disc": 5e-4, "label_smoothing": 0.1,
                   "ema_decay": 0.999, "r1": 0.1}


def widths(text):
    """'256,512,1024' -> [256, 512, 1024]"""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, not {text!r}")
    return values


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_common_args(p, PRESETS)
    a = flag_adder(p, PRESETS["lecture"])
    a("--dataset", choices=list(IDX_SETS),
      help="in DIR/MNIST/raw, DIR/FashionMNIST/raw or DIR/KMNIST/raw (torchvision's layout)")
    a("--g-hidden", type=widths, help="generator hidden widths, e.g. 256,512,1024")
    a("--d-hidden", type=widths, help="discriminator hidden widths, e.g. 512,256")
    a("--dropout", type=float, help="dropout after each hidden layer, 0: none")
    a("--g-batchnorm", action=argparse.BooleanOptionalAction,
      help="BatchNorm after each hidden layer of the generator")
    return p


def main(argv=None):
    parser = build_parser()
    flags = parse_flags(parser, PRESETS, argv)   # --help and flag errors: before torch loads
    import helper_cli   # torch and the training loop: seconds on a busy CPU
    helper_cli.run(*helper_cli.check_flags(parser, *flags))


if __name__ == "__main__":
    main()

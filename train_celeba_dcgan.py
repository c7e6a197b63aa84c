"""DCGAN on CelebA faces at 64 x 64, as in the lecture (defaults = the lecture's settings).

    python train_celeba_dcgan.py                             # 20 epochs, batch 128, data in ./data
    python train_celeba_dcgan.py --max-batches 50 --epochs 2     # a quick look
    python train_celeba_dcgan.py --out runs/celeba_dcgan --resume    # continue a run
    python train_celeba_dcgan.py --preset best               # the measured best recipe
    torchrun --nproc_per_node=4 train_celeba_dcgan.py        # several GPUs (DDP)

    python train_celeba_dcgan.py --dataset folder --data-dir my_pictures    # any image folder
    python train_celeba_dcgan.py --dataset cifar10                # DIR/cifar-10-batches-py, 32 x 32
    python train_celeba_dcgan.py --dataset stacked-mnist          # DIR/MNIST: 1000 modes, 32 x 32

CelebA: --data-dir may hold celeba/img_align_celeba/ (torchvision's layout),
img_align_celeba/, or the images themselves; they are center-cropped (160 x
160 of 178 x 218, scaled for other sizes), resized to 64 x 64 and decoded once
into a cache (--cache-dir). A folder: images found at any depth (class
subfolders are fine: with --conditional their names are the classes), the
largest centred square by default.
The run folder (--out) holds the same files as the MNIST script's.

This file holds the presets; the lecture's training loop is in helper_train.py.
"""
import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning, which
# on a CPU shared with other jobs is many times faster (README, "Speed"). A value
# set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

from helper_flags import CLASS_INPUTS, CROPS, COMMON_DEFAULTS, DEFAULT_CROP, RGB_SETS, add_common_args, flag_adder, parse_flags  # noqa: E402

PRESETS = {
    # Exactly the lecture: g = d = 64 feature maps, LeakyReLU, Adam 2e-4 (0.5, 0.999).
    "lecture": dict(COMMON_DEFAULTS, dataset="celeba", crop="celeba", model="dcgan", channels=3,
                    data_dir="./data", out="runs/celeba_dcgan", epochs=20, batch_size=128,
                    lr_gen=2e-4, lr_disc=2e-4, beta1=0.5, latent_dim=100, g_features=64,
                    d_features=64, image_size=64, slope=0.01, fresh_noise=False,
                    label_smoothing=0.0, ema_decay=0.0, init="default", gen_activation="leaky",
                    class_input="cbn",     # with --conditional: measured better than concat (README)
                    channels_last=True,    # NHWC: faster convolutions, same numbers
                    log_every=10),         # a DCGAN batch takes seconds on a CPU: show progress sooner
}
# What a typed --dataset brings along unless typed too: its usual crop, and the 32 x 32
# size of CIFAR-10 and StackedMNIST.
IMPLIED = {"dataset": {name: {"crop": DEFAULT_CROP[name]} for name in RGB_SETS}}
IMPLIED["dataset"]["cifar10"]["image_size"] = IMPLIED["dataset"]["stacked-mnist"]["image_size"] = 32
# The best recipe we measured at equal CPU time (README, ablate.py): the DCGAN paper's
# N(0, 0.02) init and LeakyReLU 0.2, sampling from an EMA of the generator weights, and
# half the lecture's widths (g = d = 32) with batch 64: a quarter of the work per image,
# so many more steps in the same time.
PRESETS["best"] = {**PRESETS["lecture"], "out": "runs/celeba_dcgan_best", "init": "dcgan",
                   "slope": 0.2, "ema_decay": 0.999, "g_features": 32, "d_features": 32,
                   "batch_size": 64}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_common_args(p, PRESETS)
    a = flag_adder(p, PRESETS["lecture"])
    a("--dataset", choices=RGB_SETS, help="celeba, folder (any images under --data-dir), cifar10 or stacked-mnist "
                                          "(three MNIST digits as R, G, B: 1000 modes, from DIR/MNIST)")
    a("--crop", choices=CROPS, help="celeba: the face crop, 160/178 of the width; center: the largest "
                                    "centred square; none: resize only")
    a("--g-features", type=int, help="generator width g")
    a("--d-features", type=int, help="discriminator width d")
    a("--image-size", type=int, help="output size, 4 * 2**k")
    a("--class-input", choices=CLASS_INPUTS,
      help="with --conditional, how G takes the class: concat: an embedding beside the noise; "
           "cbn: conditional BatchNorm, a scale and shift per class in each of G's BatchNorms")
    return p


def main(argv=None):
    parser = build_parser()
    flags = parse_flags(parser, PRESETS, argv, IMPLIED)   # --help and flag errors: before torch loads
    import helper_cli   # torch and the training loop: seconds on a busy CPU
    helper_cli.run(*helper_cli.check_flags(parser, *flags))


if __name__ == "__main__":
    main()

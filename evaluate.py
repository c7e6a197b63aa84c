"""How good are a run's samples? Offline metrics, no downloads.

    python evaluate.py runs/mnist_gan
    python evaluate.py runs/celeba_dcgan --data-dir ./data --num 2000 --json runs/celeba_dcgan/scores.json

MNIST runs: "MNIST FID" (Frechet distance in the features of a small classifier
this project trains once on MNIST and caches), classifier Inception Score (at
most 10) and the share of each digit among the samples. Face runs: sliced
Wasserstein distance on Laplacian pyramid patches (x 1e3, lower is better) and
MS-SSIM among samples (lower is more diverse). The same numbers for real images
are printed as the floor. `--inception` adds Inception FID through torchmetrics
when its weights can be had (an optional extra), else it says why not.
"""
import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning, which
# on a CPU shared with other jobs is many times faster (README, "Speed"). A value
# set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402

import helper_eval  # noqa: E402
from helper_checkpoint import load_generator, pick_device  # noqa: E402
from helper_data import DataError, data_of_run  # noqa: E402
from helper_eval import Reference  # noqa: E402
from helper_files import RunError, check_output_file, write_json  # noqa: E402
from models import samples_of  # noqa: E402


def inception_fid(samples, real):
    """Inception FID via torchmetrics, or None with a one-line reason."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        fid = FrechetInceptionDistance(feature=2048, normalize=True)
        for images, is_real in ((real, True), (samples, False)):
            rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
            fid.update((rgb + 1) / 2, real=is_real)
        return float(fid.compute()), None
    except (ImportError, OSError, RuntimeError, ValueError) as e:   # not installed; weights not downloadable
        return None, f"Inception FID skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder or its checkpoint.pt")
    p.add_argument("--data-dir", help="dataset root (default: the run's own --data-dir)")
    p.add_argument("--cache-dir", help="where decoded images and the MNIST classifier are cached "
                                       "(default: ~/.cache/gan-lecture)")
    p.add_argument("--num", type=int, help="samples (default: 10000 for MNIST, 2000 for faces)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.add_argument("--inception", action="store_true", help="add Inception FID (needs torchmetrics + weights)")
    args = p.parse_args(argv)
    if args.num is not None and args.num < 1:
        p.error(f"--num must be >= 1, not {args.num}")
    if args.json:   # checked before the evaluation: a result that cannot be saved is lost
        try:
            check_output_file(args.json, "--json")
        except RunError as e:
            p.error(str(e))
    try:
        gen, cfg = load_generator(args.run, pick_device(args.device))
        cfg = data_of_run(cfg, args.data_dir, args.cache_dir)
        kind = helper_eval.kind_of(cfg)
        num = args.num or {"idx": 10000, "rgb": 2000}[kind]
        print(f"loading {cfg['dataset']} reference images...", flush=True)
        ref = Reference(cfg, num, args.seed)
        what = "classifier FID, Inception Score" if kind == "idx" else "SWD, MS-SSIM: about a minute on a CPU"
        print(f"scoring {num} samples ({what})...", flush=True)
        samples = ref.scores(samples_of(gen, cfg["latent_dim"], num, args.seed), args.seed)
        print(f"scoring {num} real images, the floor...", flush=True)
        result = {"samples": samples, "real_floor": ref.floor(), "num": num, "run": args.run}
        if args.inception:
            result["inception_fid"], note = inception_fid(samples_of(gen, cfg["latent_dim"], num), ref.real)
            if note:
                print(note)
    except (DataError, RunError) as e:
        sys.exit(f"error: {e}")
    print_table(result)
    if args.json:
        try:
            write_json(args.json, result)
        except OSError as e:
            sys.exit(f"error: cannot write {args.json}: {e.strerror}")


def print_table(result):
    print(f"{'metric':<20}{'samples':>12}{'real (floor)':>14}")
    for key, value in result["samples"].items():
        if isinstance(value, float):
            print(f"{key:<20}{value:>12.4f}{result['real_floor'][key]:>14.4f}")
    if "class_shares" in result["samples"]:
        shares = " ".join(f"{d}:{s:.3f}" for d, s in enumerate(result["samples"]["class_shares"]))
        print(f"digit shares: {shares}")


if __name__ == "__main__":
    main()

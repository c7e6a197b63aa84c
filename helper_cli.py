"""Everything between a training script's parsed flags and `train_gan`:
validation, the run folder's rules, devices and torchrun.

A script declares its presets (every default lives there) and its own flags
(helper_flags, which loads without torch), parses them, then calls
`check_flags` and `run`. Bad input ends in one line on stderr and
exit code 2; nothing is written before the input has been checked. A run holds
its folder's lock (helper_files.RunLock) from before it reads the folder until
it ends, so two processes never write one run.
"""
import contextlib
import errno
import gc
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch

import helper_plot
from helper_checkpoint import check_config, load_checkpoint, pick_device
from helper_data import DataError, make_loader
from helper_dist import any_rank, dist_setup, elastic_restart
from helper_eval import make_evaluator
from helper_features import Inception, NetworkUnavailable
from helper_files import RunError, RunLock, append_event, atomic_write, hms, json_safe, plain
from helper_flags import COMMON_DEFAULTS, parse_flags
from helper_health import HealthMonitor
from helper_tensorboard import TensorBoardMissing
from helper_tensorboard import require as require_tensorboard
from helper_train import amp_dtype, batches_per_epoch, build_state, split_batch, train_gan

# Flags that may change when a run is resumed; everything else comes from the run's config.
# The learning rates and --amp too: the way to continue after a divergence.
RESUMABLE = {"epochs", "device", "num_workers", "max_batches", "data_dir", "cache_dir",
             "log_every", "plot_every", "eval_every", "eval_inception", "compile", "input_path", "time_budget",
             "tensorboard", "lr_gen", "lr_disc", "amp", "threads"}
SCRIPTS = {"fc": "train_mnist_gan.py", "dcgan": "train_celeba_dcgan.py"}
# A disk that cannot take the run's files: one line and exit 1, not a traceback.
WRITE_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS, errno.EACCES,
                errno.EPERM}
# What a run folder holds (grids/ aside); any of the markers means it holds a run.
RUN_MARKERS = ["config.json", "metrics.csv", "events.jsonl", "checkpoint.pt"]
RUN_FILES = [*RUN_MARKERS, "reals.png", "loss.png", "accuracy.png", "progress.png", "final_grid.png", "real_vs_fake.png",
             "eval.png", "progress.gif", "report.html"]


# ---------------------------------------------------------------- flags and config

def check_flags(parser, cfg, typed):
    """helper_flags.parse_flags's result checked against the rules every config
    obeys (they live in helper_checkpoint: checkpoints obey them too): one line
    and exit 2 for a value that cannot work. Paths made absolute."""
    try:
        check_config(cfg)
    except RunError as e:
        parser.error(str(e))
    if "class_input" in typed and not cfg["conditional"]:
        parser.error("--class-input says how a conditional generator takes the class: add --conditional")
    return absolute_paths(cfg), typed


def parse_config(parser, presets, argv=None, implied=None):
    """parse_flags and check_flags in one call: (config, typed flags)."""
    return check_flags(parser, *parse_flags(parser, presets, argv, implied))


def absolute_paths(cfg):
    """Paths made absolute, so that a run resumes from any working directory.
    With --resume, --out may name the run's checkpoint.pt instead of its folder."""
    out = Path(cfg["out"])
    if cfg["resume"] and out.name == "checkpoint.pt" and out.is_file():
        out = out.parent
    paths = {k: os.path.abspath(cfg[k]) for k in ("data_dir", "cache_dir") if cfg[k] is not None}
    return {**cfg, **paths, "out": os.path.abspath(out)}


# ---------------------------------------------------------------- one training run

def run(cfg, given):
    """Train one run as configured. Bad input ends with one clear line and exit
    code 2; a disk that cannot take the run's files (full, read-only) with one
    line and exit code 1, the last checkpoint kept."""
    started = time.time()
    try:
        with sigterm_as_ctrl_c():
            rank, world, local = dist_setup()
            device = pick_device(cfg["device"], local)
            cfg = resume_after_restart(cfg, rank, world, device)
            with RunLock(cfg["out"]) if rank == 0 else contextlib.nullcontext():   # one writer per run
                status = train_run(cfg, given, rank, world, device)
    except (DataError, RunError, TensorBoardMissing, NetworkUnavailable) as e:
        exit_with(f"error: {one_line(e)}", 2)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        exit_with(f"error: {e.strerror}: {e.filename or cfg['out']}; stopped, the last "
                  f"checkpoint in {cfg['out']} is kept", 1)
    except KeyboardInterrupt:   # a second Ctrl-C in training, or one before training started
        if (Path(cfg["out"]) / "checkpoint.pt").exists():
            exit_with("quit at once: the checkpoint of the last finished epoch is kept; "
                      f"continue with: --resume --out {cfg['out']}", 130)
        exit_with("stopped before the first epoch finished: nothing to resume; run the same "
                  "command again to start", 130)
    finally:
        end_process_group()
    if status == "diverged":
        sys.exit(1)   # train_gan has said why
    if status == "interrupted":
        exit_with(f"stopped; continue with: --resume --out {cfg['out']}", 130)
    if status in ("finished", "time_budget") and rank == 0:
        print(f"{'stopped at the time budget' if status == 'time_budget' else 'done'} after "
              f"{hms(time.time() - started)}: open {Path(cfg['out']) / 'report.html'} (plots, "
              f"progress.gif, grids/); more epochs: --resume --out {cfg['out']} --epochs N")


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (`timeout`, docker stop, ablate.py stopping a run) as Ctrl-C for
    the whole run: while data loads or the cache is built it ends in run()'s
    one line, not silently with exit code 143. Inside the training loop
    helper_train.StopSignals takes over (finish the batch, save)."""
    if threading.current_thread() is not threading.main_thread():   # handlers live there only
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_run(cfg, given, rank, world, device):
    """Inside the run folder's lock: check, write the folder, train. Returns
    train_gan's status, or "nothing" when the run already has its epochs."""
    cfg, ckpt = prepare_run(cfg, given, rank, world, device)
    set_threads(cfg, given)
    if ckpt is not None and ckpt["epoch"] >= cfg["epochs"]:
        if rank == 0:
            print(f"note: {cfg['out']} has finished epoch {ckpt['epoch']} already, so --epochs "
                  f"{cfg['epochs']} trains nothing; pass --epochs above {ckpt['epoch']} to continue")
        return "nothing"
    # bad data, or a missing Inception network, fails before any write
    inception = Inception(device=device) if cfg["eval_every"] and cfg["eval_inception"] else None
    loader = ranked_loader(cfg, device, rank, world)
    cfg = with_classes(cfg, loader.classes)
    run_dir = Path(cfg["out"])
    real = split_batch(next(iter(loader.batches(0))))[0].float().cpu()
    if rank == 0:
        write_run_dir(run_dir, cfg, world, device, given)
        if ckpt is not None:
            log_changes(run_dir, ckpt, cfg, given)
        print_header(cfg, batches_per_epoch(loader, cfg), device, world)
        helper_plot.save_grid(real[:64], run_dir / "reals.png")
    state = build_state(cfg, device, ckpt, rank, world)
    if ckpt is not None and rank == 0:
        print(f"resuming at epoch {state.epoch + 1}, batch {state.batch}", flush=True)
    health = HealthMonitor(real, loss_checks=cfg["loss"] == "bce") if cfg["health"] else None
    if health is not None and ckpt is not None:   # what was reported before the checkpoint is not new
        health.restore(run_dir, ckpt["step"])
    evaluator = make_evaluator(cfg, inception) if cfg["eval_every"] else None
    return train_gan(state, loader, cfg, run_dir, rank, world, health, evaluator)


def with_classes(cfg, classes):
    """A conditional config with its data's class names (the networks are built
    from them); a resumed run's data must have the classes it was trained on."""
    if not cfg["conditional"]:
        return cfg
    if cfg.get("classes", classes) != classes:
        raise RunError(f"{cfg['out']} was trained on the classes {', '.join(cfg['classes'])}, but the "
                       f"data in {cfg['data_dir']} has {', '.join(classes)}: pass --data-dir to its data")
    return {**cfg, "classes": classes}


def one_line(error):
    """A DataLoader worker's error arrives wrapped in its traceback: keep the
    original message (without terminal colour codes)."""
    text = plain(error)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in text:
        return lines[-1].split(": ", 1)[-1]
    return text


def exit_with(msg, code):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------- devices and torchrun

def resume_after_restart(cfg, rank, world, device):
    """torchrun restarted the workers after losing one (--max-restarts): continue
    from the run's last checkpoint, as --resume does, without anyone typing it.
    Decided together: nodes count their restarts apart, and rank 0 sees the folder."""
    restarted = any_rank(elastic_restart() > 0, world, device)
    if not any_rank(restarted and rank == 0 and (Path(cfg["out"]) / "checkpoint.pt").is_file(), world, device):
        return cfg
    if rank == 0:
        print(f"torchrun restarted the workers (restart {elastic_restart()}): resuming {cfg['out']} "
              "from its last checkpoint", flush=True)
    return {**cfg, "resume": True, "overwrite": False}


def end_process_group():
    """Under torchrun: free the run's DDP modules now (reference cycles keep them,
    and through them the gloo group and its threads, alive until interpreter exit,
    where tearing them down can abort a finished worker with SIGABRT), then end
    the group while the interpreter is whole."""
    if torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.destroy_process_group()


def set_threads(cfg, given):
    """PyTorch's CPU threads: a typed --threads, else OMP_NUM_THREADS when the
    user set it, else the preset's value (0: PyTorch's default, one per core)."""
    if "threads" in given or ("OMP_NUM_THREADS" not in os.environ and cfg["threads"] > 0):
        if cfg["threads"] > 0:
            torch.set_num_threads(cfg["threads"])


def ranked_loader(cfg, device, rank, world):
    """Each rank gets its shard; rank 0 builds any decode cache before the others read it."""
    local = {**cfg, "batch_size": cfg["batch_size"] // world}
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    loader = make_loader(cfg["dataset"], local, device, rank, world)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    return loader


# ---------------------------------------------------------------- the run folder

def prepare_run(cfg, given, rank, world, device):
    """Refuse to overwrite a run silently; on --resume merge the run's saved
    config with the flags that may change. Writes nothing. Returns (final
    config, checkpoint or None)."""
    if world > 1 and (cfg["loss"] == "wgan-gp" or cfg["r1"] or cfg["r2"]):
        raise RunError("--loss wgan-gp, --r1 and --r2 need a double backward, which "
                       "DistributedDataParallel does not support: train them in one process")
    out = Path(cfg["out"])
    ckpt = None
    if cfg["resume"]:
        ckpt = load_checkpoint(out, device)
        saved = ckpt["config"]
        if saved["model"] != cfg["model"]:
            raise RunError(f"{out} holds a {saved['dataset']} run ({saved['model']} model): "
                           f"resume it with {SCRIPTS[saved['model']]}")
        ignored = sorted(k for k in given - RESUMABLE - {"resume", "out", "overwrite"} if cfg[k] != saved.get(k))
        if ignored and rank == 0:
            print("note: on --resume the run's own settings are kept; ignoring "
                  + ", ".join("--" + k.replace("_", "-") for k in ignored))
        cfg = {**cfg, **saved, **{k: cfg[k] for k in given & RESUMABLE},
               "resume": True, "overwrite": False, "out": cfg["out"]}   # the folder as it is now
    elif any((out / f).exists() for f in RUN_MARKERS) and not cfg["overwrite"]:
        if (out / "checkpoint.pt").exists():
            raise RunError(f"{out} already holds a run: add --resume to continue it, "
                           f"--overwrite to replace it, or choose another --out")
        # Stopped or killed before its first checkpoint: nothing to resume, so the
        # same command starts it again (its files are replaced as with --overwrite).
        if rank == 0:
            print(f"note: {out} holds a run that stopped before its first checkpoint: starting it again")
        cfg = {**cfg, "overwrite": True}
    if world > 1:
        torch.distributed.barrier()   # every rank has looked before rank 0 writes
    if cfg["batch_size"] % world:
        raise RunError(f"--batch-size {cfg['batch_size']} must be divisible by the "
                       f"{world} torchrun processes")
    if cfg["tensorboard"]:
        require_tensorboard()   # before anything is written
        tb = out / "tb"
        if tb.exists() and not tb.is_dir() and not cfg["overwrite"]:
            raise RunError(f"{tb} is a file, where --tensorboard writes its folder: move it "
                           f"away, or add --overwrite to replace the run (and it)")
    if device.type == "cuda":   # fixed input shapes: cuDNN's timed choice pays off after a few steps
        torch.backends.cudnn.benchmark = cfg["cudnn_benchmark"]
    return cfg, ckpt


def write_run_dir(out, cfg, world, device, given):
    out.mkdir(parents=True, exist_ok=True)
    if cfg["overwrite"]:
        for f in RUN_FILES:
            (out / f).unlink(missing_ok=True)
        for f in (out / "grids").glob("epoch_*.png"):
            f.unlink()
        if (out / "tb").is_dir():
            shutil.rmtree(out / "tb", ignore_errors=True)
        else:   # a file in the way of --tensorboard's folder
            (out / "tb").unlink(missing_ok=True)
    typed = set(given) - {"out", "resume", "overwrite"}
    if cfg["resume"] and (out / "config.json").is_file():   # a resume adds to what was typed at first
        typed |= set(json.loads((out / "config.json").read_text()).get("typed", []))
    info = {**cfg, "world_size": world, "device_used": str(device), "torch": torch.__version__,
            "batch_per_process": cfg["batch_size"] // world, "threads_used": torch.get_num_threads(),
            "typed": sorted(typed)}
    with atomic_write(out / "config.json") as tmp:
        tmp.write_text(json.dumps(json_safe(info), indent=2) + "\n")


MODEL_NAMES = {"fc": "fully connected GAN", "dcgan": "DCGAN"}


def print_header(cfg, batches, device, world):
    """What is trained, where, and on what: a few readable lines (config.json has the rest)."""
    amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(cfg, device)]
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    extras = [f"{k} {cfg[k]}" for k in ("loss", "n_critic", "diffaug", "r1", "r2", "cosine") if cfg[k] != COMMON_DEFAULTS[k]]
    extras += [f"conditional on {len(cfg['classes'])} classes"] if cfg["conditional"] else []
    print(f"{MODEL_NAMES[cfg['model']]} on {cfg['dataset']} (preset {cfg['preset']}{', ' if extras else ''}"
          f"{', '.join(extras)}): {cfg['epochs']} epochs of {batches} batches of {cfg['batch_size']}"
          + (" (resumed)" if cfg["resume"] else ""))
    print(f"device {device}{threads}, {world} process{'es' if world > 1 else ''}, autocast {amp}; "
          f"run folder {cfg['out']} (settings in config.json)", flush=True)


def log_changes(run_dir, ckpt, cfg, given):
    """Settings a resumed run changes (learning rates after a divergence, ...):
    said, and kept in events.jsonl as a "config_change" event at the checkpoint's step."""
    saved = ckpt["config"]
    changes = {k: [saved.get(k), cfg[k]] for k in sorted(given & RESUMABLE) if saved.get(k) != cfg[k]}
    if changes:
        append_event(run_dir, event="config_change", epoch=ckpt["epoch"], step=ckpt["step"],
                     changes=changes)
        print("changed on --resume: " + ", ".join(f"--{k.replace('_', '-')} {old} -> {new}"
                                                   for k, (old, new) in changes.items()), flush=True)

"""The one GAN training loop (`train_gan`) and what both scripts share around it:
flags, presets, run folders, checkpoints, devices and torchrun.

One step, as in the lecture (per batch of real images x):
  fake = G(z), z ~ N(0, 1)
  D step: 0.5 * (BCE(D(x), 1) + BCE(D(fake.detach()), 0)), one backward, D optimizer
  G step: BCE(D(fake), 1)  ("flipped" labels), backward, G optimizer
Each optimizer holds only its own network's parameters.
"""
import argparse
import contextlib
import copy
import csv
import json
import os
import pickle
import random
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

import helper_plot
from helper_data import DataError, Progress, make_loader
from models import num_doublings, build_models

METRICS = ["step", "epoch", "batch", "g_loss", "d_loss", "d_acc_real", "d_acc_fake"]
CKPT_FORMAT = "gan-lecture-checkpoint-v1"
# Flags that may change when a run is resumed; everything else comes from the run's config.
RESUMABLE = {"epochs", "device", "num_workers", "max_batches", "data_dir", "cache_dir",
             "log_every", "plot_every", "eval_every", "compile", "input_path", "time_budget"}


class RunError(Exception):
    """A run folder, checkpoint or flag that cannot be used; the message says why."""


class Diverged(Exception):
    """A loss became NaN or infinite."""


# ---------------------------------------------------------------- flags and config

def add_common_args(p):
    """Flags shared by both scripts; their defaults come from the script's preset."""
    a = p.add_argument
    a("--preset", default="lecture", help="lecture (exactly the lecture) or best (measured best recipe)")
    a("--data-dir", help="dataset root folder")
    a("--out", help="run folder for metrics, grids, plots and checkpoints")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    a("--lr-gen", type=float)
    a("--lr-disc", type=float)
    a("--beta1", type=float, help="Adam beta1 for both optimizers (beta2 is 0.999)")
    a("--latent-dim", type=int)
    a("--seed", type=int, default=1)
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    a("--num-workers", type=int, default=2, help="worker processes for decoding images")
    a("--input-path", choices=["tensor", "images"], default="tensor",
      help="tensor: data held as one tensor (fast); images: decode each image every epoch")
    a("--cache-dir", help="where the decoded-image cache goes (default: beside the data "
                          "if writable, else ~/.cache/gan-lecture)")
    a("--max-batches", type=int, default=0, help="stop each epoch after N batches (quick checks)")
    a("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    a("--overwrite", action="store_true", help="replace an existing run in --out")
    a("--log-every", type=int, default=50, help="batches between metric writes and progress lines")
    a("--plot-every", type=int, default=10, help="epochs between redrawing the plots")
    a("--eval-every", type=int, default=0, help="epochs between sample-quality evaluations (0: off)")
    a("--time-budget", type=float, default=0,
      help="minutes of training at most: no epoch starts that the last one's time says would overrun")
    # Variants (all off in the lecture preset).
    a("--fresh-noise", action=argparse.BooleanOptionalAction,
      help="draw a new noise batch for the G step instead of reusing the D step's")
    a("--label-smoothing", type=float, help="one-sided: real label 1 - s in the D step")
    a("--ema-decay", type=float, help="EMA of the generator weights for sampling (0: off)")
    a("--init", choices=["default", "dcgan"], help="dcgan: the DCGAN paper's N(0, 0.02) init")
    a("--gen-activation", choices=["leaky", "relu"], help="relu reproduces the lecture's failed run")
    a("--slope", type=float, help="LeakyReLU negative slope")
    # Speed options (no effect on what is computed, except --amp).
    a("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
      help="autocast precision; auto: bf16 on CUDA GPUs that support it, off otherwise")
    a("--channels-last", action=argparse.BooleanOptionalAction,
      help="NHWC memory format for conv nets (default: on for the DCGAN)")
    a("--compile", action="store_true", help="torch.compile both networks")
    a("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
      help="let cuDNN time and pick the fastest convolution kernels (CUDA only)")
    a("--health", action=argparse.BooleanOptionalAction, default=True,
      help="warn when training looks unhealthy (D dominance, collapse, ...)")


def parse_config(parser, presets, argv=None):
    """Parse flags on top of the chosen preset. Returns (config dict, set of
    flags given explicitly on the command line)."""
    pre, _ = parser.parse_known_args(argv)
    if pre.preset not in presets:
        parser.error(f"--preset must be one of {', '.join(presets)}, not {pre.preset!r}")
    parser.set_defaults(**presets[pre.preset])
    args = parser.parse_args(argv)
    # Which flags were typed: parse again with every default None.
    blank = copy.deepcopy(parser)
    blank.set_defaults(**{a.dest: None for a in blank._actions if a.dest != "help"})
    given = {k for k, v in vars(blank.parse_args(argv)).items() if v is not None and v is not False}
    cfg = vars(args)
    _validate(parser, cfg)
    return cfg, given


def _validate(parser, cfg):
    for key in ("epochs", "batch_size", "latent_dim"):
        if cfg[key] is None or cfg[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be a positive integer, not {cfg[key]}")
    for key in ("lr_gen", "lr_disc"):
        if not cfg[key] > 0:
            parser.error(f"--{key.replace('_', '-')} must be > 0, not {cfg[key]}")
    if min(cfg["max_batches"], cfg["num_workers"], cfg["time_budget"], cfg["eval_every"]) < 0:
        parser.error("--max-batches, --num-workers, --time-budget and --eval-every must be >= 0")
    if cfg["log_every"] < 1 or cfg["plot_every"] < 1:
        parser.error("--log-every and --plot-every must be >= 1")
    for key in ("label_smoothing", "ema_decay", "beta1", "dropout"):
        if key in cfg and not 0 <= cfg[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must lie in [0, 1), not {cfg[key]}")
    if "image_size" in cfg:
        try:
            num_doublings(cfg["image_size"])
        except ValueError as e:
            parser.error(f"--image-size: {e}")
    if cfg["resume"] and cfg["overwrite"]:
        parser.error("--resume and --overwrite exclude each other")


# ---------------------------------------------------------------- devices and torchrun

def dist_setup():
    """(rank, world size, local rank), starting the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    return rank, world, local


def pick_device(name, local_rank=0):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def amp_dtype(cfg, device):
    """None (full precision), torch.bfloat16 or torch.float16."""
    amp = cfg["amp"]
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


# ---------------------------------------------------------------- state and checkpoints

class GANState:
    """Everything a run needs to continue: networks, optimizers, scaler, EMA,
    fixed noise and the position (epoch, batch within it, global step)."""

    def __init__(self, gen, disc, cfg, device):
        self.gen, self.disc = gen, disc          # the plain modules (what checkpoints hold)
        betas = (cfg["beta1"], 0.999)
        # Fused Adam: one kernel for all parameters on CUDA (and on CPU in recent PyTorch).
        fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=cfg["lr_gen"], betas=betas, **fused)
        self.opt_d = torch.optim.Adam(disc.parameters(), lr=cfg["lr_disc"], betas=betas, **fused)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg, device) == torch.float16)
        self.ema = None
        if cfg["ema_decay"] > 0:
            self.ema = copy.deepcopy(gen).requires_grad_(False)
        # Drawn from its own generator: the same 64 vectors on any device, every run with this seed.
        g = torch.Generator().manual_seed(cfg["seed"])
        self.fixed_noise = torch.randn(64, cfg["latent_dim"], generator=g).to(device)
        self.epoch = self.batch = self.step = 0
        self.gen_step, self.disc_step = gen, disc  # what the step calls (see wrap)
        self.ddp = False

    def wrap(self, cfg, device, world):
        """DistributedDataParallel under torchrun, torch.compile with --compile.
        Checkpoints keep using the plain modules, so they load anywhere."""
        gen, disc = self.gen, self.disc
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index] if device.type == "cuda" else None
            gen, disc = DDP(gen, device_ids=ids), DDP(disc, device_ids=ids)
            self.ddp = True
        if cfg["compile"]:
            gen, disc = torch.compile(gen), torch.compile(disc)
        self.gen_step, self.disc_step = gen, disc

    def frozen_disc(self):
        """D during the G step: the gradients of D's weights would be discarded
        (zeroed before the next D step), so don't compute them; under DDP,
        where requires_grad must not change, at least don't all-reduce them."""
        if self.ddp:
            return self.disc_step.no_sync()
        return _no_weight_grads(self.disc)

    def sampler(self):
        """The generator to draw samples from (the EMA copy when there is one)."""
        return self.ema if self.ema is not None else self.gen

    def state_dict(self, cfg):
        return {"format": CKPT_FORMAT, "config": cfg, "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "gen": self.gen.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "fixed_noise": self.fixed_noise.cpu(), "rng": _rng_state()}

    def load_state_dict(self, ckpt):
        self.gen.load_state_dict(ckpt["gen"])
        self.disc.load_state_dict(ckpt["disc"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.fixed_noise = ckpt["fixed_noise"].to(self.fixed_noise.device)
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        _set_rng_state(ckpt["rng"])


@contextlib.contextmanager
def _no_weight_grads(module):
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(state_dict, path):
    """Write to a temporary file, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state_dict, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    """A checkpoint file or a run folder holding checkpoint.pt. weights_only=True:
    a checkpoint from someone else cannot run code when opened."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}: pass a run folder or its checkpoint.pt")
    if not zipfile.is_zipfile(path):   # torch.save has written zip archives since PyTorch 1.6
        raise RunError(f"{path} is not a PyTorch checkpoint (corrupt, truncated or another kind of file)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise RunError(f"{path} holds objects other than tensors and plain data, so it is "
                       f"not loaded (it could run code): {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                       f"{str(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise RunError(f"{path} is not a checkpoint of these scripts (no '{CKPT_FORMAT}' marker)")
    return ckpt


# ---------------------------------------------------------------- metrics file

class MetricsLog:
    """Per-batch metrics as CSV rows and events (epochs, warnings, evaluations)
    as JSON lines, appended and flushed as they happen."""

    def __init__(self, run_dir, keep_until=None):
        self.run_dir = Path(run_dir)
        self.csv_path, self.events_path = self.run_dir / "metrics.csv", self.run_dir / "events.jsonl"
        if keep_until is not None:
            self._truncate(keep_until)
        new = not self.csv_path.exists()
        self.csv_file = open(self.csv_path, "a", newline="")
        self.writer = csv.writer(self.csv_file)
        if new:
            self.writer.writerow(METRICS)

    def _truncate(self, step):
        """On resume: drop rows and events written after the checkpoint (a crash
        mid-epoch), so the files describe one continuous run."""
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                rows = list(csv.reader(f))
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if int(r[0]) < step])
        if self.events_path.exists():
            lines = self.events_path.read_text().splitlines()
            self.events_path.write_text("".join(line + "\n" for line in lines
                                                if json.loads(line).get("step", 0) <= step))

    def rows(self, rows):
        self.writer.writerows(rows)
        self.csv_file.flush()

    def event(self, **fields):
        with open(self.events_path, "a") as f:
            f.write(json.dumps(fields) + "\n")

    def close(self):
        self.csv_file.close()


# ---------------------------------------------------------------- the training step

def gan_step(s, real, cfg, autocast):
    """One D step then one G step on a batch of real images (N x C x H x W in
    [-1, 1]). Returns a 4-vector on the device (G loss, D loss, D accuracy on
    real, on fake) so that logging needs no host synchronisation here."""
    n, device = real.shape[0], real.device
    real_target = torch.full((n,), 1.0 - cfg["label_smoothing"], device=device)
    zeros, ones = torch.zeros(n, device=device), torch.ones(n, device=device)

    z = torch.randn(n, cfg["latent_dim"], device=device)
    with autocast:
        fake = s.gen_step(z)                                       # N x C x H x W

    # --- D step: tell real (1) from fake (0); detach so G stays frozen.
    s.opt_d.zero_grad(set_to_none=True)
    with autocast:
        logits_real = s.disc_step(real).float()                    # N
        logits_fake = s.disc_step(fake.detach()).float()           # N
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(logits_real, real_target)
                        + F.binary_cross_entropy_with_logits(logits_fake, zeros))
    s.scaler.scale(d_loss).backward()
    s.scaler.step(s.opt_d)

    # --- G step: fool the updated D, fake images labelled 1 ("flipped").
    s.opt_g.zero_grad(set_to_none=True)
    if cfg["fresh_noise"]:
        with autocast:
            fake = s.gen_step(torch.randn(n, cfg["latent_dim"], device=device))
    with autocast, s.frozen_disc():    # gradients flow through D to G, not into D's weights
        g_loss = F.binary_cross_entropy_with_logits(s.disc_step(fake).float(), ones)
    s.scaler.scale(g_loss).backward()
    s.scaler.step(s.opt_g)
    s.scaler.update()                  # one scaler, updated once after both optimizers stepped
    if s.ema is not None:   # warm-up: early on, follow the generator closely
        _ema_update(s.ema, s.gen, min(cfg["ema_decay"], (1 + s.step) / (10 + s.step)))
    s.step += 1
    with torch.no_grad():
        return torch.stack([g_loss.detach(), d_loss.detach(),
                            (logits_real > 0).float().mean(), (logits_fake < 0).float().mean()])


@torch.no_grad()
def _ema_update(ema, gen, decay):
    ema_p, gen_p = list(ema.parameters()), list(gen.parameters())
    torch._foreach_lerp_(ema_p, gen_p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), gen.buffers()):   # BN running stats: copied as they are
        b_ema.copy_(b)


# ---------------------------------------------------------------- the loop

def train_gan(state, loader, cfg, run_dir, rank=0, world=1, health=None, evaluator=None):
    """Train from state.epoch/state.batch to cfg['epochs'] epochs. Rank 0 writes
    metrics.csv and events.jsonl as it goes, grids/epoch_NNN.png and
    checkpoint.pt after every epoch, and the plots. Ctrl-C saves a checkpoint
    and the plots; a NaN/inf loss stops with Diverged, keeping the last good
    checkpoint. Returns the run folder."""
    run_dir, main = Path(run_dir), rank == 0
    device = state.fixed_noise.device
    autocast = autocast_for(cfg, device)
    log = MetricsLog(run_dir, keep_until=state.step) if main else None
    total = min(len(loader), cfg["max_batches"] or len(loader))
    budget, start, last = cfg.get("time_budget", 0) * 60, time.time(), 0.0
    progress = Progress((cfg["epochs"] - state.epoch) * total - state.batch, "step",
                        deadline=start + budget if budget else None)
    progress.first_step = state.step
    try:
        with _CtrlC() as stop:
            while state.epoch < cfg["epochs"]:
                t0 = time.time()
                if _any_rank(budget and t0 - start + last > budget, world, device):
                    if main:
                        print(f"time budget of {cfg['time_budget']:g} min reached after epoch {state.epoch}")
                        log.event(event="time_budget", epoch=state.epoch, step=state.step)
                    break
                _train_epoch(state, loader, cfg, autocast, log, progress, total, world, health, stop)
                state.epoch, state.batch = state.epoch + 1, 0   # on every rank
                last = time.time() - t0
                if main:
                    _end_epoch(state, cfg, run_dir, log, last, health, evaluator)
    except StopRequested:
        if main:
            print(f"saving checkpoint at epoch {state.epoch + 1} batch {state.batch}", flush=True)
            save_checkpoint(state.state_dict(cfg), run_dir / "checkpoint.pt")
            log.event(event="interrupted", epoch=state.epoch + 1, batch=state.batch, step=state.step)
        raise
    except KeyboardInterrupt:
        if main:
            print("quit at once: the checkpoint of the last finished epoch is kept", flush=True)
        raise
    except Diverged as e:
        if main:
            log.event(event="diverged", step=state.step, message=str(e))
        raise
    finally:
        if main:
            log.close()
            helper_plot.plot_run(run_dir)
    return run_dir


def _any_rank(flag, world, device):
    """The same decision on every torchrun rank (clocks differ slightly between them)."""
    if world == 1:
        return bool(flag)
    t = torch.tensor([float(bool(flag))], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def autocast_for(cfg, device):
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _train_epoch(state, loader, cfg, autocast, log, progress, total, world, health, stop):
    """The batches of one epoch, from state.batch on (non-zero after a mid-epoch
    resume). A first Ctrl-C ends it cleanly after the current batch."""
    device = state.fixed_noise.device
    pending, first_step = [], state.step
    for real in loader.batches(state.epoch, skip=state.batch):
        if state.batch >= total:
            break
        pending.append(gan_step(state, prepare_batch(real, cfg), cfg, autocast))
        state.batch += 1
        # Under torchrun every rank must reach the same flushes: stop only at full ones.
        if len(pending) == cfg["log_every"] or (world == 1 and stop.requested):
            _flush(pending, state, first_step, log, world, health, progress, total, cfg)
            pending, first_step = [], state.step
            if _any_rank(stop.requested, world, device):
                raise StopRequested
    if pending:
        _flush(pending, state, first_step, log, world, health, progress, total, cfg)


class StopRequested(KeyboardInterrupt):
    """Ctrl-C, handled at a batch boundary so that the checkpoint is consistent."""


class _CtrlC:
    """First Ctrl-C: finish the batch, save, exit. Second: quit at once."""

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this batch and saving (press again to quit at once)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def prepare_batch(real, cfg):
    if cfg.get("channels_last") and real.dim() == 4:
        return real.contiguous(memory_format=torch.channels_last)
    return real


def _flush(pending, state, first_step, log, world, health, progress, total, cfg):
    """Move the buffered per-batch values to the host in one transfer, write
    them, stop on NaN/inf, and print a progress line."""
    values = torch.stack(pending)                          # B x 4
    if world > 1:  # every rank logs the same mean values, so all stop together on NaN
        torch.distributed.all_reduce(values)
        values /= world
    values = values.cpu()
    n = len(values)
    rows = [[first_step + i, state.epoch + 1, state.batch - n + i + 1, *v]
            for i, v in enumerate(values.tolist())]
    bad = (~torch.isfinite(values)).any(dim=1).nonzero()
    if len(bad):
        rows = rows[: int(bad[0]) + 1]
    if log is not None:
        log.rows(rows)
        if health is not None:
            for msg in health.update(rows):
                _warn(log, state.step, state.epoch + 1, msg)
    if len(bad):
        kept = (f"the last good checkpoint (end of epoch {state.epoch}) and the plots are kept"
                if state.epoch else "the plots are kept (no epoch had finished, so no checkpoint)")
        raise Diverged(f"loss became {rows[-1][3]:.4g} (G) / {rows[-1][4]:.4g} (D) at epoch "
                       f"{state.epoch + 1} batch {rows[-1][2]}: training stopped; {kept}. "
                       f"Try lower learning rates or --amp off.")
    if log is not None:
        g, d, acc_real, acc_fake = values.mean(0).tolist()
        progress.update(state.step - progress.first_step, force=True, extra=(
            f"| epoch {state.epoch + 1}/{cfg['epochs']} batch {state.batch}/{total} | "
            f"G {g:.3f} D {d:.3f} | D acc real {acc_real:.2f} fake {acc_fake:.2f} |"))


def _warn(log, step, epoch, msg):
    print(f"warning: {msg}", flush=True)
    log.event(event="warning", step=step, epoch=epoch, message=msg)


def _end_epoch(state, cfg, run_dir, log, seconds, health, evaluator):
    """Grid of the fixed noise, health check on it, evaluation, checkpoint, plots
    after epoch `state.epoch` (1-based: the number of epochs done)."""
    epoch = state.epoch
    samples = sample(state.sampler(), state.fixed_noise)
    helper_plot.save_grid(samples, run_dir / "grids" / f"epoch_{epoch:03d}.png")
    info = {"event": "epoch", "epoch": epoch, "step": state.step, "seconds": round(seconds, 3)}
    if health is not None:
        for msg in health.check_samples(samples, epoch):
            _warn(log, state.step, epoch, msg)
        info["spread_ratio"] = round(health.last_ratio, 4)
    if evaluator is not None and cfg["eval_every"] and epoch % cfg["eval_every"] == 0:
        scores = evaluator(state.sampler())
        log.event(event="eval", epoch=epoch, step=state.step, **scores)
        print(f"eval after epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()
                                                        if isinstance(v, float)), flush=True)
    log.event(**info)
    save_checkpoint(state.state_dict(cfg), run_dir / "checkpoint.pt")
    if epoch % cfg["plot_every"] == 0:
        helper_plot.plot_run(run_dir)


@torch.no_grad()
def sample(gen, noise, batch=1000):
    """Images from noise in eval mode (dropout off, BN running statistics), so
    sampling neither changes the networks nor uses the global RNG. N x C x H x W
    in [-1, 1], float32 on the CPU."""
    was_training = gen.training
    gen.eval()
    out = torch.cat([gen(z).float().cpu() for z in noise.split(batch)])
    gen.train(was_training)
    return out


# ---------------------------------------------------------------- what main() does

def run(cfg, given, dataset):
    """Train one run as configured; bad input ends with one clear line and exit code 2."""
    try:
        rank, world, local = dist_setup()
        device = pick_device(cfg["device"], local)
        cfg, ckpt = prepare_run_dir(cfg, given, rank, world, device)
        loader = _ranked_loader(dataset, cfg, device, rank, world)  # bad data fails before any write
        run_dir = Path(cfg["out"])
        real = next(iter(loader.batches(0))).float().cpu()
        if rank == 0:
            _write_run_dir(run_dir, cfg, world, device)
            helper_plot.save_grid(real[:64], run_dir / "reals.png")
        state = build_state(cfg, ckpt, device, rank, world)
        health = evaluator = None
        if cfg["health"]:
            from helper_health import HealthMonitor
            health = HealthMonitor(real)
        if cfg["eval_every"]:
            from evaluate import make_evaluator
            evaluator = make_evaluator(dataset, cfg)
        train_gan(state, loader, cfg, run_dir, rank, world, health, evaluator)
        if rank == 0:
            print(f"done: {run_dir} (plots, grids/, checkpoint.pt)")
    except (DataError, RunError) as e:
        _exit(f"error: {_one_line(e)}", 2)
    except Diverged as e:
        _exit(f"error: {e}", 1)
    except KeyboardInterrupt:
        _exit(f"stopped; continue with: --resume --out {cfg['out']}", 130)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _one_line(error):
    """A DataLoader worker's error arrives wrapped in its traceback: keep the original message."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in str(error):
        return lines[-1].split(": ", 1)[-1]
    return str(error)


def _exit(msg, code):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(code)


RUN_FILES = ["config.json", "metrics.csv", "events.jsonl", "checkpoint.pt", "reals.png",
             "loss.png", "accuracy.png", "progress.png", "final_grid.png", "real_vs_fake.png"]


def prepare_run_dir(cfg, given, rank, world, device):
    """Refuse to overwrite a run silently; on --resume merge the run's saved
    config with the flags that may change. Writes nothing. Returns (config,
    checkpoint or None)."""
    out = Path(cfg["out"])
    ckpt = None
    if cfg["resume"]:
        ckpt = load_checkpoint(out, device)
        ignored = sorted(k for k in given - RESUMABLE - {"resume", "out"} if cfg[k] != ckpt["config"].get(k))
        if ignored and rank == 0:
            print(f"note: on --resume the run's own settings are kept; ignoring "
                  + ", ".join("--" + k.replace("_", "-") for k in ignored))
        cfg = {**cfg, **ckpt["config"], **{k: cfg[k] for k in given & RESUMABLE},
               "resume": True, "out": cfg["out"]}   # the folder as it is now, even if moved
    elif any((out / f).exists() for f in RUN_FILES[:4]):
        if not cfg["overwrite"]:
            raise RunError(f"{out} already holds a run: add --resume to continue it, "
                           f"--overwrite to replace it, or choose another --out")
    if world > 1:
        torch.distributed.barrier()   # every rank has looked before rank 0 writes
    if cfg["batch_size"] % world:
        raise RunError(f"--batch-size {cfg['batch_size']} must be divisible by the "
                       f"{world} torchrun processes")
    cfg["channels_last"] = resolve_channels_last(cfg)
    return cfg, ckpt


def resolve_channels_last(cfg):
    if cfg.get("channels_last") is None:   # default: on for conv nets (faster with cuDNN and oneDNN)
        return cfg["model"] == "dcgan"
    return bool(cfg["channels_last"])


def _write_run_dir(out, cfg, world, device):
    out.mkdir(parents=True, exist_ok=True)
    if cfg["overwrite"] and not cfg["resume"]:
        for f in RUN_FILES:
            (out / f).unlink(missing_ok=True)
        for f in (out / "grids").glob("epoch_*.png"):
            f.unlink()
    info = {**cfg, "world_size": world, "device_used": str(device), "torch": torch.__version__,
            "batch_per_process": cfg["batch_size"] // world}
    (out / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    print("config:", json.dumps(info, indent=None), flush=True)


def build_state(cfg, ckpt, device, rank=0, world=1):
    torch.manual_seed(cfg["seed"] + rank)   # ranks draw different noise; DDP syncs the weights
    random.seed(cfg["seed"] + rank)
    gen, disc = build_models(cfg)
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    gen, disc = gen.to(device, memory_format=fmt), disc.to(device, memory_format=fmt)
    state = GANState(gen, disc, cfg, device)
    if ckpt is not None:
        state.load_state_dict(ckpt)
        if rank == 0:
            print(f"resuming at epoch {state.epoch + 1}, batch {state.batch}", flush=True)
    state.wrap(cfg, device, world)
    if device.type == "cuda":   # fixed input shapes: cuDNN's timed choice pays off after a few steps
        torch.backends.cudnn.benchmark = cfg.get("cudnn_benchmark", True)
    return state


def _ranked_loader(dataset, cfg, device, rank, world):
    """Each rank gets its shard; rank 0 builds any decode cache before the others read it."""
    local = {**cfg, "batch_size": cfg["batch_size"] // world}
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    loader = make_loader(dataset, local, device, rank, world)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    return loader

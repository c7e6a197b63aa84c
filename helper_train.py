"""The GAN training loop of the lecture, shared by both scripts.

One step, per batch of real images x (N x C x H x W in [-1, 1]):
  1. fake = G(z), z ~ N(0, 1)                       (N x latent noise)
  2. D step: 0.5 * (BCE(D(x), 1) + BCE(D(fake.detach()), 0)), one backward,
     D optimizer step. detach: this step must not reach G.
  3. G step: BCE(D(fake), 1), the "flipped" labels: G wants its fakes called
     real. Backward through D into G, G optimizer step only.
Each optimizer holds only its own network's parameters. D outputs logits, so
the loss is BCE *with logits*.

With --conditional each batch comes with its class labels y, and every call
of G and D gets them as a second argument (gan_step's `c`): G(z, y) draws
fakes of the real batch's classes, D(x, y) scores an image as an image of
class y. Nothing else in the step changes.

Read top to bottom: `gan_step` (the step above), `train_gan` (the loop over
epochs and batches, with logging, grids and checkpoints), then what they use:
the training state (the networks and their two Adams) and the metrics file.
The loop knows a loader only by len() and batches(epoch, skip). What a config
and a checkpoint may hold, and how they are saved and opened, is in
helper_checkpoint.py; the command line, run folders and torchrun in
helper_cli.py.
"""
import contextlib
import copy
import csv
import json
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path

import torch

import helper_losses as losses
import helper_plot
import helper_schedule as schedule
from helper_augment import diff_augment
from helper_checkpoint import CKPT_FORMAT, networks, save_checkpoint
from helper_files import Progress, append_event, atomic_write, metric_rows, read_events
from helper_tensorboard import open_writer
from models import GRID_CLASSES, class_grid, sample


# ---------------------------------------------------------------- the step

def gan_step(s, real, cfg, autocast, labels=None):
    """One D step, then (every cfg["n_critic"]-th batch) one G step, on a batch
    of real images (N x C x H x W in [-1, 1]) and, when conditional, their
    class labels (int64 N). Returns a 4-vector on the device (G loss, D loss,
    D accuracy on real, on fake), so that logging needs no host
    synchronisation here. With the lecture's settings (bce, n_critic 1, no
    augmentation or penalty) this is exactly the step in the module docstring."""
    n, device, kind = real.shape[0], real.device, cfg["loss"]
    augment = lambda x: diff_augment(x, cfg["diffaug"])   # noqa: E731  (x itself without --diffaug)
    c = () if labels is None else (labels,)   # the conditioning: the classes, for every G and D call

    hyper = schedule.at_step(cfg, s.step)   # lr, beta2, R1/R2 gamma: cfg's, or on --cosine's curve
    schedule.set_optimizers(s.opt_g, s.opt_d, cfg, hyper)

    z = torch.randn(n, cfg["latent_dim"], device=device)
    with autocast:
        fake = s.gen_step(z, *c)                                   # N x C x H x W

    # --- D step: tell real (1) from fake (0); detach so G stays frozen.
    s.opt_d.zero_grad(set_to_none=True)
    with autocast:
        logits_real = s.disc_step(augment(real), *c).float()           # N
        logits_fake = s.disc_step(augment(fake.detach()), *c).float()  # N
        d_loss = losses.d_loss(kind, logits_real, logits_fake, 1.0 - cfg["label_smoothing"])
    s.scaler.scale(d_loss + penalties(s, real, fake, cfg, hyper, c)).backward()
    s.scaler.step(s.opt_d)
    if kind == "wgan":   # keep the critic Lipschitz by clipping its weights
        losses.clip_weights_(s.disc, cfg["clip"])

    # --- G step: fool the updated D, fake images labelled 1 ("flipped").
    if (s.step + 1) % cfg["n_critic"] == 0:
        s.opt_g.zero_grad(set_to_none=True)
        if cfg["fresh_noise"]:   # the lecture's open question: a new noise batch for the G step
            with autocast:
                fake = s.gen_step(torch.randn(n, cfg["latent_dim"], device=device), *c)
        with autocast, s.frozen_disc():    # gradients flow through D to G, not into D's weights
            logits_g = s.disc_step(augment(fake), *c).float()
            with torch.no_grad():          # rpgan: the paired real scores, constants for G
                paired = s.disc_step(augment(real), *c).float() if kind == "rpgan" else None
            g_loss = losses.g_loss(kind, logits_g, paired)
        s.scaler.scale(g_loss).backward()
        s.scaler.step(s.opt_g)
        if s.ema is not None:   # warm-up: early on, follow the generator closely
            ema_update(s.ema, s.gen, min(cfg["ema_decay"], (1 + s.step) / (10 + s.step)))
    else:   # no G step on this batch: log the loss G has on it, from the D step's scores
        g_loss = losses.g_loss(kind, logits_fake, logits_real)
    s.scaler.update()                  # one scaler, updated once after both optimizers stepped
    s.step += 1
    acc_real, acc_fake = losses.d_accuracy(kind, logits_real, logits_fake)
    return torch.stack([g_loss.detach(), d_loss.detach(), acc_real, acc_fake])


def penalties(s, real, fake, cfg, hyper, c=()):
    """The D step's regularisers, 0 without them: the WGAN-GP gradient penalty,
    and R1 on real / R2 on fake images (gamma from `hyper`, this step's values),
    applied lazily every R1_EVERY steps with their weight scaled up to match (as
    StyleGAN2 does). All on the plain D (not the DDP or compiled wrapper: no
    compiled double backward), in float32; R2's fakes are detached (D only).
    c: the batch's conditioning, () or (labels,): D's slope at each image of its class."""
    disc = (lambda x: s.disc(x, *c)) if c else s.disc
    total = 0.0
    if cfg["loss"] == "wgan-gp":
        total = losses.gradient_penalty(disc, real, fake, cfg["gp_weight"])
    if cfg["r1"] and s.step % R1_EVERY == 0:
        total = total + losses.r1_penalty(disc, real, hyper["r1"] * R1_EVERY)
    if cfg["r2"] and s.step % R1_EVERY == 0:
        total = total + losses.r2_penalty(disc, fake, hyper["r2"] * R1_EVERY)
    return total


R1_EVERY = 16


# ---------------------------------------------------------------- the loop

def train_gan(state, loader, cfg, run_dir, rank=0, world=1, health=None, evaluator=None):
    """Train from state.epoch / state.batch up to cfg["epochs"] epochs.

    Rank 0 appends every batch's losses to metrics.csv and events to
    events.jsonl, and after every epoch writes grids/epoch_NNN.png (the fixed
    noise through G) and checkpoint.pt, and redraws the plots. Returns how the
    run ended: "finished"; "time_budget" (--time-budget ran out) and
    "interrupted" (Ctrl-C or SIGTERM): the current batch was finished and a
    checkpoint saved there, mid-epoch if need be; "diverged" (a loss became NaN or
    infinite: the last epoch's checkpoint is kept). A second Ctrl-C raises
    KeyboardInterrupt at once, also keeping the last epoch's checkpoint."""
    main, device, run_dir = rank == 0, state.device, Path(run_dir)
    autocast = autocast_for(cfg, device)
    log = MetricsLog(run_dir, state.step, cfg) if main else None
    if main:   # for the report: where and from which point this part of the run trained
        log.event(event="start", step=state.step, epoch=state.epoch, resumed=state.step > 0,
                  host=platform.node(), device=str(device), torch=torch.__version__)
    per_epoch = batches_per_epoch(loader, cfg)
    budget, start = cfg["time_budget"] * 60, time.time()
    progress = Progress((cfg["epochs"] - state.epoch) * per_epoch - state.batch, every_s=10,
                        deadline=start + budget if budget else None)
    first_step, pending = state.step, []   # pending: per-batch values not yet on the host
    epoch_sum = torch.zeros(5)             # G, D, acc real, acc fake, batches: this epoch's means

    def flush():
        """Copy the pending values to the host in one transfer and log them.
        Returns "diverged" when a loss is NaN or infinite, else None."""
        if not pending:
            return None
        values = torch.stack(pending)                       # B x 4
        pending.clear()
        if world > 1:   # every rank logs the same means, so all stop together on NaN
            torch.distributed.all_reduce(values)
            values /= world
        values = values.cpu()
        rows, message = log_rows(values, state, log, health, cfg)
        epoch_sum.add_(torch.cat([values.sum(0), torch.tensor([float(len(values))])]))
        if message is None and main:   # at most a line every 10 s; the run's first batch at once
            progress.update(state.step - first_step, f"epoch {state.epoch + 1}/{cfg['epochs']} batch "
                            f"{state.batch}/{per_epoch} | {means(values.mean(0))}",
                            force=len(rows) == state.step - first_step)
        return None if message is None else "diverged"

    def end_epoch(seconds, rank_rngs):
        """Grid of the fixed noise, health check on it, evaluation, checkpoint, plots."""
        epoch, samples = state.epoch, fixed_samples(state)
        helper_plot.save_grid(samples, run_dir / "grids" / f"epoch_{epoch:03d}.png",
                              row_labels=grid_rows(cfg))
        info = {"epoch": epoch, "step": state.step, "seconds": round(seconds, 3)}
        if health is not None:
            ratio, messages = health.check_samples(samples, epoch)
            for msg in messages:
                log.warn(msg, step=state.step - 1, epoch=epoch)
            info["spread_ratio"] = round(ratio, 4)
        if evaluator is not None and cfg["eval_every"] and epoch % cfg["eval_every"] == 0:
            scores = evaluator(state.sampler())
            log.scores(epoch, state.step, scores)
            print(f"eval after epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()),
                  flush=True)
        log.epoch(samples, **info)
        save_checkpoint(state.state_dict(cfg, rank_rngs), run_dir / "checkpoint.pt")
        if epoch % cfg["plot_every"] == 0:
            helper_plot.plot_run(run_dir)
        print(f"epoch {epoch}/{cfg['epochs']} in {seconds:.1f} s | {means(epoch_sum[:4] / epoch_sum[4])} | "
              f"{progress.times(state.step - first_step)}", flush=True)
        epoch_sum.zero_()

    def run_epoch(stop):
        """The rest of this epoch's batches. Returns "diverged" or "interrupted"
        when it stopped early, else None."""
        for batch in loader.batches(state.epoch, skip=state.batch):
            if state.batch == per_epoch:
                break
            real, labels = split_batch(batch)
            pending.append(gan_step(state, prepare_batch(real, cfg), cfg, autocast, labels))
            state.batch += 1
            if budget and time.time() - start > budget:   # --time-budget: stop as Ctrl-C does
                stop.request("time_budget")
            # Under torchrun every rank must reach the same flushes: stop only at full ones.
            # The run's first batch is flushed at once, so a slow run shows life early.
            if (len(pending) == cfg["log_every"] or state.step == first_step + 1
                    or (world == 1 and stop.reason)):
                if flush():
                    return "diverged"
                reason = any_rank_reason(stop.reason, world, device)
                if reason:
                    return reason
        return flush()

    def ended(status):
        # a collective: every rank stops together for these two (any_rank_reason), not on "quit"
        rank_rngs = rank_rng_states(world) if status in ("interrupted", "time_budget") else None
        if main:
            end_run(status, state, cfg, run_dir, log, rank_rngs)
        return status

    try:
        with StopSignals(on_quit=lambda: ended("quit")) as stop:
            while state.epoch < cfg["epochs"]:
                epoch_start = time.time()
                status = run_epoch(stop)
                if status:
                    return ended(status)
                state.epoch, state.batch = state.epoch + 1, 0   # on every rank
                rank_rngs = rank_rng_states(world)
                if main:
                    end_epoch(time.time() - epoch_start, rank_rngs)
            return ended("finished")
    finally:
        if main:
            log.close()
            helper_plot.plot_run(run_dir)


def batches_per_epoch(loader, cfg):
    """The loader's batches, or --max-batches of them when that is set (not 0)."""
    return min(len(loader), cfg["max_batches"] or len(loader))


def means(values):
    """'G 1.234 D 0.567 | D acc real 0.81 fake 0.77' from a 4-vector of means."""
    g, d, acc_real, acc_fake = values.tolist()
    return f"G {g:.3f} D {d:.3f} | D acc real {acc_real:.2f} fake {acc_fake:.2f}"


def end_run(status, state, cfg, run_dir, log, rank_rngs=None):
    """What rank 0 does when the loop ends without an exception."""
    if status in ("interrupted", "time_budget"):
        if status == "time_budget":
            print(f"time budget of {cfg['time_budget']:g} min reached", flush=True)
        print(f"saving checkpoint at epoch {state.epoch + 1} batch {state.batch}", flush=True)
        save_checkpoint(state.state_dict(cfg, rank_rngs), run_dir / "checkpoint.pt")
        log.event(event=status, epoch=state.epoch + 1, batch=state.batch, step=state.step)
    elif status == "quit":   # a second Ctrl-C or SIGTERM, mid-batch: helper_cli.run says what is kept
        log.event(event="interrupted", epoch=state.epoch + 1, batch=state.batch, step=state.step,
                  message="quit at once (a second signal): the last finished epoch's checkpoint is kept")


def log_rows(values, state, log, health, cfg):
    """values: B x 4 on the CPU, the batches just finished. Writes them as
    metrics rows (rank 0, log not None), runs the health checks on them, and
    stops at a NaN/inf row. Returns (rows, error message or None)."""
    n = len(values)
    rows = [[state.step - n + i, state.epoch + 1, state.batch - n + i + 1, *v]
            for i, v in enumerate(values.tolist())]
    bad = (~torch.isfinite(values)).any(dim=1).nonzero()
    if len(bad):
        rows = rows[: int(bad[0]) + 1]
    if log is not None:
        log.rows(rows)
        for msg in health.update(rows) if health is not None else []:
            log.warn(msg, step=msg.step, epoch=state.epoch + 1)
    if not len(bad):
        return rows, None
    kept = (f"the last good checkpoint (end of epoch {state.epoch}) and the plots are kept"
            if state.epoch else "the plots are kept (no epoch had finished, so no checkpoint)")
    message = (f"loss became {rows[-1][3]:.4g} (G) / {rows[-1][4]:.4g} (D) at epoch "
               f"{state.epoch + 1} batch {rows[-1][2]}: training stopped; {kept}. "
               f"{next_try(state, cfg)}")
    if log is not None:
        log.event(event="diverged", step=state.step, message=message)
        print(f"error: {message}", file=sys.stderr, flush=True)
    return rows, message


def next_try(state, cfg):
    """After a divergence: the command line that retries with halved learning
    rates (from the last checkpoint when there is one; a resumed run takes them)."""
    how = "--resume" if (Path(cfg["out"]) / "checkpoint.pt").is_file() else "--overwrite"
    amp = " --amp off" if amp_dtype(cfg, state.device) is not None else ""
    return (f"Try lower learning rates: {how} --out {cfg['out']} --lr-gen {cfg['lr_gen'] / 2:.3g} "
            f"--lr-disc {cfg['lr_disc'] / 2:.3g}{amp}")


class StopSignals:
    """First Ctrl-C (SIGINT) or SIGTERM (what `timeout`, docker stop and batch
    schedulers send): finish the batch, save, stop (exit code 130 for both, the
    code of an interrupted run). Second: quit at once (KeyboardInterrupt), after
    on_quit() has recorded it. The loop asks for the same stop as the first
    signal when --time-budget runs out (request("time_budget")). `reason`:
    None, "time_budget" or "interrupted" (a signal wins over the budget)."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    REASONS = (None, "time_budget", "interrupted")   # in rising precedence

    def __init__(self, on_quit=lambda: None):
        self.on_quit = on_quit

    def __enter__(self):
        self.reason, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():   # handlers live there only
            self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def request(self, reason):
        if self.REASONS.index(reason) > self.REASONS.index(self.reason):
            self.reason = reason

    def _handler(self, signum, frame):
        if self.reason == "interrupted":
            raise KeyboardInterrupt
        self.request("interrupted")
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this batch and saving (Ctrl-C again quits at once)",
              file=sys.stderr, flush=True)

    def __exit__(self, kind, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        if kind is KeyboardInterrupt:
            self.on_quit()
        return False


def any_rank_reason(reason, world, device):
    """The same stop reason on every torchrun rank (clocks differ slightly
    between them): the strongest any rank has (StopSignals.REASONS)."""
    if world == 1:
        return reason
    t = torch.tensor([float(StopSignals.REASONS.index(reason))], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return StopSignals.REASONS[int(t.item())]


def split_batch(batch):
    """A loader's batch as (images, labels): labels None when unconditional."""
    return batch if isinstance(batch, tuple) else (batch, None)


def prepare_batch(real, cfg):
    """The batch in the networks' memory format (NHWC with channels_last)."""
    if cfg["channels_last"] and real.dim() == 4:
        return real.contiguous(memory_format=torch.channels_last)
    return real


def fixed_samples(state):
    """The fixed noise through the sampling generator: 64 images, or from a
    conditional one its class grid (models.class_grid, 8 columns)."""
    gen = state.sampler()
    if gen.num_classes:
        return class_grid(gen, state.fixed_noise)
    return sample(gen, state.fixed_noise)


def grid_rows(cfg):
    """The row labels of the fixed-noise grids: the class names when conditional, else None."""
    return cfg["classes"][:GRID_CLASSES] if cfg["conditional"] else None


def amp_dtype(cfg, device):
    """None (full precision), torch.bfloat16 or torch.float16."""
    amp = cfg["amp"]
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast_for(cfg, device):
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def ema_update(ema, gen, decay):
    ema_p, gen_p = list(ema.parameters()), list(gen.parameters())
    torch._foreach_lerp_(ema_p, gen_p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), gen.buffers()):   # BN running stats: copied as they are
        b_ema.copy_(b)


# ---------------------------------------------------------------- the training state

class GANState:
    """Everything a run needs to continue: networks, optimizers, scaler, EMA,
    fixed noise and the position (epoch, batch within it, global step)."""

    def __init__(self, gen, disc, cfg, device):
        self.gen, self.disc, self.device = gen, disc, device   # the plain modules (what checkpoints hold)
        betas = (cfg["beta1"], cfg["beta2"])
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
            ids = [device.index] if device.type == "cuda" else None
            gen = torch.nn.parallel.DistributedDataParallel(gen, device_ids=ids)
            disc = torch.nn.parallel.DistributedDataParallel(disc, device_ids=ids)
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

    def state_dict(self, cfg, rank_rngs=None):
        """rank_rngs: under torchrun, every rank's RNG state (rank_rng_states), so
        that each rank resumes its own noise; rank 0's is "rng", taken now."""
        return {"format": CKPT_FORMAT, "config": cfg, "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "gen": self.gen.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "fixed_noise": self.fixed_noise.cpu(), "rng": _rng_state(), "rank_rngs": rank_rngs}

    def load_state_dict(self, ckpt, rank=0):
        self.gen.load_state_dict(ckpt["gen"])
        self.disc.load_state_dict(ckpt["disc"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        if ckpt["scaler"]:   # {} when saved without fp16: resumed with --amp fp16, a fresh scale
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.fixed_noise = ckpt["fixed_noise"].to(self.fixed_noise.device)
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        rank_rngs = ckpt.get("rank_rngs") or []   # None before torchrun runs saved them
        _set_rng_state(rank_rngs[rank] if 0 < rank < len(rank_rngs) else ckpt["rng"])


def build_state(cfg, device, ckpt=None, rank=0, world=1):
    """Seeded networks on `device` in cfg's memory format, their optimizers, and
    the checkpoint's weights and position when resuming."""
    torch.manual_seed(cfg["seed"] + rank)   # ranks draw different noise; DDP syncs the weights
    random.seed(cfg["seed"] + rank)
    gen, disc = networks(cfg)
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    state = GANState(gen.to(device, memory_format=fmt), disc.to(device, memory_format=fmt), cfg, device)
    if ckpt is not None:
        state.load_state_dict(ckpt, rank)
        for opt, lr in ((state.opt_g, cfg["lr_gen"]), (state.opt_d, cfg["lr_disc"])):
            for group in opt.param_groups:   # the checkpoint's rates, unless --resume changed them
                group["lr"] = lr
    state.wrap(cfg, device, world)
    return state


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


def rank_rng_states(world):
    """Every rank's RNG states, gathered on every rank (None in one process)."""
    if world == 1:
        return None
    states = [None] * world
    torch.distributed.all_gather_object(states, _rng_state())
    return states


def _rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---------------------------------------------------------------- metrics file

METRICS = ["step", "epoch", "batch", "g_loss", "d_loss", "d_acc_real", "d_acc_fake"]


class MetricsLog:
    """Per-batch metrics as CSV rows and events (epochs, warnings, evaluations)
    as JSON lines, appended and flushed as they happen; mirrored to TensorBoard
    (RUN/tb/) with --tensorboard."""

    def __init__(self, run_dir, step, cfg):
        """step: the number of batches already done (a resumed run's checkpoint)."""
        self.run_dir = Path(run_dir)
        self.csv_path, self.events_path = self.run_dir / "metrics.csv", self.run_dir / "events.jsonl"
        self._truncate(step)
        new = not self.csv_path.exists()
        self.csv_file = open(self.csv_path, "a", newline="")
        self.writer = csv.writer(self.csv_file)
        if new:
            self.writer.writerow(METRICS)
        self.tb = None
        if cfg["tensorboard"]:
            self.tb = open_writer(self.run_dir, step if step else None)
            self.tb.config(cfg, step)

    def _truncate(self, step):
        """On resume: drop rows and events written after the checkpoint (a crash
        mid-epoch), so the files describe one continuous run."""
        if self.csv_path.exists():   # a torn last row goes too (metric_rows skips it)
            header, rows = metric_rows(self.csv_path)
            with atomic_write(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([header or METRICS] + [r for r in rows if float(r[0]) < step])
        if self.events_path.exists():
            kept = [e for e in read_events(self.run_dir) if e.get("step", 0) <= step]
            with atomic_write(self.events_path) as tmp:
                tmp.write_text("".join(json.dumps(e) + "\n" for e in kept))

    def rows(self, rows):
        self.writer.writerows(rows)
        self.csv_file.flush()
        if self.tb:
            self.tb.rows(rows)

    def event(self, **fields):
        append_event(self.run_dir, **fields)

    def warn(self, message, step, epoch):
        """A HealthMessage about batch `step` (its metrics.csv step)."""
        print(f"{'recovered' if message.ended else 'warning'}: {message}", flush=True)
        self.event(event="warning", message=str(message), step=step, epoch=epoch, ended=message.ended)
        if self.tb:
            self.tb.text("health", message, step)

    def epoch(self, samples, **fields):
        """The end-of-epoch event; TensorBoard also gets its time and the fixed-noise grid."""
        self.event(event="epoch", **fields)
        if self.tb:
            self.tb.epoch(fields["epoch"], fields["step"] - 1, fields["seconds"], samples)

    def scores(self, epoch, step, scores):
        self.event(event="eval", epoch=epoch, step=step, **scores)
        if self.tb:
            self.tb.scores(epoch, scores)

    def close(self):
        self.csv_file.close()
        if self.tb:
            self.tb.close()

"""Training-health monitor: cheap checks on the logged losses and on the
fixed-noise samples, reported as warnings (console, events.jsonl, red marks on
loss.png). It only reads what train_gan already has, so it never changes training.
The loss checks can be replayed on any run folder's metrics.csv:

    python helper_health.py runs/celeba_dcgan

Checks and thresholds (module constants, documented in the README):
- discriminator dominance: D loss, averaged over the last WINDOW batches, below
  D_LOSS_FLOOR. Reported when the episode starts and when it ends (the mean
  back above HYSTERESIS x D_LOSS_FLOOR).
- generator runaway: G loss, averaged likewise, above G_LOSS_CEILING (D tells
  fakes apart with probability > 1 - e^-6); ends below G_LOSS_CEILING / HYSTERESIS.
- stalled losses: both losses' spread (std) over the last FLAT_WINDOW batches
  below FLAT_STD: nothing is learning any more.
- diversity collapse: after each epoch, the spread of the 64 fixed-noise samples
  (per-pixel std across samples, averaged) falls below SPREAD_RATIO times the
  spread of a batch of real images: the generator maps different noise to
  (nearly) the same image. Reported when it starts and when it recovers;
  checked from COLLAPSE_AFTER batches on (a DCGAN sampled in eval mode looks
  uniform until BatchNorm's running statistics have settled).
"""
import argparse
from collections import deque
from pathlib import Path

import numpy as np

from helper_files import read_events, read_metrics

WINDOW = 10            # batches averaged for the dominance and runaway checks
D_LOSS_FLOOR = 0.05    # healthy runs here sit around 0.3-0.7
G_LOSS_CEILING = 6.0   # healthy runs here sit around 0.7-3
HYSTERESIS = 2.0       # an episode ends only well clear of its threshold (D > 0.1, G < 3), not on every wobble
FLAT_WINDOW = 200
FLAT_STD = 1e-4
SPREAD_RATIO = 0.2
COLLAPSE_AFTER = 200   # batches before the diversity check: BN running statistics need time


def spread(images):
    """Diversity of a batch N x C x H x W: per-pixel std across the batch, averaged."""
    return float(images.float().std(dim=0).mean())


class HealthMessage(str):
    """A warning's text, with .step: the batch (metrics.csv step) at which the
    condition began or ended, for the loss checks; the epoch for the sample
    check; and .ended: True when it reports a recovery, not a problem."""

    def __new__(cls, text, step, ended):
        message = super().__new__(cls, text)
        message.step, message.ended = step, ended
        return message


class _Episode:
    """A condition that starts and ends; reports each change once."""

    def __init__(self, start_msg, end_msg):
        self.start_msg, self.end_msg, self.since = start_msg, end_msg, None

    def update(self, start, end, step, **values):
        """start: the condition that opens an episode; end: the one that closes it."""
        if start and self.since is None:
            self.since = step
            return [HealthMessage(self.start_msg.format(step=step, **values), step, ended=False)]
        if end and self.since is not None:
            msg = self.end_msg.format(step=step, since=self.since, batches=step - self.since, **values)
            self.since = None
            return [HealthMessage(msg, step, ended=True)]
        return []


class _RunningStats:
    """Mean and std (as np.std) of the last n rows in O(1) per row: np.std over
    the whole window after every batch was most of the monitor's cost."""

    def __init__(self, n):
        self.rows = deque(maxlen=n)
        self.sum, self.sum_sq = np.zeros(2), np.zeros(2)

    def append(self, row):
        row = np.asarray(row, dtype=np.float64)
        if self.full():
            old = self.rows[0]
            self.sum -= old
            self.sum_sq -= old * old
        self.rows.append(row)
        self.sum += row
        self.sum_sq += row * row

    def full(self):
        return len(self.rows) == self.rows.maxlen

    def std(self):
        mean = self.sum / len(self.rows)
        return np.sqrt(np.clip(self.sum_sq / len(self.rows) - mean * mean, 0, None))


class HealthMonitor:
    def __init__(self, real, loss_checks=True):
        """real: a batch of real images N x C x H x W, the scale for sample
        diversity (None: loss checks only). loss_checks: the dominance and
        runaway thresholds are BCE values, so they are off for other losses
        (a WGAN critic's loss has no fixed scale); stalled losses and sample
        collapse are checked for every loss."""
        self.loss_checks = loss_checks
        self.real_spread = spread(real) if real is not None else None
        self.short = deque(maxlen=WINDOW)          # (g_loss, d_loss) of the last batches
        self.long = _RunningStats(FLAT_WINDOW)
        self.batches = 0
        self.d_dominates = _Episode(
            "discriminator dominates from step {step}: D loss {d:.4f}, G loss {g:.2f} "
            "(mean of the last %d batches; D loss < %g)" % (WINDOW, D_LOSS_FLOOR),
            "discriminator dominance ended at step {step} after {batches} batches "
            "(D loss {d:.4f}, G loss {g:.2f})")
        self.g_runaway = _Episode(
            "generator loss runs away from step {step}: G loss {g:.2f} "
            "(mean of the last %d batches; > %g)" % (WINDOW, G_LOSS_CEILING),
            "generator loss back to {g:.2f} at step {step} after {batches} batches")
        self.flat = _Episode(
            "losses stopped changing at step {step} (std < %g over %d batches)" % (FLAT_STD, FLAT_WINDOW),
            "losses move again at step {step}")
        self.collapse = _Episode(
            "sample diversity collapsed after epoch {epoch}: spread of the fixed-noise samples "
            "{ratio:.3f} of the real images' (< %g): near-identical samples (mode collapse)" % SPREAD_RATIO,
            "sample diversity recovered after epoch {epoch} (spread ratio {ratio:.3f})")

    def update(self, rows):
        """rows: [step, epoch, batch, g_loss, d_loss, acc_real, acc_fake] per batch.
        Returns warning messages (usually none)."""
        messages = []
        for step, _, _, g, d, *_ in rows:
            self.short.append((g, d))
            self.long.append((g, d))
            self.batches += 1
            if self.loss_checks and len(self.short) == WINDOW:
                g_avg, d_avg = np.mean(self.short, axis=0)
                messages += self.d_dominates.update(d_avg < D_LOSS_FLOOR, d_avg > D_LOSS_FLOOR * HYSTERESIS,
                                                    int(step), d=d_avg, g=g_avg)
                messages += self.g_runaway.update(g_avg > G_LOSS_CEILING, g_avg < G_LOSS_CEILING / HYSTERESIS,
                                                  int(step), d=d_avg, g=g_avg)
            if self.long.full():
                stalled = bool(self.long.std().max() < FLAT_STD)
                messages += self.flat.update(stalled, not stalled, int(step))
        return messages

    def check_samples(self, samples, epoch):
        """samples: the fixed-noise images after `epoch`. Returns (their spread
        over the real images' spread, warnings)."""
        ratio = spread(samples) / max(self.real_spread, 1e-8)
        return ratio, self._check_ratio(ratio, epoch)

    def _check_ratio(self, ratio, epoch):
        if self.batches < COLLAPSE_AFTER:
            return []
        return self.collapse.update(ratio < SPREAD_RATIO, ratio > SPREAD_RATIO * HYSTERESIS, epoch,
                                    epoch=epoch, ratio=ratio)

    def restore(self, run_dir, step):
        """On resume from the checkpoint at `step`: pass the run's history before
        it (metrics.csv's rows, the epochs' spread ratios in events.jsonl) through
        the checks, saying nothing, so that a problem already reported and still
        going on is not reported again as new."""
        rows = _loss_rows(run_dir)
        rows, done = rows[rows[:, 0] < step], 0
        for e in read_events(run_dir, "epoch"):
            if e.get("step", step + 1) <= step:
                end = int(np.searchsorted(rows[:, 0], e["step"]))   # the rows of this epoch and before
                self.update(rows[done:end].tolist())
                done = end
                if "spread_ratio" in e:
                    self._check_ratio(e["spread_ratio"], e["epoch"])
        self.update(rows[done:].tolist())


def _loss_rows(run_dir):
    """metrics.csv's step, epoch, batch, g_loss and d_loss columns, rows x 5 (0 rows without any)."""
    m = read_metrics(run_dir)
    if not m:
        return np.zeros((0, 5))
    return np.stack([m[k] for k in ("step", "epoch", "batch", "g_loss", "d_loss")], axis=1)


def replay(run_dir):
    """The loss checks' warnings for a run folder, from its metrics.csv."""
    return HealthMonitor(real=None).update(_loss_rows(run_dir).tolist())


def main(argv=None):
    p = argparse.ArgumentParser(description="Replay the loss checks on a run folder's metrics.csv.",
                                allow_abbrev=False)
    p.add_argument("run_dir", help="a run folder (holding metrics.csv)")
    run_dir = Path(p.parse_args(argv).run_dir)
    if not (run_dir / "metrics.csv").is_file():
        p.error(f"{run_dir} is not a run folder (no metrics.csv there)")
    for message in replay(run_dir) or ["no warnings"]:
        print(message)


if __name__ == "__main__":
    main()

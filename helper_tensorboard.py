"""Optional TensorBoard logging of a run into RUN/tb/ (needs `pip install tensorboard`):

    python train_mnist_gan.py --out runs/mnist_gan --tensorboard
    tensorboard --logdir runs --samples_per_plugin images=1000   # every epoch's grid, not 10

What goes where (the step axis of each tag):
- loss/generator, loss/discriminator, accuracy/real, accuracy/fake: one point
  per batch at its metrics.csv step (0-based);
- samples/fixed_noise (the fixed-noise grid), time/epoch_seconds, eval/<name>:
  one point per epoch at step = epoch (1-based), so the image slider reads in epochs;
- progress/epoch: the epoch at the step of its last batch, to go from one axis to the other;
- text (config, health warnings): at the step the caller gives.

Resuming: a run continued from a checkpoint taken after `resume_step` batches
opens the writer with purge_step=resume_step. The event readers in Python
(EventAccumulator, `tensorboard --load_fast=false`) then hide every event of
this folder with a step >= resume_step written before, by the run that went on
past its checkpoint, so the curves go on with no step twice. A fresh run purges
from step 0: leftovers of an overwritten run do not show. The purge uses one
step number for all tags, so an epoch-axis point is kept while its epoch <
resume_step, i.e. whenever epochs have more than one batch. TensorBoard's
default fast loader ignores the purge marker and instead drops, tag by tag,
the old points at or after each step written again: the same curves, but a
text (warning) of the lost steps stays until its tag is written again.
Write a tag's points in increasing steps, one per step (that loader keeps only
the last of several points at one step).
"""
import json
import numbers
from pathlib import Path

import torch
from helper_report import grid_image

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install tensorboard"
ROW_TAGS = ("loss/generator", "loss/discriminator", "accuracy/real", "accuracy/fake")
ROW_LEN = 7  # step, epoch, batch, g_loss, d_loss, d_acc_real, d_acc_fake (metrics.csv)


class TensorBoardMissing(ImportError):
    """--tensorboard was asked for but the package is not installed."""


def require():
    """Raise TensorBoardMissing now, before a run writes anything, if the package is absent."""
    _summary_writer()


def _summary_writer():
    # The one import inside a function: tensorboard is an optional extra, so a
    # run without --tensorboard must not need it (torch.utils.tensorboard imports it).
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing(INSTALL_HINT) from None
    return SummaryWriter


def open_writer(run_dir, resume_step=None):
    """A TensorBoardLog writing into run_dir/tb. resume_step: the number of
    batches the resumed checkpoint had done (state.step), None for a fresh run."""
    if resume_step is not None and (isinstance(resume_step, bool) or not isinstance(resume_step, int)
                                    or resume_step < 0):
        raise ValueError(f"resume_step must be the checkpoint's step count (an integer >= 0), "
                         f"not {resume_step!r}")
    purge = 0 if resume_step is None else int(resume_step)
    return TensorBoardLog(_summary_writer()(str(Path(run_dir) / "tb"), purge_step=purge))


class TensorBoardLog:
    """The few calls the training loop makes; see the module docstring for the tags."""

    def __init__(self, writer):
        self.writer = writer  # a torch.utils.tensorboard.SummaryWriter

    def rows(self, rows):
        """metrics.csv rows [step, epoch, batch, g_loss, d_loss, acc_real, acc_fake]
        -> the four per-batch scalars at each row's step."""
        for row in rows:
            if len(row) != ROW_LEN:
                raise ValueError(f"a metrics row has {ROW_LEN} values (step, epoch, batch, g_loss, "
                                 f"d_loss, d_acc_real, d_acc_fake), not {len(row)}: {row!r}")
            # One event holding the four values, written straight to the file writer:
            # add_scalar makes an event per value, 5x slower (~0.1 s per MNIST epoch).
            summary = _scalar(ROW_TAGS[0], row[3])
            for tag, value in zip(ROW_TAGS[1:], row[4:]):
                summary.value.extend(_scalar(tag, value).value)
            self.writer.file_writer.add_summary(summary, int(row[0]))

    def epoch(self, epoch, step, seconds, grid, nrow=8):
        """After epoch `epoch` (1-based), whose last batch had step `step`
        (state.step - 1): its duration, and the fixed-noise grid, N x C x H x W
        in [-1, 1], drawn nrow wide as in grids/epoch_NNN.png. Flushes to disk."""
        if not torch.is_tensor(grid) or grid.dim() != 4:
            raise ValueError(f"the grid must be a tensor N x C x H x W, not {_shape(grid)}")
        image = grid_image(grid, nrow)   # H' x W' x 3 uint8, as grids/epoch_NNN.png
        self.writer.add_scalar("time/epoch_seconds", float(seconds), epoch)
        self.writer.add_scalar("progress/epoch", epoch, step)
        self.writer.add_image("samples/fixed_noise", image, epoch, dataformats="HWC")
        self.writer.flush()

    def scores(self, epoch, scores):
        """Evaluation after an epoch: each number as eval/<name>, each list of
        numbers (e.g. class_shares) as eval/<name>/<i>; None (not computed) is skipped."""
        for name, value in scores.items():
            if value is None:
                continue
            if _is_number(value):
                self.writer.add_scalar(f"eval/{name}", float(value), epoch)
            elif isinstance(value, (list, tuple)) and all(_is_number(v) for v in value):
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"eval/{name}/{i}", float(v), epoch)
            else:
                raise ValueError(f"score {name!r} must be a number or a list of numbers, "
                                 f"not {type(value).__name__}")

    def text(self, tag, text, step):
        """Markdown text (a health warning, a note) under `tag` at `step`."""
        self.writer.add_text(tag, str(text), step)

    def config(self, cfg, step=0):
        """The run's config as a JSON code block under "config": step 0 for a
        fresh run, the resume step for a resumed one (its settings may differ)."""
        self.text("config", markdown_code(json.dumps(cfg, indent=2, sort_keys=True, default=str)), step)

    def close(self):
        self.writer.close()  # flushes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def markdown_code(text, language="json"):
    """text as a fenced Markdown code block (TensorBoard renders text as Markdown)."""
    return f"```{language}\n{text}\n```"


def _scalar(tag, value):
    """A Summary proto holding one scalar value. torch.utils.tensorboard.summary
    is loaded by the import in open_writer, which made this TensorBoardLog."""
    return torch.utils.tensorboard.summary.scalar(tag, float(value))


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)   # numpy scalars too


def _shape(x):
    return f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__

"""The checks behind `python bench.py --gpu`: what only a GPU can show about
the training paths, each on a training config (a preset with its data).

- precision: the same weights, batches and noise trained with autocast off,
  bf16 and fp16 (with its GradScaler); every loss finite, and the bf16 and fp16
  per-batch losses within PRECISION_TOLERANCE of float32's;
- variants: images/s and peak memory of the training step with channels_last
  and --compile on and off;
- input: the images kept on the device against host memory with pinned,
  non-blocking per-batch copies (helper_data.TensorLoader's two ways).

bench.py runs them (and its lecture-against-project timing), prints the table
and writes the JSON. On a CPU it runs a tiny version of the same, so that the
check cannot rot between GPU runs.
"""
import itertools
import time

import torch

import helper_data
import helper_train

# |loss(bf16 or fp16) - loss(float32)| over the first batches from the same
# weights, batches and noise: the mean and the largest allowed. Reduced
# precision rounds each step differently and GAN training amplifies small
# differences, so the curves drift apart slowly; a broken path (a missing
# scaler, a loss computed in half precision, NaN) is far outside these.
PRECISION_TOLERANCE = {"mean": 0.05, "max": 0.25}


def batch_stream(loader, batches):
    """`batches` batches, through as many epochs as that takes."""
    epochs = map(loader.batches, itertools.count())
    return itertools.islice(itertools.chain.from_iterable(epochs), batches)


def train_steps(cfg, device, loader, batches, noise_seed=1234):
    """Train `batches` steps from cfg's seeded weights. Returns the per-batch
    (G loss, D loss) as a float32 CPU tensor B x 2, images/s (after the first
    two steps, which compile and warm up) and the peak memory in MiB."""
    state = helper_train.build_state(cfg, device)
    autocast = helper_train.autocast_for(cfg, device)
    torch.manual_seed(noise_seed)   # the same noise for every precision and variant
    reset_peak(device)
    losses, t0, timed = [], None, 0
    for i, real in enumerate(batch_stream(loader, batches)):
        if i == min(2, batches - 1):
            t0, timed = clock(device), 0
        losses.append(helper_train.gan_step(state, helper_train.prepare_batch(real, cfg), cfg, autocast)[:2])
        timed += len(real)
    seconds = clock(device) - t0
    return torch.stack(losses).float().cpu(), timed / max(seconds, 1e-9), peak_mib(device)


def precision(cfg, device, loader, batches, amps=("off", "bf16", "fp16")):
    """Autocast off, bf16 and fp16 from the same start; per precision: finite or
    not, images/s, peak MiB, and (bf16, fp16) the distance to float32's losses."""
    curves, out = {}, {}
    for amp in amps:
        curves[amp], rate, peak = train_steps({**cfg, "amp": amp}, device, loader, batches)
        out[amp] = {"finite": bool(torch.isfinite(curves[amp]).all()), "images_per_s": round(rate, 1),
                    "peak_mib": round(peak, 1)}
        if amp != "off":
            diff = (curves[amp] - curves["off"]).abs()
            out[amp].update(mean_abs_diff=round(float(diff.mean()), 4), max_abs_diff=round(float(diff.max()), 4))
            out[amp]["ok"] = (out[amp]["finite"] and out[amp]["mean_abs_diff"] <= PRECISION_TOLERANCE["mean"]
                              and out[amp]["max_abs_diff"] <= PRECISION_TOLERANCE["max"])
    out["off"]["ok"] = out["off"]["finite"]
    return out


def variants(cfg, device, loader, batches, compile_too):
    """images/s and peak MiB with channels_last and torch.compile on and off
    (at cfg's autocast). compile_too=False: compiling is left out (it takes
    minutes on a CPU). A variant that fails (a compiler missing) is recorded
    with its error, and the check goes on."""
    out = {}
    for channels_last, compiled in itertools.product((False, True), (False, True) if compile_too else (False,)):
        run, name = {**cfg, "channels_last": channels_last, "compile": compiled}, \
            f"channels_last={channels_last} compile={compiled}"
        try:
            losses, rate, peak = train_steps(run, device, loader, batches)
        except Exception as e:   # noqa: BLE001  (torch.compile fails in many ways)
            out[name] = {"finite": False, "images_per_s": 0.0, "peak_mib": float("nan"),
                         "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            continue
        out[name] = {"finite": bool(torch.isfinite(losses).all()), "images_per_s": round(rate, 1),
                     "peak_mib": round(peak, 1)}
    return out


def input_paths(images, cfg, device, batches):
    """The input pipeline alone (batches as training gets them, images/s):
    images kept on the device, and in host memory copied per batch."""
    out = {}
    for where, free in (("on_device", None), ("host_pinned", 1)):   # 1 byte free: nothing fits
        loader = helper_data.TensorLoader(images, cfg["batch_size"], device, seed=cfg["seed"], free_bytes=free)
        stream = batch_stream(loader, batches + 2)
        next(stream), next(stream)   # warm up
        t0, n = clock(device), 0
        for real in stream:
            n += len(real)
        out[where] = {"images_per_s": round(n / max(clock(device) - t0, 1e-9), 1), "on_device": loader.on_device}
    return out


def clock(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device):
    """Peak GPU memory allocated since reset_peak; None on a CPU (see bench.py for RSS)."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan")

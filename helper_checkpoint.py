"""What a run's config and its checkpoint.pt may hold, and how they are opened.

The rules every config obeys (RULES, check_config), checked twice: on the
typed flags before anything is written (helper_cli) and on a loaded file
before any network is built from it. Old configs gain the keys added since
(upgrade_config). Checkpoints carry a format marker, are saved atomically,
loaded with weights_only=True (a file from someone else cannot run code) and
checked against the networks their config builds. load_generator and
pick_device are all a tool needs to open a trained run: generate.py,
evaluate.py and ablate.py depend on this file, never on the training loop.
"""
import math
import pickle
import random
import zipfile
from pathlib import Path

import torch

import helper_losses as losses
from helper_augment import POLICIES, parse_policy
from helper_files import RunError, atomic_write, plain
from helper_flags import CLASS_INPUTS, CROPS, DATASETS, IDX_SETS, LOSSES, RGB_SETS
from models import build_models, num_doublings


# ---------------------------------------------------------------- the rules of a config

# The one copy of the rules every config obeys, typed as flags (helper_cli checks
# them before anything is written) or read from a checkpoint (load_checkpoint
# checks them before any network is built).
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_widths(v, n=None):
    """A list of positive integers: exactly n, or 1 to MAX_LAYERS of them."""
    return (isinstance(v, list) and (len(v) == n if n else 1 <= len(v) <= MAX_LAYERS)
            and all(_is_int(w) and w >= 1 for w in v))


def _is_policy(text):
    try:
        return isinstance(text, str) and parse_policy(text) is not None
    except ValueError:
        return False


MAX_LAYERS, MAX_IMAGE_SIZE, MAX_PARAMS = 64, 1024, 2 * 10**9   # far above the presets' few million
MAX_EVAL_SAMPLES = 50000   # the most any paper scores with


RULES = [   # (settings, test, what the value must be)
    (("epochs", "batch_size", "latent_dim", "log_every", "plot_every", "g_features", "d_features",
      "channels"), lambda v: _is_int(v) and v >= 1, "a positive integer"),
    (("max_batches", "num_workers", "eval_every", "threads"), lambda v: _is_int(v) and v >= 0,
     "an integer >= 0"),
    (("eval_inception",), lambda v: _is_int(v) and (v == 0 or 4 <= v <= MAX_EVAL_SAMPLES),
     f"0 (off) or a number of samples from 4 to {MAX_EVAL_SAMPLES}"),
    (("seed",), _is_int, "an integer"),
    (("lr_gen", "lr_disc"), lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    (("time_budget", "slope"), lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    (("label_smoothing", "ema_decay", "beta1", "beta2", "dropout"),
     lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)"),
    (("n_critic",), lambda v: _is_int(v) and v >= 1, "a positive integer"),
    (("clip",), lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    (("gp_weight", "r1", "r2"), lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    (("cosine",), lambda v: _is_int(v) and v >= 0, "a number of steps >= 0 (0: off)"),
    (("loss",), LOSSES.__contains__, " or ".join(LOSSES)),
    (("class_input",), CLASS_INPUTS.__contains__, " or ".join(CLASS_INPUTS)),
    (("diffaug",), _is_policy, "a comma list of " + ", ".join(POLICIES) + ", or empty"),
    (("crop",), lambda v: v is None or v in CROPS, " or ".join(CROPS)),
    (("image_size",), lambda v: _is_int(v) and 8 <= v <= MAX_IMAGE_SIZE,
     f"an integer 4 * 2**k from 8 to {MAX_IMAGE_SIZE}"),
    (("g_hidden", "d_hidden"), _is_widths, f"1 to {MAX_LAYERS} positive integers"),
    (("img_shape",), lambda v: _is_widths(v, 3), "3 positive integers"),
    (("fresh_noise", "channels_last", "compile", "cudnn_benchmark", "health", "resume", "overwrite",
      "spectral_norm", "tensorboard", "g_batchnorm", "conditional"),
     lambda v: isinstance(v, bool), "true or false"),
    (("data_dir", "out", "device", "preset"), lambda v: isinstance(v, str), "text"),
    (("cache_dir",), lambda v: v is None or isinstance(v, str), "a folder or unset"),
    (("model",), ("fc", "dcgan").__contains__, "fc or dcgan"),
    (("dataset",), DATASETS.__contains__, " or ".join(DATASETS)),
    (("init",), ("default", "dcgan").__contains__, "default or dcgan"),
    (("gen_activation",), ("leaky", "relu").__contains__, "leaky or relu"),
    (("amp",), ("auto", "off", "bf16", "fp16").__contains__, "auto, off, bf16 or fp16"),
    (("input_path",), ("tensor", "images").__contains__, "tensor or images"),
    (("classes",), lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(c, str) for c in v),
     "a list of two or more class names"),
]
# What build_models reads, and what each dataset's images need of the networks.
NEEDED = {"fc": ("latent_dim", "img_shape", "g_hidden", "d_hidden", "dropout", "g_batchnorm"),
          "dcgan": ("latent_dim", "g_features", "d_features", "channels", "image_size")}
DATASET_NETS = {**{name: {"model": "fc", "img_shape": [1, 28, 28]} for name in IDX_SETS},
                **{name: {"model": "dcgan", "channels": 3} for name in RGB_SETS}}
NOT_FLAGS = {"model", "dataset", "img_shape", "channels", "classes"}   # preset-only settings (classes: the data's)


def check_config(cfg):
    """Raise RunError naming the first setting whose value cannot work, then
    refuse networks beyond MAX_PARAMS (counted on the meta device: no memory)."""
    def name(key):
        return key if key in NOT_FLAGS else "--" + key.replace("_", "-")
    for keys, ok, rule in RULES:
        for key in keys:
            if key in cfg and not ok(cfg[key]):
                raise RunError(f"{name(key)} must be {rule}, not {_shown(cfg[key])}")
    for key in ("model", "dataset", "slope", "gen_activation", "init", *NEEDED[cfg.get("model", "fc")]):
        if key not in cfg:
            raise RunError(f"the config has no {key!r}")
    if "image_size" in cfg:
        try:
            num_doublings(cfg["image_size"])
        except ValueError as e:
            raise RunError(f"--image-size: {e}") from None
    for key, value in DATASET_NETS[cfg["dataset"]].items():
        if cfg.get(key) != value:
            raise RunError(f"a {cfg['dataset']} run needs {key} {value}, not {_shown(cfg.get(key))}")
    if cfg.get("resume") and cfg.get("overwrite"):
        raise RunError("--resume and --overwrite exclude each other")
    if cfg.get("eval_inception") and not cfg.get("eval_every"):
        raise RunError("--eval-inception scores at each evaluation: add --eval-every K")
    if cfg.get("label_smoothing") and cfg.get("loss", "bce") != "bce":
        raise RunError(f"--label-smoothing applies to --loss bce only, not {cfg['loss']}")
    # Before the data is read a conditional config has no classes yet: count with ten.
    n = sum(p.numel() for net in meta_models({"classes": [""] * 10, **cfg}) for p in net.parameters())
    if n > MAX_PARAMS:
        raise RunError(f"these networks would have {n:.3g} parameters, more than the "
                       f"{MAX_PARAMS:.0e} allowed: choose smaller widths")


def _shown(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- checkpoints

CKPT_FORMAT = "gan-lecture-checkpoint-v1"


def save_checkpoint(state_dict, path):
    """Atomic: a crash or a full disk while saving keeps the previous checkpoint
    whole. Through a Python file, so a full disk is an OSError (ENOSPC), not an
    opaque RuntimeError of torch's zip writer."""
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            torch.save(state_dict, f)
    except Exception as e:
        # A second Ctrl-C mid-write makes torch's zip writer fail as it closes, a
        # RuntimeError on top of the KeyboardInterrupt: quit as the user asked.
        if isinstance(e.__context__, KeyboardInterrupt):
            raise e.__context__ from None
        raise


def load_checkpoint(path, device="cpu", training=True):
    """A checkpoint file or a run folder holding checkpoint.pt. weights_only=True:
    a checkpoint from someone else cannot run code when opened. Its contents are
    checked (check_checkpoint) before any network is built from them; all of
    them with `training`, else only the config and the generator's weights."""
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
                       f"not loaded (it could run code): {unpickling_reason(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                       f"{plain(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise RunError(f"{path} is not a checkpoint of these scripts (no '{CKPT_FORMAT}' marker)")
    try:
        check_checkpoint(ckpt, training)
    except RunError as e:
        raise RunError(f"{path} cannot be used: {e}") from None
    return ckpt


def unpickling_reason(error):
    """Which object torch refused, without its advice to load with
    weights_only=False: that is the unsafe way, it would run the file's code."""
    for line in plain(error).splitlines():   # the wording differs between torch versions
        if "GLOBAL" in line or "WeightsUnpickler error" in line:
            return line.split("error: ", 1)[-1].split(" Please use")[0].strip()
    return "objects that are not plain data"


def check_checkpoint(ckpt, training):
    """Raise RunError when a loaded checkpoint cannot be used: its config breaks
    the rules, or a tensor does not fit the networks the config builds. Those
    are built on the meta device (shapes and dtypes, no memory), so a small file
    cannot make this allocate much."""
    if not isinstance(ckpt.get("config"), dict):
        raise RunError("it holds no config")
    cfg = ckpt["config"] = upgrade_config(ckpt["config"])
    check_config(cfg)
    if cfg["conditional"] and "classes" not in cfg:
        raise RunError("its config is conditional but names no classes")
    gen, disc = meta_models(cfg)
    has_ema = ckpt.get("ema") is not None
    used = ["gen", "disc"] + ["ema"] * has_ema if training else ["ema" if has_ema else "gen"]
    for name in used:
        _check_tensors(ckpt.get(name), (disc if name == "disc" else gen).state_dict(), name)
    if not training:
        return
    for key in ("epoch", "batch", "step"):
        if not (_is_int(ckpt.get(key)) and ckpt[key] >= 0):
            raise RunError(f"its {key} is not a count: {_shown(ckpt.get(key))}")
    noise = ckpt.get("fixed_noise")
    if not (isinstance(noise, torch.Tensor) and noise.is_floating_point() and noise.dim() == 2
            and noise.shape[1] == cfg["latent_dim"]):
        raise RunError(f"its fixed_noise is not a float tensor N x {cfg['latent_dim']}")
    for name, net in (("opt_g", gen), ("opt_d", disc)):
        _check_optimizer(ckpt.get(name), [p.shape for p in net.parameters()], name)
    scaler = ckpt.get("scaler")
    if not (isinstance(scaler, dict) and all(_is_number(v) for v in scaler.values())):
        raise RunError("its scaler is not a set of numbers")
    _check_rng(ckpt.get("rng"))
    rank_rngs = ckpt.get("rank_rngs")   # torchrun runs: each rank's
    if rank_rngs is not None and not isinstance(rank_rngs, list):
        raise RunError("its random number generator states are not valid")
    for rng in rank_rngs or []:
        _check_rng(rng)


def _check_tensors(got, want, name):
    """got: a state dict read from a file; want: the one of the network it is for."""
    if not (isinstance(got, dict) and all(isinstance(t, torch.Tensor) for t in got.values())):
        raise RunError(f"its {name} is not a set of tensors")
    missing, extra = sorted(want.keys() - got.keys()), sorted(map(str, got.keys() - want.keys()))
    if missing or extra:
        which = f"lacks {missing[0]!r}" if missing else f"has an unknown {extra[0]!r}"
        raise RunError(f"its {name} {which}: it does not fit the networks its config builds")
    for key, t in want.items():
        if got[key].shape != t.shape or got[key].dtype != t.dtype:
            raise RunError(f"its {name}[{key!r}] is {_describe(got[key])}, the networks its "
                           f"config builds need {_describe(t)}")


def _check_optimizer(sd, shapes, name):
    """An Adam state dict over parameters of these shapes, in one group."""
    groups = sd.get("param_groups") if isinstance(sd, dict) else None
    if not (isinstance(groups, list) and len(groups) == 1 and _is_adam_group(groups[0], len(shapes))
            and isinstance(sd.get("state"), dict)):
        raise RunError(f"its {name} is not the state of an Adam optimizer over its networks")
    shape_of = dict(zip(groups[0]["params"], shapes))
    for i, state in sd["state"].items():
        if not (i in shape_of and isinstance(state, dict)
                and all(isinstance(t, torch.Tensor) and (t.dim() == 0 or t.shape == shape_of[i])
                        for t in state.values())):   # the step (a scalar), the moments
            raise RunError(f"its {name} holds a state that does not fit parameter {i!r}")


def _is_adam_group(group, n):
    """Adam's hyperparameters as numbers, and the indices of n parameters."""
    return (isinstance(group, dict) and isinstance(group.get("params"), list)
            and len(group["params"]) == n and all(_is_int(i) for i in group["params"])
            and all(_is_number(group.get(k)) for k in ("lr", "eps", "weight_decay"))
            and isinstance(group.get("betas"), (list, tuple)) and len(group["betas"]) == 2
            and all(_is_number(b) for b in group["betas"]))


def _check_rng(rng):
    """Tried on throwaway generators: the global ones are set only when training starts."""
    try:
        torch.Generator().set_state(rng["torch"])
        random.Random().setstate(rng["python"])
        if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"]):
            raise TypeError("cuda states")
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError):
        raise RunError("its random number generator states are not valid") from None


def _describe(t):
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def networks(cfg):
    """The config's generator and discriminator as training uses them: with
    --spectral-norm, D's layers are normalised (which renames its weights in
    the state dict, so this comes before loading a checkpoint)."""
    gen, disc = build_models(cfg)
    if cfg["spectral_norm"]:
        losses.spectral_norm_(disc)
    return gen, disc


def meta_models(cfg):
    """The config's networks on the meta device: every shape and dtype, no memory."""
    with torch.device("meta"):
        return networks(cfg)


def upgrade_config(cfg):
    """Fill in the keys that checkpoints of earlier versions did not store yet."""
    dataset = "mnist" if cfg.get("model") == "fc" else "celeba"
    return {"dataset": dataset, "slope": 0.01, "gen_activation": "leaky", "init": "default", "threads": 0,
            "loss": "bce", "n_critic": 1, "beta2": 0.999, "spectral_norm": False, "r1": 0.0,
            "r2": 0.0, "cosine": 0, "diffaug": "", "clip": 0.01, "gp_weight": 10.0, "eval_inception": 0,
            "conditional": False,
            **({"g_batchnorm": False} if cfg.get("model") == "fc" else {}), **cfg}


# ---------------------------------------------------------------- opening a run

def load_generator(path, device="cpu"):
    """(generator in eval mode, run config) from a checkpoint: its EMA copy when there is one."""
    ckpt = load_checkpoint(path, device, training=False)
    gen, _ = build_models(ckpt["config"])
    gen.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["gen"])
    return gen.to(device).eval(), ckpt["config"]


def pick_device(name, local_rank=0):
    """The torch.device for a --device value (auto, cpu, cuda, cuda:N); under
    torchrun, a bare "cuda" means this process's own GPU (local_rank)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise RunError(f"--device {name}: only cpu and cuda are supported")
    return device

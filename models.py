"""Generators and discriminators of the two lecture GANs.

Every network is built from its arguments (no globals). Generators take noise
of shape N x latent (N x latent x 1 x 1 is accepted too, as in the lecture's
loop) and return images in [-1, 1] (Tanh). Discriminators take images and
return one logit per image, shape N: the loss is BCE *with logits*.
"""
import math

import torch
from torch import nn


def _act(kind, slope):
    """The hidden activation: the lecture uses LeakyReLU; 'relu' reproduces its failed run."""
    if kind == "leaky":
        return nn.LeakyReLU(slope)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}: use 'leaky' or 'relu'")


def _mlp(sizes, slope, dropout, activation="leaky", batchnorm=False):
    """Linear -> (BatchNorm) -> activation -> dropout for each hidden size
    (sizes[0] is the input). No bias before BatchNorm: its shift replaces it."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(n_in, n_out, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(_act(activation, slope))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class FCGenerator(nn.Module):
    """Lecture MNIST generator: z -> Linear(latent, 128) -> LeakyReLU -> Dropout
    -> Linear(128, C*H*W) -> Tanh -> N x C x H x W. `hidden` may list more
    widths for a deeper, wider generator; `batchnorm` puts BatchNorm after each
    hidden Linear, as the DCGAN generator has after each hidden ConvT."""

    def __init__(self, latent_dim=100, img_shape=(1, 28, 28), hidden=(128,),
                 slope=0.01, dropout=0.5, activation="leaky", batchnorm=False):
        super().__init__()
        self.latent_dim = latent_dim
        self.img_shape = tuple(img_shape)
        out = math.prod(self.img_shape)
        self.net = nn.Sequential(
            *_mlp([latent_dim, *hidden], slope, dropout, activation, batchnorm),  # N x hidden[-1]
            nn.Linear(hidden[-1], out),                                # N x C*H*W
            nn.Tanh(),                                                 # in [-1, 1] like the data
        )

    def forward(self, z):
        x = self.net(z.flatten(1))                   # N x latent (x 1 x 1) -> N x C*H*W
        return x.view(z.shape[0], *self.img_shape)   # N x C x H x W


class FCDiscriminator(nn.Module):
    """Lecture MNIST discriminator: Flatten -> Linear(C*H*W, 128) -> LeakyReLU
    -> Dropout -> Linear(128, 1), returning logits of shape N."""

    def __init__(self, img_shape=(1, 28, 28), hidden=(128,), slope=0.01, dropout=0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),                                                  # N x C*H*W
            *_mlp([math.prod(img_shape), *hidden], slope, dropout),        # N x hidden[-1]
            nn.Linear(hidden[-1], 1),                                      # N x 1 logits
        )

    def forward(self, x):
        return self.net(x).view(-1)  # N


def num_doublings(image_size):
    """A DCGAN goes 4 -> 8 -> ... -> image_size by doubling; the lecture's 64 needs 4."""
    k = int(round(math.log2(image_size / 4))) if image_size >= 8 else 0
    if k < 1 or 4 * 2 ** k != image_size:
        raise ValueError(f"image size {image_size} must be 4 * 2**k with k >= 1 (e.g. 32, 64, 128)")
    return k


class DCGANGenerator(nn.Module):
    """Lecture DCGAN generator for 64 x 64 x 3 (g = features):
    latent x 1 x 1 -> ConvT(k4 s1 p0) 8g x 4 x 4 -> 4g x 8 x 8 -> 2g x 16 x 16
    -> g x 32 x 32 -> ConvT 3 x 64 x 64 -> Tanh. BatchNorm + LeakyReLU after
    each hidden ConvT, which has no bias (BN's shift makes it redundant)."""

    def __init__(self, latent_dim=100, features=64, channels=3, image_size=64,
                 slope=0.01, activation="leaky"):
        super().__init__()
        self.latent_dim = latent_dim
        k = num_doublings(image_size)
        widths = [features * 2 ** i for i in reversed(range(k))]   # 64: [8g, 4g, 2g, g]

        def block(n_in, n_out, stride, pad):
            return [nn.ConvTranspose2d(n_in, n_out, 4, stride, pad, bias=False),
                    nn.BatchNorm2d(n_out), _act(activation, slope)]

        layers = block(latent_dim, widths[0], 1, 0)                # 8g x 4 x 4
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += block(n_in, n_out, 2, 1)                     # doubles H and W
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1),  # C x size x size
                   nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z.view(z.shape[0], -1, 1, 1))  # N x C x size x size


class DCGANDiscriminator(nn.Module):
    """Lecture DCGAN discriminator (d = features): 3 x 64 x 64 -> Conv d x 32 x 32
    (no BN) -> 2d x 16 x 16 -> 4d x 8 x 8 -> 8d x 4 x 4 (BN + LeakyReLU) ->
    Conv(8d -> 1, k4 s1 p0) -> 1 x 1 x 1 -> logits N. No pooling, no FC layer."""

    def __init__(self, channels=3, features=64, image_size=64, slope=0.01):
        super().__init__()
        k = num_doublings(image_size)
        widths = [features * 2 ** i for i in range(k)]            # 64: [d, 2d, 4d, 8d]
        layers = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(slope)]  # d x 32 x 32
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(n_in, n_out, 4, 2, 1, bias=False),  # halves H and W
                       nn.BatchNorm2d(n_out), nn.LeakyReLU(slope)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0),             # 1 x 1 x 1
                   nn.Flatten()]                                   # N x 1
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).view(-1)  # N


def dcgan_init_(module):
    """The DCGAN paper's initialisation: conv weights ~ N(0, 0.02), BN weight
    ~ N(1, 0.02) and bias 0. Off in the lecture preset (PyTorch's default init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def build_models(cfg):
    """Generator and discriminator from a config dict (the one saved in run folders)."""
    slope = cfg["slope"]
    if cfg["model"] == "fc":
        shape = tuple(cfg["img_shape"])
        gen = FCGenerator(cfg["latent_dim"], shape, cfg["g_hidden"], slope,
                          cfg["dropout"], cfg["gen_activation"], cfg["g_batchnorm"])
        disc = FCDiscriminator(shape, cfg["d_hidden"], slope, cfg["dropout"])
    elif cfg["model"] == "dcgan":
        gen = DCGANGenerator(cfg["latent_dim"], cfg["g_features"], cfg["channels"],
                             cfg["image_size"], slope, cfg["gen_activation"])
        disc = DCGANDiscriminator(cfg["channels"], cfg["d_features"], cfg["image_size"], slope)
    else:
        raise ValueError(f"unknown model {cfg['model']!r}")
    if cfg["init"] == "dcgan":
        dcgan_init_(gen), dcgan_init_(disc)
    return gen, disc


# ---------------------------------------------------------------- sampling

@torch.no_grad()
def sample(gen, noise, batch=1000):
    """Images from noise (N x latent) in eval mode (dropout off, BN running
    statistics), so sampling neither changes the networks nor uses the global
    RNG. N x C x H x W in [-1, 1], float32 on the CPU, filled batch by batch
    into one tensor: the peak memory is the output's, not twice it."""
    was_training = gen.training
    gen.eval()
    out = None
    for start, z in zip(range(0, len(noise), batch), noise.split(batch)):
        images = gen(z).float().cpu()
        if out is None:
            out = torch.empty(len(noise), *images.shape[1:])
        out[start:start + len(z)] = images
    gen.train(was_training)
    return out


def samples_of(gen, latent_dim, num, seed=0):
    """num images from noise seeded by `seed`: the same images on any device."""
    noise = torch.randn(num, latent_dim, generator=torch.Generator().manual_seed(seed))
    return sample(gen, noise.to(next(gen.parameters()).device))

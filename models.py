"""Generators and discriminators of the two lecture GANs.

Every network is built from its arguments (no globals). Generators take noise
of shape N x latent (N x latent x 1 x 1 is accepted too, as in the lecture's
loop) and return images in [-1, 1] (Tanh). Discriminators take images and
return one logit per image, shape N: the loss is BCE *with logits*.

Class-conditional networks (num_classes > 0, --conditional) take the int64
class labels y (N) as a second argument: the generator a learned class
embedding concatenated to its noise (the DCGAN generator, with class_input
"cbn", conditional BatchNorm instead: a scale and shift per class), the
discriminator a projection term (Miyato & Koyama 2018),
D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, where phi(x) is the last hidden
layer and psi the output layer. A generator also takes float class weights
y (N x K) instead of labels: a one-hot row is a class, a blend of two walks
between them. With num_classes 0 the networks, their parameters and their
outputs are exactly the unconditional ones.
"""
import itertools
import math

import torch
from torch import nn

from helper_flags import CLASS_INPUTS


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


# ---------------------------------------------------------------- the class conditioning

CLASS_DIM = 32   # length of the generator's class embedding, beside the noise


def class_embedding(num_classes):
    """The generator's learned class embedding (N(0, 1) rows, the scale of the noise), or None."""
    return nn.Embedding(num_classes, CLASS_DIM) if num_classes else None


def class_rows(embedding, y):
    """The embedding's rows for int64 labels y (N), or for float class weights
    y (N x K) their weighted sum: a one-hot row picks its class, a blend of two
    one-hots lies between the classes (a walk from one class to another)."""
    if y.is_floating_point():
        return y.to(embedding.weight.dtype) @ embedding.weight
    return embedding(y)


def check_labels(conditional, y):
    """Labels go with a conditional network, and a conditional network needs them."""
    if conditional != (y is not None):
        raise ValueError("class labels go with a conditional network only (num_classes > 0), "
                         "and a conditional network needs them")


def with_class(z, embed, y):
    """The generator's input: noise N x latent (x 1 x 1) flattened to N x latent,
    followed by the class embedding of y when the generator is conditional
    (y: int64 labels N, or N x K class weights)."""
    z = z.flatten(1)
    check_labels(embed is not None, y)
    if embed is None:
        return z
    return torch.cat([z, class_rows(embed, y).to(z.dtype)], dim=1)


class ClassBatchNorm2d(nn.Module):
    """Conditional BatchNorm (de Vries et al. 2017; the generators of SN-GAN's
    projection model and BigGAN): BatchNorm2d without its own scale and shift,
    then a scale and shift per class, rows of two embeddings. They start at
    BatchNorm's 1 and 0, so every class starts from the same generator."""

    def __init__(self, num_classes, channels):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale, self.shift = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x, y):   # x: N x C x H x W; y: N labels or N x K class weights
        scale, shift = class_rows(self.scale, y), class_rows(self.shift, y)   # N x C each
        return self.norm(x) * scale[:, :, None, None].to(x.dtype) + shift[:, :, None, None].to(x.dtype)


def through(layers, x, y):
    """x through the layers, y given to the class-conditional ones (ClassBatchNorm2d)."""
    for layer in layers:
        x = layer(x, y) if isinstance(layer, ClassBatchNorm2d) else layer(x)
    return x


class Projection(nn.Module):
    """The class term of a projection discriminator: <embed(y), phi(x)> per image,
    one embedding row per class as long as the flattened features phi(x). Zero
    at the start, so D begins as the unconditional D and learns each class's direction."""

    def __init__(self, num_classes, features):
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        nn.init.zeros_(self.embed.weight)

    def forward(self, h, y):
        return (self.embed(y) * h.flatten(1)).sum(dim=1)   # N


def projected(net, head, projection, x, y):
    """net(x) as N logits; with a projection, psi(phi(x)) + <embed(y), phi(x)>,
    where phi = net[:head] (the features) and psi = net[head:] (the output layer)."""
    check_labels(projection is not None, y)
    if projection is None:
        return net(x).view(-1)
    h = net[:head](x)                                        # phi(x)
    return net[head:](h).view(-1) + projection(h, y)


# ---------------------------------------------------------------- the networks

class FCGenerator(nn.Module):
    """Lecture MNIST generator: z -> Linear(latent, 128) -> LeakyReLU -> Dropout
    -> Linear(128, C*H*W) -> Tanh -> N x C x H x W. `hidden` may list more
    widths for a deeper, wider generator; `batchnorm` puts BatchNorm after each
    hidden Linear, as the DCGAN generator has after each hidden ConvT.
    num_classes > 0: forward(z, y), the class embedding of y beside z."""

    def __init__(self, latent_dim=100, img_shape=(1, 28, 28), hidden=(128,),
                 slope=0.01, dropout=0.5, activation="leaky", batchnorm=False, num_classes=0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.img_shape = tuple(img_shape)
        out = math.prod(self.img_shape)
        self.embed = class_embedding(num_classes)
        n_in = latent_dim + (CLASS_DIM if num_classes else 0)
        self.net = nn.Sequential(
            *_mlp([n_in, *hidden], slope, dropout, activation, batchnorm),  # N x hidden[-1]
            nn.Linear(hidden[-1], out),                                # N x C*H*W
            nn.Tanh(),                                                 # in [-1, 1] like the data
        )

    def forward(self, z, y=None):
        x = self.net(with_class(z, self.embed, y))   # N x latent (x 1 x 1) -> N x C*H*W
        return x.view(z.shape[0], *self.img_shape)   # N x C x H x W


class FCDiscriminator(nn.Module):
    """Lecture MNIST discriminator: Flatten -> Linear(C*H*W, 128) -> LeakyReLU
    -> Dropout -> Linear(128, 1), returning logits of shape N. num_classes > 0:
    forward(x, y) adds the projection of the last hidden layer on y's embedding."""

    def __init__(self, img_shape=(1, 28, 28), hidden=(128,), slope=0.01, dropout=0.5, num_classes=0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),                                                  # N x C*H*W
            *_mlp([math.prod(img_shape), *hidden], slope, dropout),        # N x hidden[-1]
            nn.Linear(hidden[-1], 1),                                      # N x 1 logits
        )
        self.project = Projection(num_classes, hidden[-1]) if num_classes else None

    def forward(self, x, y=None):
        return projected(self.net, -1, self.project, x, y)  # N


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
    each hidden ConvT, which has no bias (BN's shift makes it redundant).
    num_classes > 0: forward(z, y), with class_input "concat" the class
    embedding of y beside z at the first layer (latent + CLASS_DIM input
    channels), with "cbn" a per-class scale and shift in every BatchNorm."""

    def __init__(self, latent_dim=100, features=64, channels=3, image_size=64,
                 slope=0.01, activation="leaky", num_classes=0, class_input="concat"):
        super().__init__()
        if class_input not in CLASS_INPUTS:
            raise ValueError(f"class_input must be one of {CLASS_INPUTS}, not {class_input!r}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.cbn = bool(num_classes) and class_input == "cbn"
        self.embed = None if self.cbn else class_embedding(num_classes)
        k = num_doublings(image_size)
        widths = [features * 2 ** i for i in reversed(range(k))]   # 64: [8g, 4g, 2g, g]

        def block(n_in, n_out, stride, pad):
            norm = ClassBatchNorm2d(num_classes, n_out) if self.cbn else nn.BatchNorm2d(n_out)
            return [nn.ConvTranspose2d(n_in, n_out, 4, stride, pad, bias=False),
                    norm, _act(activation, slope)]

        layers = block(latent_dim + (CLASS_DIM if self.embed else 0), widths[0], 1, 0)   # 8g x 4 x 4
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += block(n_in, n_out, 2, 1)                     # doubles H and W
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1),  # C x size x size
                   nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z, y=None):
        if self.cbn:
            check_labels(True, y)
            return through(self.net, z.reshape(z.shape[0], -1, 1, 1), y)   # N x C x size x size
        z = with_class(z, self.embed, y)
        return self.net(z.view(z.shape[0], -1, 1, 1))  # N x C x size x size


class DCGANDiscriminator(nn.Module):
    """Lecture DCGAN discriminator (d = features): 3 x 64 x 64 -> Conv d x 32 x 32
    (no BN) -> 2d x 16 x 16 -> 4d x 8 x 8 -> 8d x 4 x 4 (BN + LeakyReLU) ->
    Conv(8d -> 1, k4 s1 p0) -> 1 x 1 x 1 -> logits N. No pooling, no FC layer.
    num_classes > 0: forward(x, y) adds the projection of the 8d x 4 x 4
    features (flattened: the last conv is a linear layer on them) on y's embedding."""

    def __init__(self, channels=3, features=64, image_size=64, slope=0.01, num_classes=0):
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
        self.project = Projection(num_classes, widths[-1] * 16) if num_classes else None

    def forward(self, x, y=None):
        return projected(self.net, -2, self.project, x, y)  # N


def dcgan_init_(module):
    """The DCGAN paper's initialisation: conv weights ~ N(0, 0.02), BN weight
    ~ N(1, 0.02) and bias 0. Off in the lecture preset (PyTorch's default init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ClassBatchNorm2d):   # the same, per class
            nn.init.normal_(m.scale.weight, 1.0, 0.02)
            nn.init.zeros_(m.shift.weight)
    return module


def build_models(cfg):
    """Generator and discriminator from a config dict (the one saved in run folders)."""
    slope, classes = cfg["slope"], num_classes(cfg)
    if cfg["model"] == "fc":
        shape = tuple(cfg["img_shape"])
        gen = FCGenerator(cfg["latent_dim"], shape, cfg["g_hidden"], slope,
                          cfg["dropout"], cfg["gen_activation"], cfg["g_batchnorm"], classes)
        disc = FCDiscriminator(shape, cfg["d_hidden"], slope, cfg["dropout"], classes)
    elif cfg["model"] == "dcgan":
        gen = DCGANGenerator(cfg["latent_dim"], cfg["g_features"], cfg["channels"],
                             cfg["image_size"], slope, cfg["gen_activation"], classes,
                             cfg.get("class_input", "concat"))   # runs from before the flag: concat
        disc = DCGANDiscriminator(cfg["channels"], cfg["d_features"], cfg["image_size"], slope, classes)
    else:
        raise ValueError(f"unknown model {cfg['model']!r}")
    if cfg["init"] == "dcgan":
        dcgan_init_(gen), dcgan_init_(disc)
    return gen, disc


def num_classes(cfg):
    """The classes a config's networks are conditioned on, 0: unconditional."""
    return len(cfg["classes"]) if cfg.get("conditional") else 0


# ---------------------------------------------------------------- sampling

@torch.no_grad()
def sample(gen, noise, batch=1000, labels=None):
    """Images from noise (N x latent) in eval mode (dropout off, BN running
    statistics), so sampling neither changes the networks nor uses the global
    RNG. N x C x H x W in [-1, 1], float32 on the CPU, filled batch by batch
    into one tensor: the peak memory is the output's, not twice it.
    A conditional generator draws the classes `labels` (int64 N), by default
    every class in turn (0, 1, ..., K-1, 0, ...): equally many of each."""
    was_training = gen.training
    gen.eval()
    out = None
    k = getattr(gen, "num_classes", 0)
    if k and labels is None:
        labels = every_class(len(noise), k)
    cond = itertools.repeat(()) if not k else [(y,) for y in labels.to(noise.device).split(batch)]
    for start, z, c in zip(range(0, len(noise), batch), noise.split(batch), cond):
        images = gen(z, *c).float().cpu()
        if out is None:
            out = torch.empty(len(noise), *images.shape[1:])
        out[start:start + len(z)] = images
    gen.train(was_training)
    return out


def samples_of(gen, latent_dim, num, seed=0, labels=None):
    """num images from noise seeded by `seed`: the same images on any device
    (a conditional generator: of the classes `labels`, by default every class in turn)."""
    noise = torch.randn(num, latent_dim, generator=torch.Generator().manual_seed(seed))
    return sample(gen, noise.to(next(gen.parameters()).device), labels=labels)


def every_class(num, num_classes):
    """int64 labels 0, 1, ..., K-1, 0, 1, ...: what a conditional generator draws
    unless told (10,000 samples of 10 classes: 1,000 of each)."""
    return torch.arange(num) % num_classes


GRID_CLASSES = 10   # rows of a class grid: the first classes


def class_grid(gen, noise, cols=8, rows=GRID_CLASSES):
    """A conditional generator's class grid: one row per class (the first
    `rows`), the same noise (noise[:cols]) down each column, so that a
    column shows one "style" in every class. (rows * cols images, row by row)."""
    rows = min(gen.num_classes, rows)
    z = noise[:cols].repeat(rows, 1)
    return sample(gen, z, labels=torch.arange(rows).repeat_interleave(cols))

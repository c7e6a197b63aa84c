"""Offline sample-quality metrics for the two GANs (no downloads, no pretrained nets).

All images are float tensors N x C x H x W in [-1, 1] on the CPU.

MNIST (1 x 28 x 28): a small CNN trained here on MNIST stands in for the
Inception net. `mnist_scores` gives an FID on its 128-d features, an
Inception Score on its softmax (at most 10) and the share of each predicted
digit (mode collapse shows as a missing digit).

RGB faces (3 x 64 x 64): no classifier, so
- `swd`: sliced Wasserstein distance between Laplacian pyramid patches
  (Karras et al. 2018, ProGAN), lower = closer to the real images;
- `ms_ssim_diversity`: mean MS-SSIM of random pairs within one set, lower =
  more diverse; compare with the value of real images (collapse -> near 1);
- `class_swd` (conditional runs): the SWD of each class's samples against
  the real images of that class.

`Reference` holds the real images a run is compared with, and `make_evaluator`
turns it into the function train_gan calls with --eval-every.

`python helper_eval.py --data-dir DIR` trains (or loads) the cached classifier.
"""
import argparse
import hashlib
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# one rule for every cache: beside the data or ~/.cache
from helper_data import DataError, dataset_images, default_cache_dir, read_idx_set, to_float
from helper_features import (KID_SUBSET_SIZE, KID_SUBSETS, NETWORK, PR_K, RESIZE, cached_features, feature_scores,
                              frechet_distance)
from helper_files import atomic_write
from helper_flags import IDX_SETS
from models import every_class, samples_of

CLASSIFIER_VERSION = 1  # bump when the network or its training changes, to invalidate caches
BATCH = 1000  # images per forward pass when scoring: bounded memory, few Python round trips


# ---------------------------------------------------------------- MNIST classifier

class MnistClassifier(nn.Module):
    """conv32-pool-conv64-pool-conv64 -> 128-d feature -> 10 logits. Input N x 1 x 28 x 28 in [-1, 1]."""

    def __init__(self):
        super().__init__()

        def conv(n_in, n_out):
            # BatchNorm lets a few epochs of Adam reach a high test accuracy
            return [nn.Conv2d(n_in, n_out, 3, padding=1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU()]

        # pool early: one cheap 1 -> 32 conv at 28 x 28, the capacity sits at 14 x 14 and 7 x 7
        # (cheaper than two convs per resolution at no cost in accuracy; see the README)
        self.body = nn.Sequential(*conv(1, 32), nn.MaxPool2d(2),    # 14 x 14
                                  *conv(32, 64), nn.MaxPool2d(2),   # 7 x 7
                                  *conv(64, 64),
                                  nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, 10))

    def features(self, x):
        """N x 1 x 28 x 28 -> N x 128 (penultimate layer, after its ReLU)."""
        return self.body(x)

    def forward(self, x):
        """N x 1 x 28 x 28 -> logits N x 10."""
        return self.head(self.body(x))


def _idx_labelled(data_dir, train, name="mnist"):
    """(images N x 1 x 28 x 28 in [-1, 1], labels N) of an IDX set (MNIST, Fashion-MNIST, KMNIST)."""
    x, y = read_idx_set(data_dir, name, train=train, labels=True)
    return to_float(x), y


@torch.no_grad()
def _accuracy(model, x, y):
    model.eval()
    device = next(model.parameters()).device
    hits = sum((model(x[i:i + BATCH].to(device)).argmax(1).cpu() == y[i:i + BATCH]).sum().item()
               for i in range(0, len(x), BATCH))
    return hits / len(x)


def _random_shift(x, gen, pixels):
    """Each image moved by up to `pixels` in x and y, background (-1) filling the gap."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * pixels + 1, (n, 1, 1, 1), generator=gen)
    dx = torch.randint(0, 2 * pixels + 1, (n, 1, 1, 1), generator=gen)
    rows = dy + torch.arange(h).view(1, 1, -1, 1)
    cols = dx + torch.arange(w).view(1, 1, 1, -1)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]


def train_mnist_classifier(data_dir, epochs=3, seed=0, device="cpu", log=print,
                           batch_size=128, lr=2e-3, shift=2, max_batches=None, name="mnist"):
    """Train a MnistClassifier on the 60,000 training images; returns (model in
    eval mode, accuracy on the 10,000 test images). Deterministic given the seed
    (the global RNG is used inside fork_rng and left as it was). Light augmentation:
    random shifts of up to `shift` pixels. `max_batches` stops early (for tests)."""
    x, y = _idx_labelled(data_dir, True, name)
    x_test, y_test = _idx_labelled(data_dir, False, name)
    dev = torch.device(device)
    # init and dropout draw from the global RNG: fork it, so the caller's stream is left as it was
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = MnistClassifier().to(device)
        gen = torch.Generator().manual_seed(seed)  # shuffling and shifts
        steps_per_epoch = -(-len(x) // batch_size)
        total = min(epochs * steps_per_epoch, max_batches or float("inf"))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        # one-cycle schedule: a short warm-up and an annealed end get the last tenths of a percent
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(total, 2), pct_start=0.15)
        step, start = 0, time.time()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                if step >= total:
                    break
                idx = order[i:i + batch_size]
                xb = _random_shift(x[idx], gen, shift) if shift else x[idx]
                loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if step % 100 == 0 or step == total:
                    log(f"classifier epoch {epoch + 1}/{epochs} step {step}/{total} "
                        f"loss {loss.item():.4f} {time.time() - start:.0f}s")
    acc = _accuracy(model, x_test, y_test)
    log(f"classifier test accuracy {acc:.4f} after {time.time() - start:.0f}s")
    return model.eval(), acc


def classifier_path(data_dir, cache_dir, name="mnist"):
    """Where the classifier of these images is cached. The name carries a digest
    of the test set it is scored on: one cache folder (the user's, by default)
    serves several data folders, and a classifier trained on other images (a
    few fake test digits, another download) must not be taken for this one."""
    x, y = _idx_labelled(data_dir, False, name)
    digest = hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:12]
    return Path(cache_dir or default_cache_dir(data_dir)) / f"{name}_classifier_v{CLASSIFIER_VERSION}_{digest}.pt"


def load_mnist_classifier(data_dir, cache_dir=None, device="cpu", log=print, name="mnist"):
    """The classifier of the IDX set `name` from `cache_dir` (default:
    `default_cache_dir(data_dir)`); trained and cached first when absent.
    Returned in eval mode."""
    path = classifier_path(data_dir, cache_dir, name)
    if path.is_file():
        # init draws from the global RNG: fork it to leave the caller's stream as it was
        with torch.random.fork_rng(devices=[]):
            model = MnistClassifier().to(device)
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
            model.load_state_dict(ckpt["state_dict"])
            log(f"loaded {name} classifier (test accuracy {ckpt['test_accuracy']:.4f}) from {path}")
            return model.eval()
        except (RuntimeError, KeyError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
            log(f"cannot read {path} ({type(e).__name__}), training again")  # truncated or stale file
    log(f"no cached {name} classifier in {path.parent}: training one (a few CPU minutes, once)")
    model, acc = train_mnist_classifier(data_dir, device=device, log=log, name=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:   # a killed run or a parallel reader never sees half a file
        torch.save({"state_dict": model.state_dict(), "test_accuracy": acc}, tmp)
    log(f"saved {name} classifier (test accuracy {acc:.4f}) to {path}")
    return model.eval()


# ---------------------------------------------------------------- MNIST scores

def inception_score_from_logits(logits):
    """exp(E_x KL(p(y|x) || p(y))) from N x K logits: 1 (all alike) .. K (confident, balanced)."""
    logp = F.log_softmax(torch.as_tensor(logits).double(), dim=1)
    log_py = torch.log(logp.exp().mean(0))
    return float(torch.exp((logp.exp() * (logp - log_py)).sum(1).mean()))


@torch.no_grad()
def _classify(classifier, images):
    """N x 1 x 28 x 28 -> (features N x 128, logits N x 10) on the CPU, in batches, eval mode."""
    was_training = classifier.training
    classifier.eval()  # BatchNorm running stats, no dropout
    device = next(classifier.parameters()).device
    feats, logits = [], []
    for i in range(0, len(images), BATCH):
        f = classifier.features(images[i:i + BATCH].to(device))
        feats.append(f.cpu())
        logits.append(classifier.head(f).cpu())
    classifier.train(was_training)
    return torch.cat(feats), torch.cat(logits)


def mnist_scores(f_fake, logits, f_real, seed=0):
    """Scores of samples against real images, both as the classifier read them
    (_classify: features N x 128 and logits N x 10 of the samples, features
    M x 128 of the real images): {"fid", "kid_x1e3", "kid_std_x1e3", "precision",
    "recall" (helper_features.feature_scores), "inception_score",
    "class_shares" (10 floats), "min_class_share"}."""
    shares = torch.bincount(logits.argmax(1), minlength=10).double() / len(logits)
    return {**feature_scores(f_fake, f_real, seed),
            "inception_score": inception_score_from_logits(logits),
            "class_shares": shares.tolist(),
            "min_class_share": float(shares.min())}


def stacked_modes(classifier, images):
    """Modes of N x 3 x S x S StackedMNIST images in [-1, 1]: the classifier reads
    each channel (resized to 28 x 28) as a digit, mode = 100 R + 10 G + B.
    {"modes": how many of the 1000 appear, "kl": KL(mode histogram || uniform)}."""
    x = images.float().cpu()
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    _, logits = _classify(classifier, x.reshape(-1, 1, 28, 28))
    digits = logits.argmax(1).view(-1, 3)
    modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    p = torch.bincount(modes, minlength=1000).double() / len(modes)
    p = p[p > 0]
    return {"modes": float(len(p)), "kl": float((p * torch.log(p * 1000)).sum())}


# ---------------------------------------------------------------- sliced Wasserstein distance

BINOMIAL_5 = torch.tensor([1., 4., 6., 4., 1.]) / 16  # the 5 x 5 kernel is its outer product


def _separable(x, k):
    """Filter every channel of N x C x H x W with outer(k, k), 'valid' windows: a
    row pass then a column pass (2k instead of k^2 multiplies per pixel)."""
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _blur(x, k):
    """Separable blur with reflect padding: the same size out."""
    r = len(k) // 2
    return _separable(F.pad(x, (r, r, r, r), mode="reflect"), k)


def laplacian_pyramid(images, min_res=16):
    """N x C x H x W -> list of levels, finest first: band-pass differences
    G_i - up(G_{i+1}) while halving keeps the side >= min_res, then the last
    Gaussian (low-pass) level. 64 x 64 -> 64, 32, 16; 28 x 28 -> 28 only."""
    levels, g = [], images
    while min(g.shape[-2:]) // 2 >= min_res:
        down = _blur(g, BINOMIAL_5)[..., ::2, ::2]
        # upsample: zeros between pixels, blur with 4x the kernel (2x per axis) to restore the brightness
        up = torch.zeros(*g.shape[:2], 2 * down.shape[-2], 2 * down.shape[-1])
        up[..., ::2, ::2] = down
        up = _blur(up, 2 * BINOMIAL_5)[..., :g.shape[-2], :g.shape[-1]]
        levels.append(g - up)
        g = down
    return levels + [g]


def _patches(level, per_image, size, gen):
    """per_image random size x size patches from each image -> (N * per_image) x (size * size * C)."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, per_image, 1, 1), generator=gen)
    xs = torch.randint(0, w - size + 1, (n, per_image, 1, 1), generator=gen)
    d = torch.arange(size)
    rows, cols = ys + d.view(1, 1, -1, 1), xs + d.view(1, 1, 1, -1)  # N x P x size x size
    img = torch.arange(n).view(n, 1, 1, 1)
    return level.permute(0, 2, 3, 1)[img, rows, cols].reshape(n * per_image, -1)


def _sliced_wasserstein(a, b, repeats, directions, gen):
    """Mean over repeats of the mean |sorted projections of a - sorted of b| on random unit directions."""
    if len(a) != len(b):  # sorted projections are compared rank by rank: use equal counts
        n = min(len(a), len(b))
        a = a[torch.randperm(len(a), generator=gen)[:n]]
        b = b[torch.randperm(len(b), generator=gen)[:n]]
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=gen)
        dirs /= dirs.norm(dim=0, keepdim=True)
        for k in range(0, directions, 32):  # 32 directions at a time bounds the memory
            # sorting dominates the cost, and numpy sorts contiguous rows faster than torch on the CPU
            pa = np.sort((a @ dirs[:, k:k + 32]).T.contiguous().numpy(), axis=1)
            pb = np.sort((b @ dirs[:, k:k + 32]).T.contiguous().numpy(), axis=1)
            total += float(np.abs(pa - pb).sum(dtype=np.float64))
    return total / (repeats * directions * len(a))


@torch.no_grad()
def swd(images_a, images_b, seed=0, patches_per_image=128, patch_size=7,
        repeats=4, directions=128, min_res=16):
    """Sliced Wasserstein distance (x 1e3, as ProGAN reports it) between two sets
    of N x C x H x W images, per Laplacian pyramid level: {"swd_<res>": ..., "swd_mean": ...}.
    Levels stop at min_res (16) or at the image size when smaller (28 x 28 MNIST: one level).
    Unlike ProGAN, which normalizes each set with its own statistics, the descriptors
    are normalized per level and channel with the mean/std of both sets together,
    so a brightness or contrast shift counts. Deterministic given the seed."""
    gen = torch.Generator().manual_seed(seed)  # never the global RNG
    out = {}
    for la, lb in zip(laplacian_pyramid(images_a.float().cpu(), min_res),
                      laplacian_pyramid(images_b.float().cpu(), min_res)):
        da = _patches(la, patches_per_image, patch_size, gen)
        db = _patches(lb, patches_per_image, patch_size, gen)
        c = la.shape[1]  # descriptors are (y, x, channel) flattened: channel is the last index
        both = torch.cat([da, db]).view(-1, c)
        mean, std = both.mean(0), both.std(0).clamp_min(1e-8)
        da = ((da.view(-1, c) - mean) / std).view(da.shape)
        db = ((db.view(-1, c) - mean) / std).view(db.shape)
        out[f"swd_{la.shape[-1]}"] = 1e3 * _sliced_wasserstein(da, db, repeats, directions, gen)
    out["swd_mean"] = float(np.mean(list(out.values())))
    return out


# ---------------------------------------------------------------- MS-SSIM

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, 5 scales


def _gaussian_1d(size, sigma):
    g = torch.exp(-(torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).float()


def _ssim_terms(a, b, g):
    """Per-image mean SSIM and mean contrast-structure term, data range 1."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    # the five local statistics in one pass: channels [a, b, a^2, b^2, ab]
    mu_a, mu_b, aa, bb, ab = _separable(torch.cat([a, b, a * a, b * b, a * b], 1), g).chunk(5, 1)
    var_a, var_b, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    lum = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    return (lum * cs).mean((1, 2, 3)), cs.mean((1, 2, 3))


@torch.no_grad()
def ms_ssim(a, b, win=11, sigma=1.5, scales=None):
    """MS-SSIM of each pair (a[i], b[i]), N x C x H x W in [-1, 1] -> N values (1 = identical).
    Gaussian window 11 x 11, sigma 1.5 as in Wang et al.; 2x average pooling between
    scales. The standard 5 scales need 11 * 2^4 = 176 px, so by default as many scales
    as keep the smallest side >= the window (64 x 64: 3 scales 64, 32, 16; 28 x 28: 2),
    with the first weights of the 5-scale set renormalized to sum 1. Negative
    contrast-structure terms (anti-correlated pairs) are clamped to 0 before the power."""
    a, b = (a.float().cpu() + 1) / 2, (b.float().cpu() + 1) / 2  # data range [0, 1]
    if scales is None:
        scales = 1
        while scales < 5 and min(a.shape[-2:]) // 2 ** scales >= win:
            scales += 1
    if min(a.shape[-2:]) // 2 ** (scales - 1) < win:
        raise ValueError(f"{scales} scales need images of at least {win * 2 ** (scales - 1)} px")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    g = _gaussian_1d(win, sigma)
    result = torch.ones(len(a))
    for s in range(scales):
        ssim, cs = _ssim_terms(a, b, g)
        last = s == scales - 1
        result = result * (ssim if last else cs).clamp_min(0) ** weights[s]
        if not last:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return result


def ms_ssim_diversity(images, pairs=1000, seed=0):
    """Mean MS-SSIM over `pairs` random pairs of distinct images of one N x C x H x W set:
    lower = more diverse; near 1 for a collapsed generator. Compare with real images."""
    n = len(images)
    if n < 2:
        raise ValueError("ms_ssim_diversity needs at least 2 images")
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=gen)
    j = (i + torch.randint(1, n, (pairs,), generator=gen)) % n  # j != i
    vals = [ms_ssim(images[i[k:k + 500]], images[j[k:k + 500]]) for k in range(0, pairs, 500)]
    return float(torch.cat(vals).mean())


def rgb_scores(images, real_images, seed=0, pairs=1000):
    """SWD of samples vs real images plus the MS-SSIM diversity of each set (`pairs` pairs):
    {"swd_mean", "swd_<res>"..., "ms_ssim" (samples), "ms_ssim_real"}."""
    out = swd(images, real_images, seed=seed)
    out["ms_ssim"] = ms_ssim_diversity(images, pairs, seed=seed)
    out["ms_ssim_real"] = ms_ssim_diversity(real_images, pairs, seed=seed)
    return out


# ---------------------------------------------------------------- what a run is compared with

EVAL_NUM = {"idx": 5000, "rgb": 1000, "stacked": 10000}   # samples per evaluation during training
STACKED_NUM = 26000   # StackedMNIST samples in evaluate.py, as in the literature (PacGAN, VEEGAN)


def class_agreement(logits, labels, num_classes=10):
    """How often the classifier's logits (N x 10, _classify) read the class the
    images were drawn as (int64 labels N): {"class_agreement": over all of them,
    "min_class_agreement": of the worst class, "class_agreement_per_class": a
    float per class, NaN for a class without images}. For real images with
    their true labels: the classifier's accuracy."""
    hit = (logits.argmax(1) == labels).double()
    per_class = [float(hit[labels == k].mean()) for k in range(num_classes)]
    return {"class_agreement": float(hit.mean()),
            "min_class_agreement": min(a for a in per_class if a == a),   # a == a: not NaN
            "class_agreement_per_class": per_class}


def class_fid(feats, labels, real, real_labels, num_classes=10):
    """FID in the classifier's features (_classify) of each class's images
    against the real images of that class: {"mean_class_fid",
    "class_fid_per_class"} (NaN for a class with fewer than two images on either side)."""
    per_class = [frechet_distance(feats[labels == k], real[real_labels == k])
                 if min((labels == k).sum(), (real_labels == k).sum()) > 1 else float("nan")
                 for k in range(num_classes)]
    present = [f for f in per_class if f == f]
    return {"mean_class_fid": float(np.mean(present)) if present else float("nan"),
            "class_fid_per_class": per_class}


MIN_CLASS_IMAGES = 10   # fewer images of a class on either side: its SWD is NaN


def class_swd(images, labels, real_images, real_labels, num_classes, seed=0, min_images=MIN_CLASS_IMAGES):
    """SWD (x 1e3, `swd`'s swd_mean) of each class's images (N x C x H x W, int64
    labels N) against the real images of that class: {"mean_class_swd": over the
    classes scored, "class_swd_per_class": a float per class}. The RGB sets'
    counterpart of class_fid: a class drawn in the style of another scores high
    here, though the SWD of all images together cannot tell.
    Cost: each class's SWD sees only its own images, so K classes of N/K images
    cost about one SWD of all N (sorting the projections dominates).
    A small class is a noisy estimate with an upward bias: its patches come from
    few pictures, and SWD between two finite samples grows as they shrink, so
    compare a class with its own floor rather than with a larger class. Below
    `min_images` on either side the class is NaN and left out of the mean."""
    per_class = []
    for k in range(num_classes):
        mine, real = images[labels == k], real_images[real_labels == k]
        enough = min(len(mine), len(real)) >= min_images
        per_class.append(swd(mine, real, seed=seed)["swd_mean"] if enough else float("nan"))
    present = [s for s in per_class if s == s]   # s == s: not NaN
    return {"mean_class_swd": float(np.mean(present)) if present else float("nan"),
            "class_swd_per_class": per_class}


def kind_of(cfg):
    """'idx' (28 x 28 grey: the classifier's metrics), 'stacked' (StackedMNIST:
    modes through the MNIST classifier) or 'rgb' (SWD and MS-SSIM)."""
    if cfg["dataset"] == "stacked-mnist":
        return "stacked"
    return "idx" if cfg["dataset"] in IDX_SETS else "rgb"


def _pick(images, num, seed, offset=0):
    """`num` images chosen by a seeded permutation (offset: a disjoint second set)."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[perm[offset:offset + num]]


def _two_disjoint(images, num, seed):
    """Two disjoint seeded sets of `num` images each (reference, floor)."""
    if len(images) < 2 * num:
        raise DataError(f"--num {num} needs {2 * num} real images, found {len(images)}")
    return _pick(images, num, seed), _pick(images, num, seed, offset=num)


class Reference:
    """Real images to compare a run's samples with, loaded once. 28 x 28 sets:
    the test split and the set's own classifier (`num` training images are the
    floor); StackedMNIST: the MNIST classifier (`num` real stacks are the
    floor); RGB sets: 2 x `num` of the training images (one half the floor).
    A conditional run (the samples' labels given to scores) is also scored per
    class. 28 x 28 sets: class agreement, whose floor, the ceiling of what a
    generator can reach, is the classifier's accuracy on the test split, and
    class FID; RGB sets: class SWD, whose floor is the floor half by its true
    classes."""

    def __init__(self, cfg, num, seed=0):
        self.kind, self.seed = kind_of(cfg), seed
        self.conditional = cfg.get("conditional", False) and self.kind in ("idx", "rgb")
        if self.kind != "rgb":
            name = "mnist" if self.kind == "stacked" else cfg["dataset"]
            self.classifier = load_mnist_classifier(cfg["data_dir"], cfg["cache_dir"], name=name)
        if self.conditional:
            self.num_classes = len(cfg["classes"])
            self._labelled(cfg, num, seed)
        elif self.kind == "idx":
            self.real = to_float(dataset_images(cfg, train=False))
            self.train_real = to_float(_pick(dataset_images(cfg), num, seed))
        elif self.kind == "stacked":
            self.train_real = to_float(_pick(dataset_images(cfg), num, seed))
        else:
            self.real, self.train_real = map(to_float, _two_disjoint(dataset_images(cfg), num, seed))
        if self.kind == "idx":   # the test images as the classifier reads them, once for every score
            self.real_feats, self.real_logits = _classify(self.classifier, self.real)

    def _labelled(self, cfg, num, seed):
        """real/train_real as unconditionally, with real_labels/train_labels: picked
        by the same seed from sets of one length, hence the same permutation, so
        each label stays with its image."""
        train, train_labels = dataset_images(cfg, labels=True)
        if self.kind == "idx":
            test, self.real_labels = dataset_images(cfg, train=False, labels=True)
            self.real, self.train_real = to_float(test), to_float(_pick(train, num, seed))
            self.train_labels = _pick(train_labels, num, seed)
        else:
            self.real, self.train_real = map(to_float, _two_disjoint(train, num, seed))
            self.real_labels, self.train_labels = _two_disjoint(train_labels, num, seed)

    def scores(self, images, labels=None):
        """labels: the classes a conditional run's images were drawn as (int64 N)."""
        by_class = self.conditional and labels is not None
        if self.kind == "idx":
            feats, logits = _classify(self.classifier, images)   # once, for every score below
            scores = mnist_scores(feats, logits, self.real_feats, self.seed)
            if by_class:
                scores.update(class_agreement(logits, labels))
                scores.update(class_fid(feats, labels, self.real_feats, self.real_labels))
            return scores
        if self.kind == "stacked":
            return stacked_modes(self.classifier, images)
        scores = rgb_scores(images, self.real, seed=self.seed)
        if by_class:
            scores.update(class_swd(images, labels, self.real, self.real_labels, self.num_classes, self.seed))
        return scores

    def floor(self):
        """The same scores for real images that are not the reference: the best a GAN can do."""
        if not self.conditional:
            return self.scores(self.train_real)
        # the class scores of training images by their true classes
        floor = self.scores(self.train_real, self.train_labels)
        if self.kind == "idx":   # agreement: the classifier's accuracy on the test split
            floor.update(class_agreement(self.real_logits, self.real_labels))
        return floor

    def of_generator(self, gen, cfg, num, seed=0):
        """The scores of num samples of gen (a conditional run's: every class in turn)."""
        labels = every_class(num, len(cfg["classes"])) if cfg.get("conditional") else None
        return self.scores(samples_of(gen, cfg["latent_dim"], num, seed, labels=labels), labels)


class InceptionReference:
    """The standard scores (FID, KID, precision, recall in Inception features,
    helper_features) against `num` real images, with `num` other real images
    as the floor. 28 x 28 sets: the reference from the test split, the floor
    from the training split; RGB sets: two disjoint sets of training images.
    Real images' features are cached in `cache_dir`, so only the first use
    pays for them. `protocol` says all of it, to be printed with the numbers."""

    def __init__(self, cfg, num, net, cache_dir, seed=0, log=print):
        if cfg["dataset"] in IDX_SETS:
            ref, other = _pick(dataset_images(cfg, train=False), num, seed), _pick(dataset_images(cfg), num, seed)
            where = f"{num} test-split images; floor: {num} training images"
        else:
            ref, other = _two_disjoint(dataset_images(cfg), num, seed)
            where = f"{num} training images; floor: {num} other training images"
        self.net, self.seed, self.log = net, seed, log
        self.feats = cached_features(net, ref, cache_dir, log)
        self.floor_feats = cached_features(net, other, cache_dir, log)
        self.protocol = {"network": NETWORK, "samples": num, "reference": f"{cfg['dataset']}: {where}",
                         "resize": RESIZE + (", grey repeated to RGB" if ref.shape[1] == 1 else ""),
                         "kid": f"unbiased MMD^2, kernel (a.b/d + 1)^3, {KID_SUBSETS} subsets of up to "
                                f"{KID_SUBSET_SIZE}",
                         "precision_recall": f"k = {PR_K} nearest neighbours"}

    def scores(self, images):
        return feature_scores(self.net(images, self.log), self.feats, self.seed)

    def floor(self):
        return feature_scores(self.floor_feats, self.feats, self.seed)

    def of_generator(self, gen, latent_dim):
        """The scores of `protocol["samples"]` samples of `gen`, keys prefixed "inception_"
        (as evaluations during training and ablate.py's tables hold them)."""
        more = self.scores(samples_of(gen, latent_dim, self.protocol["samples"]))
        return {f"inception_{k}": v for k, v in more.items()}


def make_evaluator(cfg, inception=None):
    """For --eval-every: a function gen -> {metric: float}, the reference loaded
    once. With `inception` (a helper_features.Inception), cfg["eval_inception"]
    samples also get the standard scores, their keys prefixed "inception_"."""
    num = EVAL_NUM[kind_of(cfg)]
    ref = Reference(cfg, num)
    standard = None
    if inception is not None:
        standard = InceptionReference(cfg, cfg["eval_inception"], inception,
                                      cfg["cache_dir"] or default_cache_dir(cfg["data_dir"]))
        print("inception_* scores at each evaluation: " +
              "; ".join(f"{k} {v}" for k, v in standard.protocol.items()), flush=True)

    def evaluate(gen):
        scores = ref.of_generator(gen, cfg, num)
        if standard is not None:
            scores.update(standard.of_generator(gen, cfg["latent_dim"]))
        return {k: v for k, v in scores.items() if isinstance(v, float)}
    return evaluate


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Train (once) and cache the MNIST classifier used by mnist_scores.", allow_abbrev=False)
    p.add_argument("--data-dir", default="data", help="folder that holds MNIST/raw/ (or the set's own folder)")
    p.add_argument("--dataset", choices=list(IDX_SETS), default="mnist", help="which 28 x 28 set")
    p.add_argument("--cache-dir", default=None, help="where to keep the weights (default: beside the data "
                                                      "or ~/.cache/gan-lecture)")
    args = p.parse_args(argv)
    try:
        load_mnist_classifier(args.data_dir, args.cache_dir, name=args.dataset)
    except DataError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()

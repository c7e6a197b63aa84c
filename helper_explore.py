"""Looking inside a trained generator: walks through its latent space, the
truncation trick, and the training images nearest to its samples (did it
copy them?). Functions on tensors, for generate.py's --interpolate K,
--truncation PSI and --nearest; noise is N x latent, images N x C x H x W in
[-1, 1]. Training images may also be uint8 in [0, 255], as the data caches hold
them (CelebA: 2 GB so, 8 GB as floats); they are converted a chunk at a time.

Noise comes from its own seeded torch.Generator on the CPU: the same seed gives
the same latents on any device, and the global RNG is left alone.
"""
import math
import numbers

import torch

PARALLEL_EPS = 1e-6  # below this sin(angle), slerp's weights are 0/0: interpolate linearly


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


# ---------------------------------------------------------------- interpolation

def slerp(a, b, t):
    """Spherical interpolation from a to b, both N x D, along the great circle
    through their directions (the norm changes smoothly too). t: a float -> N x D,
    or T values -> T x N x D. Endpoints are exact (t = 0 gives a, t = 1 gives b);
    (nearly) parallel or opposite pairs, where the circle is undefined, fall back
    to linear interpolation, as does a pair with a zero vector."""
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape or a.dim() < 1:
        raise ValueError(f"slerp needs two tensors of one shape N x D, not "
                         f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")
    scalar_t = torch.as_tensor(t).dim() == 0
    ts = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *[1] * a.dim())    # T x 1 x 1
    # the weights in float64: acos near 0 loses half the digits in float32
    a64, b64 = a.double(), b.double()
    norms = a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)      # N x 1
    cos = ((a64 * b64).sum(-1, keepdim=True) / norms.clamp_min(1e-300)).clamp(-1, 1)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    spherical = (sin > PARALLEL_EPS) & (norms > 0)
    safe_sin = torch.where(spherical, sin, torch.ones_like(sin))
    w_a = torch.where(spherical, torch.sin((1 - ts) * omega) / safe_sin, 1 - ts)   # T x N x 1
    w_b = torch.where(spherical, torch.sin(ts * omega) / safe_sin, ts)
    out = (w_a * a64 + w_b * b64).to(a.dtype)
    return out[0] if scalar_t else out


def interpolation_noise(latent_dim, pairs, steps, seed=0):
    """(pairs * steps) x latent_dim: `pairs` pairs of seeded random endpoints,
    `steps` slerp points from one to the other (both included). Row-major: row
    p of an image grid with nrow=steps walks pair p."""
    _positive_int("latent_dim", latent_dim)
    _positive_int("pairs", pairs)
    _positive_int("steps", steps, minimum=2)
    ends = torch.randn(2, pairs, latent_dim, generator=_generator(seed))          # 2 x K x D
    path = slerp(ends[0], ends[1], torch.linspace(0, 1, steps))                   # steps x K x D
    return path.transpose(0, 1).reshape(pairs * steps, latent_dim)


def interpolation_frames(x, pairs, steps):
    """Frames of a looping animation from interpolation_noise's layout: x is
    (pairs * steps) x ... (the noise, or the images generated from it) ->
    F x pairs x ..., frame t showing every pair at point t. Forward then back
    (ping-pong), the ends not repeated: F = 2 * steps - 2, and the loop has no jump."""
    _positive_int("pairs", pairs)
    _positive_int("steps", steps, minimum=2)
    if len(x) != pairs * steps:
        raise ValueError(f"expected pairs * steps = {pairs * steps} rows, got {len(x)}")
    grid = x.reshape(pairs, steps, *x.shape[1:]).transpose(0, 1)                  # steps x K x ...
    order = list(range(steps)) + list(range(steps - 2, 0, -1))
    return grid[order]


# ---------------------------------------------------------------- truncation

def _check_psi(psi):
    if isinstance(psi, bool) or not isinstance(psi, numbers.Real) or not psi > 0:   # numpy floats too
        raise ValueError(f"truncation psi must be a number > 0 (smaller: more typical, less "
                         f"varied samples), not {psi!r}")


def truncation_rows(latent_dim, psis, per_row, seed=0):
    """(len(psis) * per_row) x latent_dim: one grid row per psi, all rows from
    the SAME uniform draws u. Each u goes through the inverse CDF of the normal
    truncated to [-psi, psi], z = Phi^-1(Phi(-psi) + u (1 - 2 Phi(-psi))), so a
    column keeps its sign and its rank across the rows and only shrinks as psi
    does: the rows show one set of samples at growing truncation (the
    truncation trick of Brock et al. 2019, BigGAN)."""
    _positive_int("latent_dim", latent_dim)
    _positive_int("per_row", per_row)
    psis = list(psis)
    if not psis:
        raise ValueError("truncation_rows needs at least one psi")
    for psi in psis:
        _check_psi(psi)
    # u in (0, 1) strictly: torch.rand's float64 grid shifted by half a step
    u = torch.rand(per_row, latent_dim, generator=_generator(seed), dtype=torch.float64) + 2.0 ** -54
    # work on the nearer tail: q = P(Z <= -|z|) stays accurate for |z| up to ~37,
    # where 1 - q would round to 1 near psi's upper end
    sign, w = torch.sign(u - 0.5), (2 * u - 1).abs()                            # w in [0, 1)
    rows = []
    for psi in psis:
        tail = torch.special.ndtr(torch.tensor(-float(psi), dtype=torch.float64))  # Phi(-psi)
        q = tail + (1 - w) * (0.5 - tail)                                          # in (tail, 0.5]
        z = sign * -torch.special.ndtri(q)
        rows.append(z.clamp(-psi, psi).float())      # clamp: round-off at the very edge
    return torch.cat(rows)


# ---------------------------------------------------------------- nearest training images

def _pixels(x):
    """uint8 in [0, 255] -> float in [-1, 1] by ToTensor + Normalize(0.5, 0.5)'s
    operations (as helper_data.to_float, which this leaf cannot import); floats as they are."""
    return x.float().div(255).sub(0.5).div(0.5) if x.dtype == torch.uint8 else x


def _embed(x, features, batch):
    """N x ... -> N x F in float32: the pixels, or `features` applied `batch` images at a time."""
    if features is None:
        return _pixels(x).reshape(len(x), -1).float()
    with torch.no_grad():
        out = [features(_pixels(chunk)) for chunk in x.split(batch)]
    if not all(torch.is_tensor(f) and len(f) == len(c) for f, c in zip(out, x.split(batch))):
        raise ValueError("features must map a batch of N images to a tensor N x F")
    return torch.cat([f.reshape(len(f), -1).float() for f in out])


def nearest(samples, train, k=3, features=None, batch=1024):
    """The k training images nearest to each sample by Euclidean distance, in
    pixel space or in the space of `features` (a callable images -> N x F, such
    as MnistClassifier.features; it gets at most `batch` images at a time).
    samples n x ..., train M x ... (one image shape) -> (indices n x k into
    train, distances n x k), nearest first. The training set is read in chunks
    of `batch` with a running top-k, so memory stays at n x (k + batch) distances."""
    _positive_int("k", k)
    _positive_int("batch", batch)
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape[1:])} and training images "
                         f"{tuple(train.shape[1:])} must have one shape")
    if k > len(train):
        raise ValueError(f"k = {k} nearest asked for, but there are only {len(train)} training images")
    queries = _embed(samples, features, batch)                                    # n x F
    best_d = queries.new_full((len(queries), 0), math.inf)
    best_i = torch.zeros((len(queries), 0), dtype=torch.long, device=queries.device)
    for start in range(0, len(train), batch):
        chunk = _embed(train[start:start + batch], features, batch).to(queries.device)   # b x F
        d = torch.cdist(queries, chunk)                                           # n x b
        idx = torch.arange(start, start + len(chunk), device=d.device).expand_as(d)
        both = torch.cat([best_d, d], 1)
        best_d, pos = both.topk(min(k, both.shape[1]), dim=1, largest=False)   # fewer while chunks < k
        best_i = torch.cat([best_i, idx], 1).gather(1, pos)
    # cdist ranks through |x|^2 + |y|^2 - 2 x.y, which leaves ~1e-3 where the distance
    # is 0: the k winners' distances again, from the differences (an exact copy reads 0)
    chosen = _embed(train[best_i.flatten().cpu()], features, batch).to(queries.device)
    exact = (chosen.view(len(queries), k, -1) - queries.unsqueeze(1)).norm(dim=-1)   # n x k
    exact, order = exact.sort(dim=1)
    return best_i.gather(1, order), exact


def nearest_grid(samples, train, idx):
    """Each sample followed by its k nearest training images, for
    save_image(..., nrow=k + 1): samples n x C x H x W, idx n x k
    -> (n * (k + 1)) x C x H x W, in the samples' dtype."""
    if idx.dim() != 2 or len(idx) != len(samples):
        raise ValueError(f"idx must be n x k with n = {len(samples)} samples, not {tuple(idx.shape)}")
    if samples.shape[1:] != train.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape[1:])} and training images "
                         f"{tuple(train.shape[1:])} must have one shape")
    neighbours = _pixels(train[idx.cpu()]).to(samples)                            # n x k x C x H x W
    rows = torch.cat([samples.unsqueeze(1), neighbours], dim=1)                   # n x (k+1) x C x H x W
    return rows.flatten(0, 1)

"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training"), written with torch ops on the batch, on its device. A leaf module:
stdlib and torch only.

Why: with little data D memorises the real images and G's gradients become
useless. Augmenting only the reals shifts what G must imitate (it would learn
to draw augmented images), so DiffAugment applies the same random policy to
every image D sees, real and fake, in both the D step and the G step. The
augmentations are differentiable w.r.t. the pixels, so G's gradient passes
through them. Use it as

    d_real = D(diff_augment(real, policy)); d_fake = D(diff_augment(fake, policy))

Each call draws fresh random numbers per sample. Policies, applied in the
order given ("color,translation,cutout" is the paper's choice for small data):
- color: brightness + U(-0.5, 0.5), saturation x U(0, 2) around the channel
  mean (a no-op for grey images), contrast x U(0.5, 1.5) around the image mean.
  Outputs leave [-1, 1]: |value| <= 9 in the worst case, 99 % within 2 on
  uniform noise, as in the original; D sees them, G never has to produce them.
  Draws, in this order: brightness, saturation, contrast, each N x 1 x 1 x 1.
- translation: integer shift by up to 1/8 of the height and width (rounded),
  zero padding; draws the row shifts, then the column shifts (randint, N each).
- cutout: zero a square of half the height and width (rounded) at a random
  centre, clipped where it reaches past the border; draws the centre rows, then columns.
"""
import torch

POLICIES = ("color", "translation", "cutout")


def parse_policy(text):
    """'color,translation' -> ('color', 'translation'); '' or 'none' -> ()."""
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if names == ("none",):
        return ()
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}: use a comma-separated "
                             f"subset of {', '.join(POLICIES)}, or 'none'")
    return names


def diff_augment(x, policy, generator=None):
    """x: N x C x H x W float images in [-1, 1]; policy: a string for parse_policy
    or a tuple of names. Returns a tensor with x's shape, dtype, device and memory
    format, differentiable w.r.t. x. generator (on x's device) makes it reproducible."""
    names = parse_policy(policy) if isinstance(policy, str) else parse_policy(",".join(policy))
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"diff_augment needs a float N x C x H x W batch, got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    if not names:
        return x
    out = x
    for name in names:
        out = AUGMENTS[name](out, generator)
    return out.contiguous(memory_format=_memory_format(x))


def _memory_format(x):
    """channels_last when x is stored that way (and not also plain-contiguous)."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _uniform(x, low, high, generator):
    """N x 1 x 1 x 1 draws from U(low, high) in x's dtype. Drawn in float32 so
    the random stream does not depend on the dtype."""
    u = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator)
    return (low + (high - low) * u).to(x.dtype)


# ---------------------------------------------------------------- color

def color(x, generator=None):
    """Brightness, saturation, contrast: N x C x H x W -> the same shape."""
    x = x + _uniform(x, -0.5, 0.5, generator)
    mean = x.mean(dim=1, keepdim=True)                     # N x 1 x H x W: grey level
    x = (x - mean) * _uniform(x, 0.0, 2.0, generator) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)             # N x 1 x 1 x 1
    return (x - mean) * _uniform(x, 0.5, 1.5, generator) + mean


# ---------------------------------------------------------------- translation

def translation(x, generator=None, ratio=0.125):
    """Shift each image by whole pixels, up to ratio of its size in y and in x."""
    n, _, h, w = x.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_y, max_y + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(-max_x, max_x + 1, (n,), device=x.device, generator=generator)
    return shift(x, dy, dx)


def shift(x, dy, dx):
    """out[i, :, r, c] = x[i, :, r - dy[i], c - dx[i]], zero where that falls
    outside. dy, dx: N integer tensors. Differentiable w.r.t. x (it is indexing);
    no padding, so the shift sizes never need to be read back to the host."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy.view(n, 1, 1)  # N x H x 1
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx.view(n, 1, 1)  # N x 1 x W
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)              # N x H x W
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indices on dims 0, 2, 3 around a slice put the channels last.
    moved = x[batch, :, rows.clamp(0, h - 1), cols.clamp(0, w - 1)]           # N x H x W x C
    return moved.permute(0, 3, 1, 2) * inside.unsqueeze(1).to(x.dtype)       # N x C x H x W


# ---------------------------------------------------------------- cutout

def cutout(x, generator=None, ratio=0.5):
    """Zero one ratio*H x ratio*W rectangle per image, centred anywhere in it."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (n,), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n,), device=x.device, generator=generator)
    return erase(x, cy - size_y // 2, cx - size_x // 2, size_y, size_x)


def erase(x, top, left, size_y, size_x):
    """Zero rows top[i] .. top[i]+size_y-1 x columns left[i] .. left[i]+size_x-1
    of image i (the part inside the image). top, left: N integer tensors."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) - top.view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - left.view(n, 1, 1)
    inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)  # N x H x W
    return x * (~inside).unsqueeze(1).to(x.dtype)


AUGMENTS = {"color": color, "translation": translation, "cutout": cutout}

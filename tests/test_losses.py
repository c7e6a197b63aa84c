"""helper_losses (GAN losses, gradient penalty, R1, R2, weight clipping, spectral
norm) and helper_augment (DiffAugment), checked against hand-computed answers."""
import math

import pytest
import torch
from torch import nn

from helper_augment import (POLICIES, color, cutout, diff_augment, erase, parse_policy, shift,
                            translation)
from helper_flags import LOSS_DEFAULTS
from helper_losses import (LOSSES, clip_weights_, d_accuracy, d_loss, g_loss,
                           gradient_penalty, r1_penalty, r2_penalty, spectral_norm_)


def softplus(v):
    return math.log1p(math.exp(v))


def bce(logit, target):
    """Binary cross entropy with logits, by hand: -t log s(l) - (1 - t) log(1 - s(l))."""
    return target * softplus(-logit) + (1 - target) * softplus(logit)


REAL, FAKE = [2.0, -1.0], [0.5, -3.0]


def scores(values):
    return torch.tensor(values, dtype=torch.float32)


class LinearD(nn.Module):
    """D(x) = w . flatten(x) + b: its input gradient is w for every x."""

    def __init__(self, shape, w):
        super().__init__()
        self.w = nn.Parameter(w.reshape(-1).clone())
        self.b = nn.Parameter(torch.tensor(0.3))
        self.shape = shape

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b                   # N


class HalfSquareD(nn.Module):
    """D(x) = 0.5 a ||x||^2 per sample, a = 1: its input gradient is a x, so
    (unlike a linear D) it depends on the images the penalty is taken at."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(dim=1)


def tiny_dcgan_disc(channels=3):
    """A DCGAN-shaped discriminator for 16 x 16 images."""
    return nn.Sequential(
        nn.Conv2d(channels, 8, 4, 2, 1), nn.LeakyReLU(0.2),                 # 8 x 8 x 8
        nn.Conv2d(8, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),  # 16 x 4 x 4
        nn.Conv2d(16, 1, 4, 1, 0), nn.Flatten(0))                         # N


def tiny_fc_disc():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LeakyReLU(0.2),
                         nn.Linear(32, 1), nn.Flatten(0))


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("kind, d_expected, g_expected", [
    ("bce", 0.5 * ((bce(2, 1) + bce(-1, 1)) / 2 + (bce(0.5, 0) + bce(-3, 0)) / 2),
     (bce(0.5, 1) + bce(-3, 1)) / 2),
    ("wgan", (0.5 - 3) / 2 - (2 - 1) / 2, -(0.5 - 3) / 2),
    ("wgan-gp", -1.75, 1.25),
    ("hinge", (0 + 2) / 2 + (1.5 + 0) / 2, 1.25),
])
def test_losses_match_hand_computed_values(kind, d_expected, g_expected):
    assert d_loss(kind, scores(REAL), scores(FAKE)).item() == pytest.approx(d_expected, abs=1e-6)
    assert g_loss(kind, scores(FAKE)).item() == pytest.approx(g_expected, abs=1e-6)


def test_rpgan_losses_match_hand_computed_values_pair_by_pair():
    # D: softplus(-(real_i - fake_i)), G: softplus(-(fake_i - real_i)), each pair on its own
    d_expected = (softplus(-(2.0 - 0.5)) + softplus(-(-1.0 + 3.0))) / 2
    g_expected = (softplus(-(0.5 - 2.0)) + softplus(-(-3.0 + 1.0))) / 2
    assert d_loss("rpgan", scores(REAL), scores(FAKE)).item() == pytest.approx(d_expected, abs=1e-6)
    assert g_loss("rpgan", scores(FAKE), scores(REAL)).item() == pytest.approx(g_expected, abs=1e-6)
    # the pairing matters: the same scores in other pairs give another loss (a loss of the
    # batch means, softplus(mean fake - mean real), would not see it)
    swapped = scores(FAKE[::-1])
    assert d_loss("rpgan", scores(REAL), swapped).item() != pytest.approx(d_expected, abs=1e-3)


def test_rpgan_g_loss_needs_the_paired_real_scores_and_holds_them_constant():
    with pytest.raises(ValueError, match="paired real"):
        g_loss("rpgan", scores(FAKE))
    with pytest.raises(ValueError, match="pairs"):
        d_loss("rpgan", scores(REAL), scores(FAKE + [0.0]))
    real, fake = scores(REAL).requires_grad_(), scores(FAKE).requires_grad_()
    g_loss("rpgan", fake, real).backward()
    assert real.grad is None and fake.grad is not None      # no way from G's loss into D(x)


def test_bce_label_smoothing_targets_only_the_real_images():
    expected = 0.5 * ((bce(2, 0.9) + bce(-1, 0.9)) / 2 + (bce(0.5, 0) + bce(-3, 0)) / 2)
    got = d_loss("bce", scores(REAL), scores(FAKE), real_target=0.9)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert got.dtype == torch.float32 and got.dim() == 0


def test_losses_reject_bad_input():
    with pytest.raises(ValueError, match="'lsgan'"):
        d_loss("lsgan", scores(REAL), scores(FAKE))
    with pytest.raises(ValueError, match="label smoothing"):
        d_loss("wgan", scores(REAL), scores(FAKE), real_target=0.9)
    with pytest.raises(ValueError, match="shape N"):   # N x 1 would broadcast silently elsewhere
        g_loss("bce", scores(FAKE).view(2, 1))
    with pytest.raises(ValueError, match="real_target"):
        d_loss("bce", scores(REAL), scores(FAKE), real_target=1.5)


@pytest.mark.parametrize("kind", LOSSES)
def test_d_accuracy_separated_and_identical(kind):
    real, fake = scores([2.0, 3.0, 1.0]), scores([-1.0, -2.0, -0.5])
    assert [a.item() for a in d_accuracy(kind, real, fake)] == [1.0, 1.0]
    same = scores([0.7, 0.7, 0.7])
    acc_real, acc_fake = (a.item() for a in d_accuracy(kind, same, same))
    if kind in ("bce", "hinge"):    # sign rule: all called real
        assert (acc_real, acc_fake) == (1.0, 0.0)
    else:                           # median rule: ties count half
        assert (acc_real, acc_fake) == (0.5, 0.5)


def test_wgan_accuracy_ignores_where_the_critic_scores_sit():
    # All scores positive: the sign rule would call every fake real, the median rule does not.
    real, fake = scores([10.0, 11.0]), scores([7.0, 8.0])
    assert [a.item() for a in d_accuracy("wgan", real, fake)] == [1.0, 1.0]
    assert [a.item() for a in d_accuracy("bce", real, fake)] == [1.0, 0.0]
    # Median of {0, 1, 2, 3} is 1.5: one real above, one fake below.
    accuracy = d_accuracy("wgan-gp", scores([1.0, 3.0]), scores([2.0, 0.0]))
    assert [a.item() for a in accuracy] == [0.5, 0.5]


def test_loss_defaults_cover_every_loss_with_the_cli_keys():
    base = {"beta1", "beta2", "lr_gen", "lr_disc", "n_critic"}
    assert set(LOSS_DEFAULTS) == set(LOSSES)
    assert set(LOSS_DEFAULTS["bce"]) == set(LOSS_DEFAULTS["hinge"]) == set(LOSS_DEFAULTS["rpgan"]) == base
    assert (LOSS_DEFAULTS["rpgan"]["beta1"], LOSS_DEFAULTS["rpgan"]["beta2"]) == (0.0, 0.99)   # R3GAN
    assert set(LOSS_DEFAULTS["wgan"]) == base | {"clip"}
    assert set(LOSS_DEFAULTS["wgan-gp"]) == base | {"gp_weight"}
    for defaults in LOSS_DEFAULTS.values():    # Adam refuses betas=(0, 0.9): int and float mixed
        assert all(type(v) is float for k, v in defaults.items() if k != "n_critic")
        assert type(defaults["n_critic"]) is int and defaults["n_critic"] >= 1
    assert LOSS_DEFAULTS["bce"] == {"beta1": 0.5, "beta2": 0.999, "lr_gen": 2e-4,
                                    "lr_disc": 2e-4, "n_critic": 1}   # the lecture


# ---------------------------------------------------------------- gradient penalty and R1

def linear_case(seed=0, shape=(1, 28, 28), n=6):
    g = torch.Generator().manual_seed(seed)
    w = 0.05 * torch.randn(math.prod(shape), generator=g)
    real = torch.rand((n,) + shape, generator=g) * 2 - 1
    return LinearD(shape, w), real, w


def test_gradient_penalty_of_a_linear_d_is_weight_times_norm_minus_one_squared():
    disc, real, w = linear_case()
    gp = gradient_penalty(disc, real, torch.rand_like(real), weight=10.0)
    norm = w.norm().item()
    assert gp.item() == pytest.approx(10.0 * (norm - 1) ** 2, rel=1e-5)
    gp.backward()
    # create_graph: the penalty trains D, d GP / d w = weight * 2 (||w|| - 1) w / ||w||.
    torch.testing.assert_close(disc.w.grad, 10.0 * 2 * (norm - 1) * w / norm, rtol=1e-4, atol=1e-7)


def test_gradient_penalty_trains_d_but_not_g():
    real = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    gen_param = nn.Parameter(torch.randn(real.shape))
    fake = torch.tanh(gen_param)                    # a fake that G's parameter produced
    disc = HalfSquareD()                            # gradient a * x_hat: depends on the fake
    gradient_penalty(disc, real, fake).backward()
    assert disc.a.grad is not None and disc.a.grad != 0
    assert gen_param.grad is None                   # fake was detached: G gets nothing


def test_gradient_penalty_interpolates_with_one_eps_per_sample():
    # D = 0.5 ||x||^2 has gradient x_hat = eps * real (fake = 0), so the norm is eps_i ||real_i||.
    real = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    gp = gradient_penalty(HalfSquareD(), real, torch.zeros_like(real), weight=2.0,
                          generator=torch.Generator().manual_seed(7))
    eps = torch.rand(5, 1, 1, 1, generator=torch.Generator().manual_seed(7)).view(5)
    expected = 2.0 * ((eps * real.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)


def test_r1_of_a_linear_d_is_half_gamma_norm_squared():
    disc, real, w = linear_case(seed=2)
    r1 = r1_penalty(disc, real, gamma=4.0)
    assert r1.item() == pytest.approx(4.0 / 2 * w.pow(2).sum().item(), rel=1e-5)
    r1.backward()
    torch.testing.assert_close(disc.w.grad, 4.0 * w, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("make", ["linear", "dcgan"])
def test_penalties_are_float32_and_unchanged_under_bf16_autocast(make):
    torch.manual_seed(3)
    if make == "linear":
        disc, real, _ = linear_case(seed=3)
    else:
        disc, real = tiny_dcgan_disc(), torch.rand(4, 3, 16, 16) * 2 - 1
    fake = torch.rand_like(real) * 2 - 1

    def penalties():        # images as a bf16 generator under AMP would hand them over
        gp = gradient_penalty(disc, real.bfloat16(), fake.bfloat16(),
                              generator=torch.Generator().manual_seed(0))
        return (gp, r1_penalty(disc, real.bfloat16(), gamma=1.0),
                r2_penalty(disc, fake.bfloat16(), gamma=1.0))

    outside = penalties()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = penalties()
    for a, b in zip(outside, inside):
        assert a.dtype == b.dtype == torch.float32
        assert b.item() == pytest.approx(a.item(), rel=1e-5)


def test_gradient_penalty_accepts_channels_last_inputs():
    torch.manual_seed(4)
    disc = tiny_dcgan_disc()
    real, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    plain = gradient_penalty(disc, real, fake, generator=torch.Generator().manual_seed(0))
    cl = torch.channels_last
    packed = gradient_penalty(disc, real.contiguous(memory_format=cl),
                              fake.contiguous(memory_format=cl),
                              generator=torch.Generator().manual_seed(0))
    assert packed.item() == pytest.approx(plain.item(), rel=1e-4)


def test_penalties_reject_bad_input():
    disc, real, _ = linear_case()
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(disc, real, real[:3])
    with pytest.raises(ValueError, match="R1 gamma"):
        r1_penalty(disc, real, gamma=-1.0)
    with pytest.raises(ValueError, match="R2 gamma"):
        r2_penalty(disc, real, gamma=-1.0)


@pytest.mark.parametrize("penalty", [r1_penalty, r2_penalty])
@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_centred_penalty_sums_over_c_h_w_per_sample_and_averages_over_the_batch(penalty,
                                                                                       channels_last):
    # D = 0.5 ||x||^2 has gradient x: the penalty is gamma / 2 * mean_i sum_chw x_i^2, which a
    # mean over C, H, W, a norm without the square or a sum over the batch would all miss.
    x = torch.rand(3, 2, 4, 5, generator=torch.Generator().manual_seed(6)) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = 0.7 / 2 * sum(x[i].pow(2).sum().item() for i in range(3)) / 3
    assert penalty(HalfSquareD(), x, gamma=0.7).item() == pytest.approx(expected, rel=1e-5)


class TanhD(nn.Module):
    """D(x) = v . tanh(W x) on 2-vectors: a curved D, so the penalty's gradient has a
    second-order part (through tanh'), which a missing create_graph would drop."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[0.8, -0.5], [0.3, 1.2]]))
        self.v = nn.Parameter(torch.tensor([1.5, -0.7]))

    def forward(self, x):
        return torch.tanh(x @ self.W.T) @ self.v


def test_r2_trains_d_by_the_hand_computed_double_backward_and_never_g():
    gen_param = nn.Parameter(torch.tensor([[0.4, -0.9], [1.1, 0.2], [-0.6, 0.5]]))
    fake = 2 * gen_param                             # fakes that G's parameter produced
    disc, gamma = TanhD(), 3.0
    r2 = r2_penalty(disc, fake, gamma)
    r2.backward()
    assert gen_param.grad is None                    # detached: R2 trains D only
    # By hand, per sample: h = W x, s = 1 - tanh(h)^2, u = v s, g = grad_x D = W^T u,
    # P = gamma / 2 ||g||^2;  dP/dv = gamma s (W g);
    # dP/dW = gamma (u g^T + (v (W g) (-2 tanh(h) s)) x^T).
    W, v = disc.W.detach(), disc.v.detach()
    value, dW, dv = 0.0, torch.zeros(2, 2), torch.zeros(2)
    for x in fake.detach():
        h = W @ x
        s = 1 - torch.tanh(h) ** 2
        u = v * s
        g = W.T @ u
        value += gamma / 2 * g.dot(g).item() / 3
        dv += gamma * s * (W @ g) / 3
        dW += gamma * (torch.outer(u, g) + torch.outer(v * (W @ g) * (-2 * torch.tanh(h) * s), x)) / 3
    assert r2.item() == pytest.approx(value, rel=1e-5)
    torch.testing.assert_close(disc.v.grad, dv, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(disc.W.grad, dW, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- Lipschitz constraints

def test_clip_weights_bounds_every_parameter_and_keeps_small_ones():
    torch.manual_seed(5)
    disc = tiny_dcgan_disc()
    with torch.no_grad():
        for p in disc.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    before = [p.clone() for p in disc.parameters()]
    assert clip_weights_(disc, 0.01) is disc
    for old, new in zip(before, disc.parameters()):
        assert new.abs().max() <= 0.01
        inside = old.abs() <= 0.01
        assert torch.equal(new[inside], old[inside])
        assert torch.equal(new[~inside], 0.01 * old[~inside].sign())


def largest_singular_value(weight, dim=0):
    matrix = weight.transpose(0, dim).reshape(weight.shape[dim], -1)
    return torch.linalg.matrix_norm(matrix, ord=2).item()


@pytest.mark.parametrize("make, x_shape", [(tiny_dcgan_disc, (8, 3, 16, 16)),
                                           (tiny_fc_disc, (8, 1, 28, 28))])
def test_spectral_norm_brings_every_layer_to_unit_norm(make, x_shape):
    torch.manual_seed(6)
    disc = make()
    with torch.no_grad():   # start far from 1
        for m in disc.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(5.0)
    layers = [m for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(largest_singular_value(m.weight) > 1.5 for m in layers)
    assert spectral_norm_(disc) is disc
    spectral_norm_(disc)    # a second call adds nothing
    disc.train()
    for _ in range(10):     # each train-mode forward runs one power iteration
        disc(torch.randn(x_shape))
    for m in layers:        # 15 iterations at registration, then 10: within 2 %
        assert len(m.parametrizations.weight) == 1
        assert largest_singular_value(m.weight) == pytest.approx(1.0, abs=2e-2)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    assert n_bn == (1 if make is tiny_dcgan_disc else 0)   # BatchNorm stays


def test_spectral_norm_handles_transposed_convolutions():
    torch.manual_seed(8)
    up = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1))
    with torch.no_grad():
        up[0].weight.mul_(5.0)
    spectral_norm_(up)
    for _ in range(20):     # slower to converge: its top singular values lie close together
        up(torch.randn(2, 16, 4, 4))
    # ConvTranspose2d weights are in x out x k x k: normalised along the output dimension 1.
    assert largest_singular_value(up[0].weight, dim=1) == pytest.approx(1.0, abs=2e-2)


# ---------------------------------------------------------------- DiffAugment

def images(shape, seed=0, channels_last=False):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def test_parse_policy():
    assert parse_policy("color, Translation,cutout") == POLICIES
    assert parse_policy("") == parse_policy("none") == ()
    with pytest.raises(ValueError, match="'blur'"):
        parse_policy("color,blur")
    with pytest.raises(ValueError, match="'blur'"):
        diff_augment(images((2, 1, 28, 28)), "blur")
    with pytest.raises(ValueError, match="N x C x H x W"):
        diff_augment(torch.rand(1, 28, 28), "color")


@pytest.mark.parametrize("shape, channels_last", [((4, 1, 28, 28), False), ((4, 3, 64, 64), False),
                                                  ((4, 3, 64, 64), True)])
def test_diff_augment_keeps_shape_dtype_layout_and_is_differentiable(shape, channels_last):
    x = images(shape, channels_last=channels_last).requires_grad_(True)
    out = diff_augment(x, "color,translation,cutout", generator=torch.Generator().manual_seed(0))
    assert (out.shape, out.dtype, out.device) == (x.shape, x.dtype, x.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Same seed, same numbers, whatever the layout.
    again = diff_augment(images(shape), POLICIES, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.detach(), again)


def test_diff_augment_is_seeded_and_random_per_call():
    x = images((8, 3, 32, 32))
    a, b, c = (diff_augment(x, POLICIES, generator=torch.Generator().manual_seed(seed))
               for seed in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert diff_augment(x.bfloat16(), POLICIES).dtype == torch.bfloat16


def test_empty_policy_returns_the_input():
    x = images((2, 3, 8, 8))
    assert diff_augment(x, "") is x and diff_augment(x, "none") is x and diff_augment(x, ()) is x


def test_shift_moves_pixels_and_pads_with_zeros():
    x = torch.zeros(2, 3, 28, 28)
    x[:, :, 10, 12] = 1.0
    x[:, :, 20, 5] = 0.5
    out = shift(x, dy=torch.tensor([3, 9]), dx=torch.tensor([-2, -2]))
    assert out.shape == x.shape
    assert out[0, :, 13, 10].tolist() == [1.0] * 3 and out[0, :, 23, 3].tolist() == [0.5] * 3
    assert out[0].sum() == 3 * 1.5
    assert out[1, :, 19, 10].tolist() == [1.0] * 3
    assert out[1].sum() == 3 * 1.0      # the 0.5 pixel went to row 29: gone, nothing wrapped in
    # Zero padding: an all-ones image keeps (H - |dy|) x (W - |dx|) ones, no edge copies.
    ones = shift(torch.ones(2, 1, 28, 28), dy=torch.tensor([3, -5]), dx=torch.tensor([-2, 0]))
    assert ones.sum(dim=(1, 2, 3)).tolist() == [25 * 26, 23 * 28]
    assert ones[0, 0, :3].sum() == 0 and ones[0, 0, :, -2:].sum() == 0


def test_translation_moves_a_bright_pixel_by_at_most_one_eighth():
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = translation(x, generator=torch.Generator().manual_seed(0))
    offsets = set()
    for img in out:
        assert img.sum() == 1.0 and img.max() == 1.0         # one pixel, moved, not blurred
        r, c = (img[0] == 1.0).nonzero()[0].tolist()
        assert abs(r - 14) <= 4 and abs(c - 14) <= 4          # 28 / 8 = 3.5, rounded to 4
        offsets.add((r - 14, c - 14))
    assert len(offsets) > 4                                   # each image its own shift


def test_erase_zeroes_exactly_the_given_rectangle():
    out = erase(torch.ones(1, 3, 28, 28), torch.tensor([2]), torch.tensor([3]), 14, 14)
    assert (out[:, :, 2:16, 3:17] == 0).all()
    assert (out == 0).sum() == 3 * 14 * 14


@pytest.mark.parametrize("size", [28, 64])
def test_cutout_zeroes_a_half_size_square(size):
    x = torch.ones(64, 3, size, size)
    out = cutout(x, generator=torch.Generator().manual_seed(0))
    half, fully_inside = size // 2, 0
    for img in out:
        zero = img[0] == 0
        assert torch.equal(zero.expand_as(img), img == 0)     # the same square in every channel
        rows, cols = zero.any(dim=1).nonzero().view(-1), zero.any(dim=0).nonzero().view(-1)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        assert zero[top:bottom + 1, left:right + 1].all()     # a filled rectangle
        assert bottom - top + 1 <= half and right - left + 1 <= half
        if top > 0 and left > 0 and bottom < size - 1 and right < size - 1:
            assert zero.sum() == half * half
            fully_inside += 1
    assert fully_inside > 0


def test_color_on_constant_images_is_a_brightness_shift():
    # Saturation and contrast scale around the pixel's and image's mean: nothing to scale here.
    flat = torch.full((8, 3, 4, 4), 0.2)
    out = color(flat, generator=torch.Generator().manual_seed(0))
    shifts = (out - 0.2).flatten(1)
    assert torch.allclose(shifts, shifts[:, :1].expand_as(shifts), atol=1e-6)
    assert shifts.abs().max() <= 0.5 and shifts[:, 0].std() > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_color_replayed_by_hand(channels):
    # Draw order (documented): brightness b, saturation s, contrast k, each N x 1 x 1 x 1.
    x = images((4, channels, 8, 8))
    out = color(x, generator=torch.Generator().manual_seed(1))
    b, s, k = torch.rand(3, 4, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    y = x + (b - 0.5)
    grey = y.mean(dim=1, keepdim=True)
    if channels == 1:
        assert torch.equal(grey, y)             # saturation is a no-op on grey images
    y = (y - grey) * (2 * s) + grey
    mean = y.mean(dim=(1, 2, 3), keepdim=True)   # one mean per image, over all channels
    torch.testing.assert_close(out, (y - mean) * (0.5 + k) + mean)


def test_augmented_real_and_fake_batches_match_in_shape_and_stay_bounded():
    real, fake = images((16, 3, 64, 64), seed=1), torch.tanh(images((16, 3, 64, 64), seed=2) * 3)
    a, b = diff_augment(real, POLICIES), diff_augment(fake, POLICIES)
    assert a.shape == b.shape == real.shape
    # Worst case of color on [-1, 1]: brightness to 1.5, saturation (x2) to 4.5,
    # contrast (x1.5) to 9.
    assert a.abs().max() <= 9 and b.abs().max() <= 9
    for x in (real, fake):          # translation and cutout only move or zero pixels
        moved = diff_augment(x, "translation,cutout")
        assert moved.min() >= -1 and moved.max() <= 1

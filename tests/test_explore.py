"""helper_explore: slerp's geometry, the interpolation and truncation noise
(shapes, seeds, known statistics), and the nearest-training-image search
against a brute-force answer."""
import math

import pytest
import torch

from helper_explore import (interpolation_frames, interpolation_noise, nearest, nearest_grid, slerp,
                            truncation_rows)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def truncated_std(psi):
    """Standard deviation of N(0, 1) truncated to [-psi, psi]: 1 - 2 psi phi(psi) / (2 Phi(psi) - 1)."""
    phi = math.exp(-psi * psi / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * psi * phi / math.erf(psi / math.sqrt(2)))


# ---------------------------------------------------------------- slerp

def test_slerp_endpoints_are_exact():
    a, b = randn(5, 100, seed=1), randn(5, 100, seed=2)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    path = slerp(a, b, torch.linspace(0, 1, 7))
    assert path.shape == (7, 5, 100) and path.dtype == torch.float32
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)


def test_slerp_midpoint_of_orthogonal_unit_vectors():
    a, b = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), torch.ones(1))                       # on the sphere, not 1/sqrt(2)
    assert torch.allclose(mid, torch.tensor([[1.0, 1.0, 0.0]]) / math.sqrt(2))  # at 45 degrees from each
    quarter = slerp(a, b, 1 / 3)                                                # equal angles along the arc
    assert math.degrees(math.acos(float((quarter * a).sum()))) == pytest.approx(30, abs=1e-4)


def test_slerp_keeps_the_norm_between_equal_norm_endpoints():
    a = randn(4, 50, seed=3)
    b = randn(4, 50, seed=4)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    norms = slerp(a, b, torch.linspace(0, 1, 9)).norm(dim=2)                    # 9 x 4
    assert torch.allclose(norms, a.norm(dim=1).expand(9, 4), rtol=1e-5)


def test_slerp_parallel_opposite_and_zero_fall_back_to_linear():
    a = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 4.0], [-1.0, -2.0], [3.0, 1.0]])
    out = slerp(a, b, torch.tensor([0.25, 0.5]))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.stack([0.75 * a + 0.25 * b, 0.5 * a + 0.5 * b]))


def test_slerp_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        slerp(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)


# ---------------------------------------------------------------- interpolation noise and frames

def test_interpolation_noise_layout_and_seed():
    z = interpolation_noise(16, pairs=3, steps=5, seed=7)
    assert z.shape == (15, 16)
    assert torch.equal(z, interpolation_noise(16, 3, 5, seed=7))
    assert not torch.equal(z, interpolation_noise(16, 3, 5, seed=8))
    rows = z.view(3, 5, 16)                      # one grid row per pair
    ends = randn(2, 3, 16, seed=7)
    assert torch.equal(rows[:, 0], ends[0]) and torch.equal(rows[:, -1], ends[1])
    assert torch.allclose(rows[:, 2], slerp(ends[0], ends[1], 0.5))


def test_interpolation_frames_ping_pong():
    z = interpolation_noise(8, pairs=2, steps=4, seed=0)
    frames = interpolation_frames(z, pairs=2, steps=4)
    assert frames.shape == (6, 2, 8)                              # 0 1 2 3 2 1, then loops to 0
    rows = z.view(2, 4, 8)
    for f, t in enumerate([0, 1, 2, 3, 2, 1]):
        assert torch.equal(frames[f], rows[:, t])
    images = torch.rand(8, 1, 5, 5)                               # works on the generated images too
    assert interpolation_frames(images, 2, 4).shape == (6, 2, 1, 5, 5)
    with pytest.raises(ValueError, match="pairs \\* steps = 8"):
        interpolation_frames(torch.zeros(9, 8), 2, 4)


# ---------------------------------------------------------------- truncation

def test_truncated_rows_bound_seed_and_statistics():
    stds = []
    for psi in (0.25, 0.5, 1.0, 2.0):
        z = truncation_rows(64, [psi], per_row=500, seed=1).float()
        assert z.shape == (500, 64) and z.abs().max() <= psi
        assert torch.equal(z, truncation_rows(64, [psi], per_row=500, seed=1).float())
        assert abs(float(z.mean())) < 0.01 * psi + 0.005                 # 32,000 values
        assert float(z.std()) == pytest.approx(truncated_std(psi), rel=0.02)
        stds.append(float(z.std()))
    assert stds == sorted(stds)
    assert float(truncation_rows(64, [100.0], per_row=500, seed=1).std()) == pytest.approx(1, rel=0.02)


@pytest.mark.parametrize("psi", [0, -1, float("nan"), "1", True])
def test_truncation_psi_must_be_positive(psi):
    with pytest.raises(ValueError, match="psi must be a number > 0"):
        truncation_rows(8, [1.0, psi], 4)


def test_truncation_rows_share_their_draws():
    psis = [0.1, 0.5, 1.0, 2.0, float("inf")]
    z = truncation_rows(32, psis, per_row=200, seed=3)
    assert z.shape == (1000, 32)
    assert torch.equal(z, truncation_rows(32, psis, 200, seed=3))
    rows = z.view(5, 200, 32)
    for psi, row in zip(psis, rows):
        assert row.abs().max() <= psi
        if psi != float("inf"):
            assert float(row.std()) == pytest.approx(truncated_std(psi), rel=0.03)
    assert float(rows[-1].std()) == pytest.approx(1, rel=0.03) and torch.isfinite(rows[-1]).all()
    assert (torch.sign(rows) == torch.sign(rows[0])).all()            # each column keeps its sign...
    assert (rows.abs().diff(dim=0) >= 0).all()                        # ...and only grows with psi


# ---------------------------------------------------------------- nearest training images

def brute_force(samples, train, k):
    d = (samples.flatten(1).double()[:, None] - train.flatten(1).double()[None]).norm(dim=2)
    return d.topk(k, dim=1, largest=False)


def test_nearest_finds_a_planted_copy():
    train = torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    samples = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    samples[2] = train[3210]
    idx, dist = nearest(samples, train, k=3, batch=700)
    assert idx.shape == dist.shape == (4, 3)
    assert idx[2, 0] == 3210 and dist[2, 0] == 0
    assert (dist[:, 1:] > 10).all() and (dist.diff(dim=1) >= 0).all()


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_nearest_in_chunks_equals_brute_force(batch):
    train = randn(64, 3, 4, 4, seed=5)
    samples = randn(9, 3, 4, 4, seed=6)
    idx, dist = nearest(samples, train, k=5, batch=batch)
    want_d, want_i = brute_force(samples, train, 5)
    assert torch.equal(idx, want_i)
    assert torch.allclose(dist.double(), want_d, rtol=1e-5, atol=1e-5)


def test_nearest_uses_the_feature_space():
    train = randn(50, 1, 6, 6, seed=7)
    samples = randn(3, 1, 6, 6, seed=8)
    seen = []

    def brightness(x):                  # a 1-d feature: mean pixel value
        seen.append(len(x))
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    idx, dist = nearest(samples, train, k=2, features=brightness, batch=16)
    assert seen and max(seen) <= 16      # called on chunks, never the whole training set
    want_d, want_i = brute_force(brightness(samples), brightness(train), 2)
    assert torch.equal(idx, want_i)
    assert torch.allclose(dist.double(), want_d, atol=1e-6)
    with pytest.raises(ValueError, match="features must map"):
        nearest(samples, train, features=lambda x: x[:1].flatten(1))


def test_nearest_takes_uint8_training_images():
    """As the data caches store them: each chunk becomes [-1, 1] the way helper_data.to_float does."""
    train = torch.randint(0, 256, (70, 3, 4, 4), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(9))
    as_float = train.float().div(255).sub(0.5).div(0.5)
    samples = randn(5, 3, 4, 4, seed=10).clamp(-1, 1)
    samples[3] = as_float[42]
    for features in (None, lambda x: x.mean(dim=(2, 3))):
        idx, dist = nearest(samples, train, k=4, features=features, batch=16)
        want_i, want_d = nearest(samples, as_float, k=4, features=features, batch=16)
        assert torch.equal(idx, want_i) and torch.equal(dist, want_d)
        assert idx[3, 0] == 42 and dist[3, 0] == 0
    grid = nearest_grid(samples, train, idx)
    assert grid.dtype == torch.float32 and torch.equal(grid[3 * 5 + 1], as_float[42])


def test_nearest_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        nearest(torch.zeros(2, 1, 28, 28), torch.zeros(10, 1, 27, 27))
    with pytest.raises(ValueError, match="only 10 training images"):
        nearest(torch.zeros(2, 4), torch.zeros(10, 4), k=11)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        nearest(torch.zeros(2, 4), torch.zeros(10, 4), k=0)


def test_nearest_grid_rows():
    train = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 2, 2)
    samples = torch.full((2, 1, 2, 2), -1.0)
    idx = torch.tensor([[3, 4, 5], [9, 0, 1]])
    grid = nearest_grid(samples, train, idx)
    assert grid.shape == (8, 1, 2, 2)
    assert grid[:, 0, 0, 0].tolist() == [-1, 3, 4, 5, -1, 9, 0, 1]
    with pytest.raises(ValueError, match="idx must be n x k with n = 2"):
        nearest_grid(samples, train, idx[:1])

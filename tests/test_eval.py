"""Tests of helper_eval: metric properties on small synthetic data, and the
classifier cache with a few batches of a fake MNIST."""
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import helper_eval as ev  # noqa: E402
import helper_features as hf  # noqa: E402
from conftest import make_mnist  # noqa: E402



def gaussian_with_exact_moments(n, mean, var, seed):
    """n x d samples whose sample mean and (ddof=1) covariance are exactly mean and diag(var)."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: covariance exactly I
    return z * np.sqrt(var) + mean


def smooth_images(n, channels=3, size=64, seed=0):
    """Blurry random images in [-1, 1]: more image-like than white noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size // 4, size // 4, generator=g) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- Frechet distance

def test_frechet_identical_sets_is_zero():
    f = torch.randn(500, 16)
    assert abs(hf.frechet_distance(f, f)) < 1e-6


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    d = 6
    mu_a, mu_b = np.zeros(d), np.linspace(-1, 2, d)
    var_a, var_b = np.linspace(0.5, 2, d), np.linspace(3, 0.2, d)
    a = gaussian_with_exact_moments(400, mu_a, var_a, seed=1)
    b = gaussian_with_exact_moments(300, mu_b, var_b, seed=2)
    expected = ((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * np.sqrt(var_a * var_b)).sum()
    assert hf.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_grows_with_mean_shift():
    a = torch.randn(1000, 8)
    b = torch.randn(1000, 8)
    dists = [hf.frechet_distance(a, b + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert dists == sorted(dists)
    assert dists[3] - dists[0] == pytest.approx(4 * 8, rel=0.1)  # + |shift|^2 = 4 per dimension


# ---------------------------------------------------------------- Inception Score

def test_inception_score_constant_output_is_one():
    logits = torch.randn(1, 10).repeat(50, 1)
    assert ev.inception_score_from_logits(logits) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_inception_score_confident_balanced_is_k(k):
    labels = torch.arange(200) % k
    logits = 50.0 * F.one_hot(labels, 10).float()  # near one-hot softmax
    assert ev.inception_score_from_logits(logits) == pytest.approx(k, rel=1e-3)


def test_mnist_scores_keys_and_shares():
    torch.manual_seed(0)
    clf = ev.MnistClassifier()
    x = torch.rand(30, 1, 28, 28) * 2 - 1
    assert clf(x).shape == (30, 10) and clf.features(x).shape == (30, 128)
    s = ev.mnist_scores(*ev._classify(clf, x), ev._classify(clf, torch.rand(20, 1, 28, 28) * 2 - 1)[0])
    assert set(s) == {"fid", "kid_x1e3", "kid_std_x1e3", "precision", "recall", "inception_score",
                      "class_shares", "min_class_share"}
    assert 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1
    assert len(s["class_shares"]) == 10 and sum(s["class_shares"]) == pytest.approx(1.0)
    assert s["min_class_share"] == min(s["class_shares"])
    assert 1.0 <= s["inception_score"] <= 10.0 + 1e-9
    assert clf.training  # mode restored


# ---------------------------------------------------------------- SWD

def test_swd_levels_and_keys():
    keys = list(ev.swd(smooth_images(4), smooth_images(4, seed=1)))
    assert keys == ["swd_64", "swd_32", "swd_16", "swd_mean"]
    gray = smooth_images(4, channels=1, size=28)
    assert list(ev.swd(gray, gray)) == ["swd_28", "swd_mean"]


def test_swd_same_distribution_small_shift_and_noise_larger():
    a, b = smooth_images(32, seed=1), smooth_images(32, seed=2)
    same = ev.swd(a, b)["swd_mean"]
    self_ = ev.swd(a, a)["swd_mean"]
    shifted = ev.swd(a, (b + 0.3).clamp(-1, 1))["swd_mean"]
    noise = torch.randn(b.shape, generator=torch.Generator().manual_seed(3))
    noisy = ev.swd(a, (b + 0.2 * noise).clamp(-1, 1))
    assert self_ < 2 * same
    assert shifted > 3 * same
    assert noisy["swd_mean"] > 3 * same
    assert noisy["swd_64"] > noisy["swd_16"]  # noise is fine detail: shows most at the finest level


def test_swd_deterministic_and_leaves_global_rng_alone():
    a, b = smooth_images(8, seed=1), smooth_images(8, seed=2)
    state = torch.get_rng_state()
    assert ev.swd(a, b, seed=5) == ev.swd(a, b, seed=5)
    assert ev.swd(a, b, seed=5) != ev.swd(a, b, seed=6)
    assert torch.equal(state, torch.get_rng_state())


def test_laplacian_pyramid_reconstructs():
    x = smooth_images(2, size=64)
    levels = ev.laplacian_pyramid(x)
    img = levels[-1]
    for band in reversed(levels[:-1]):  # undo each step: up(coarser) + band
        up = torch.zeros(*img.shape[:2], 2 * img.shape[-2], 2 * img.shape[-1])
        up[..., ::2, ::2] = img
        img = ev._blur(up, 2 * ev.BINOMIAL_5) + band
    assert torch.allclose(img, x, atol=1e-5)


# ---------------------------------------------------------------- MS-SSIM

def test_ms_ssim_identity_and_noise():
    x = smooth_images(6)
    assert torch.allclose(ev.ms_ssim(x, x), torch.ones(6), atol=1e-5)
    g = torch.Generator().manual_seed(0)
    low = ev.ms_ssim(x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    high = ev.ms_ssim(x, (x + 0.4 * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    assert low.shape == (6,)
    assert (high < low).all() and (low < 1).all()


def test_ms_ssim_scales_for_small_images():
    x = smooth_images(3, channels=1, size=28)
    assert torch.allclose(ev.ms_ssim(x, x), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError):
        ev.ms_ssim(x, x, scales=3)  # 28 / 4 = 7 < 11


def test_ms_ssim_diversity():
    same = smooth_images(1).repeat(10, 1, 1, 1)
    assert ev.ms_ssim_diversity(same, pairs=50) == pytest.approx(1.0, abs=1e-5)
    random = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert ev.ms_ssim_diversity(random, pairs=50) < 0.2


def test_rgb_scores_keys():
    s = ev.rgb_scores(smooth_images(6, seed=1), smooth_images(6, seed=2), pairs=20)
    assert {"swd_mean", "swd_64", "swd_32", "swd_16", "ms_ssim", "ms_ssim_real"} <= set(s)


# ---------------------------------------------------------------- classifier, cache, errors

def fake_mnist(data_dir, train, name="mnist"):
    """Tiny synthetic stand-in for MNIST: the digit is the row of a bright bar."""
    g = torch.Generator().manual_seed(int(train))
    y = torch.randint(0, 10, (300 if train else 100,), generator=g)
    x = torch.full((len(y), 1, 28, 28), -1.0)
    for i, label in enumerate(y):
        x[i, 0, 2 + 2 * label: 4 + 2 * label, 4:24] = 1.0
    return x, y


def test_training_deterministic_given_seed(monkeypatch):
    monkeypatch.setattr(ev, "_idx_labelled", fake_mnist)
    state = torch.get_rng_state()
    runs = [ev.train_mnist_classifier("unused", epochs=1, seed=s, log=lambda m: None) for s in (3, 3, 4)]
    assert torch.equal(state, torch.get_rng_state())
    (m1, acc1), (m2, acc2), (m3, _) = runs
    assert acc1 == acc2
    sd1, sd2, sd3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert not all(torch.equal(sd1[k], sd3[k]) for k in sd1)
    assert not m1.training


def test_classifier_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "train_mnist_classifier",
                        functools.partial(ev.train_mnist_classifier, max_batches=3))
    logs = []
    data = tmp_path / "data"
    make_mnist(data)
    tmp_path = tmp_path / "cache"
    model = ev.load_mnist_classifier(data, cache_dir=tmp_path, log=logs.append)
    path = ev.classifier_path(data, tmp_path)
    assert path.is_file() and list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    ckpt = torch.load(path, weights_only=True)
    assert 0.0 <= ckpt["test_accuracy"] <= 1.0
    assert any("test accuracy" in m for m in logs)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")
    monkeypatch.setattr(ev, "train_mnist_classifier", no_training)
    again = ev.load_mnist_classifier(data, cache_dir=tmp_path, log=logs.append)
    assert not again.training
    sd, sd2 = model.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_a_classifier_cached_for_other_images_is_not_taken(tmp_path, monkeypatch):
    """One cache folder, two data folders with other test digits: each gets its own
    classifier, so a few fake digits never stand in for a real MNIST."""
    monkeypatch.setattr(ev, "train_mnist_classifier",
                        functools.partial(ev.train_mnist_classifier, max_batches=1))
    make_mnist(tmp_path / "a", seed=0)
    make_mnist(tmp_path / "b", seed=1)
    cache, logs = tmp_path / "cache", []
    ev.load_mnist_classifier(tmp_path / "a", cache_dir=cache, log=logs.append)
    ev.load_mnist_classifier(tmp_path / "b", cache_dir=cache, log=logs.append)
    assert sum("training one" in m for m in logs) == 2
    assert len(list(cache.glob("mnist_classifier_*.pt"))) == 2


def test_missing_mnist_raises_data_error(tmp_path):
    with pytest.raises(ev.DataError) as err:
        ev.load_mnist_classifier(tmp_path / "nowhere", cache_dir=tmp_path / "cache", log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and "--data-dir" in msg and str(tmp_path / "nowhere") in msg


def test_default_cache_dir(tmp_path, monkeypatch):
    assert ev.default_cache_dir(tmp_path) == tmp_path / ".gan_cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ev.default_cache_dir(tmp_path / "missing") == tmp_path / "xdg" / "gan-lecture"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert ev.default_cache_dir(ro) == tmp_path / "xdg" / "gan-lecture"
    finally:
        ro.chmod(0o755)


def test_cached_file_unreadable_retrains(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "_idx_labelled", fake_mnist)
    monkeypatch.setattr(ev, "train_mnist_classifier",
                        functools.partial(ev.train_mnist_classifier, max_batches=1))
    path = ev.classifier_path("unused", tmp_path)
    path.write_bytes(b"not a checkpoint")
    logs = []
    ev.load_mnist_classifier("unused", cache_dir=tmp_path, log=logs.append)
    assert any("cannot read" in m for m in logs)
    assert "state_dict" in torch.load(path, weights_only=True)


def test_ms_ssim_one_scale_is_ssim():
    """With one scale MS-SSIM is plain SSIM: compare with a direct 2-D-window computation."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 24, 24, generator=g)
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    w1 = torch.exp(-(torch.arange(11.) - 5) ** 2 / (2 * 1.5 ** 2))
    w = torch.outer(w1, w1) / w1.sum() ** 2
    w = w.expand(3, 1, 11, 11)
    f = lambda t: F.conv2d(t, w, groups=3)  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    got = ev.ms_ssim(a * 2 - 1, b * 2 - 1, scales=1)
    assert torch.allclose(got, ssim.mean((1, 2, 3)), atol=1e-5)

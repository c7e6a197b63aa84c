"""generate.py's exploring modes on tiny trained runs: --interpolate (grid and
GIF), --truncation, --nearest (classifier features for MNIST, pixels for
faces), the default outputs in the run folder, --force, and one-line errors."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import generate
import train_celeba_dcgan
from conftest import dcgan_argv, make_celeba, png_array, run_main
import helper_report
from helper_data import to_float
from helper_checkpoint import load_generator
from models import sample, samples_of

CELL = 58          # a 28 x 28 MNIST image, doubled by save_grid, and its 2 px of padding
GIF_CELL = 30      # GIF frames keep the images' own size


def gen_main(argv, capsys):
    return run_main(generate.main, argv, capsys)


def one_line_error(code, err, expected_code, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == expected_code and "Traceback" not in err, err
    assert [line for line in lines if "error" in line.lower()] == [lines[-1]], err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


def cell(grid, row, col, size=56):
    """One image of a grid PNG (H x W x 3 uint8), padding 2, undoubled to 28 x 28."""
    y, x = 2 + row * (size + 2), 2 + col * (size + 2)
    return grid[y:y + size:2, x:x + size:2]


def nearest_parts(path, cell_size=CELL):
    """nearest.png as (its samples' column, their neighbours' grid), checking what
    lies between: a title strip with text over both, a white gap between them."""
    image, top = png_array(path), helper_report.title_height()
    left, gap = cell_size + 2, helper_report.GAP
    assert (image[top:, left:left + gap] == 255).all()                     # the gap: white, full height
    titles = image[:top] < 100
    assert titles[:, :left].any() and titles[:, left + gap:].any()          # "sample", "its K nearest ..."
    return image[top:, :left], image[top:, left + gap:]


def as_png_pixels(images):
    """N x C x H x W in [-1, 1] -> the uint8 N x H x W x 3 that save_grid writes."""
    x = images.clamp(-1, 1).add(1).div(2).mul(255).add(0.5).clamp(0, 255).byte()
    return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()


class PooledPixels(torch.nn.Module):
    """Stands in for the MNIST classifier: 4 x 4 average-pooled pixels, 49 features."""

    def features(self, x):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)


@pytest.fixture
def fake_classifier(monkeypatch):
    """generate's load_mnist_classifier replaced: no classifier is trained. Records its arguments."""
    calls = []

    def load(data_dir, cache_dir=None, device="cpu", log=print, name="mnist"):
        calls.append((str(data_dir), cache_dir))
        return PooledPixels()
    monkeypatch.setattr(generate, "load_mnist_classifier", load)
    return calls


@pytest.fixture
def nearest_spy(monkeypatch):
    """Records each call of nearest() as (samples, train, idx, dist)."""
    seen, real = [], generate.nearest

    def spy(samples, train, k, features=None):
        idx, dist = real(samples, train, k, features)
        seen.append((samples, train, idx, dist))
        return idx, dist
    monkeypatch.setattr(generate, "nearest", spy)
    return seen


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    """A 1-epoch DCGAN on 8 fake faces at 32 x 32 (2 batches). Read it, never write to it."""
    root = tmp_path_factory.mktemp("dcgan")
    make_celeba(root / "data", "torchvision", n=8, size=(89, 109))
    out = root / "run"
    code, _, _ = run_main(train_celeba_dcgan.main,
                          dcgan_argv(root / "data", out, root / "cache", "--image-size", 32, epochs=1))
    assert code == 0
    return out


# ---------------------------------------------------------------- --interpolate

def test_interpolation_grid_rows_walk_between_the_seeded_ends(mnist_run, tmp_path, capsys):
    pairs, steps = 3, 5
    code, out, err = gen_main([mnist_run, "--interpolate", pairs, "--steps", steps, "--seed", 4,
                               "--out", tmp_path / "walk.png"], capsys)
    assert code == 0, err
    assert "3 walks of 5 steps" in out
    grid = png_array(tmp_path / "walk.png")
    assert grid.shape == (pairs * CELL + 2, steps * CELL + 2, 3)          # a row per pair
    gen, cfg = load_generator(mnist_run, "cpu")
    ends = torch.randn(2, pairs, cfg["latent_dim"], generator=torch.Generator().manual_seed(4))
    first, last = as_png_pixels(sample(gen, ends[0])), as_png_pixels(sample(gen, ends[1]))
    for row in range(pairs):     # within 1 grey level: a batch of 15 vs 3 may round differently
        assert np.abs(cell(grid, row, 0).astype(int) - first[row]).max() <= 1
        assert np.abs(cell(grid, row, steps - 1).astype(int) - last[row]).max() <= 1
    assert not np.array_equal(cell(grid, 0, 0), cell(grid, 0, 2))        # the middle is elsewhere


def test_interpolation_gif_ping_pongs(mnist_run, tmp_path, capsys):
    pairs, steps = 2, 4
    code, out, err = gen_main([mnist_run, "--interpolate", pairs, "--steps", steps,
                               "--out", tmp_path / "walk.gif"], capsys)
    assert code == 0, err
    assert "6 looping frames" in out
    frames = []
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 2 * steps - 2 and gif.info["loop"] == 0      # forever
        assert gif.size == (pairs * GIF_CELL + 2, GIF_CELL + 2)             # every pair in one frame
        for f in range(gif.n_frames):
            gif.seek(f)
            frames.append(np.asarray(gif.convert("L")).astype(int))
    assert np.abs(frames[1] - frames[5]).max() <= 2                         # 0 1 2 3 2 1, then 0 again
    assert np.abs(frames[2] - frames[4]).max() <= 2
    assert np.abs(frames[0] - frames[3]).max() > 10                         # the ends differ
    code, _, _ = gen_main([mnist_run, "--interpolate", pairs, "--steps", steps,
                           "--out", tmp_path / "walk.png"], capsys)
    grid = png_array(tmp_path / "walk.png")
    assert code == 0
    assert np.abs(frames[0][2:30, 2:30] - cell(grid, 0, 0)[..., 0]).max() <= 2       # frame t: step t
    assert np.abs(frames[3][2:30, 32:60] - cell(grid, 1, steps - 1)[..., 0]).max() <= 2


# ---------------------------------------------------------------- --truncation

def test_truncation_rows_and_spread(mnist_run, tmp_path, capsys):
    code, out, err = gen_main([mnist_run, "--truncation", 0.05, 1, 3, "--num", 12,
                               "--out", tmp_path / "t.png"], capsys)
    assert code == 0, err
    assert "row 1: psi 0.05" in out and "row 2: psi 1" in out and "row 3: psi 3" in out
    image = png_array(tmp_path / "t.png")
    strip = image.shape[1] - (12 * CELL + 2)                 # each row's psi, on its left
    grid, labels = image[:, strip:], image[:, :strip] < 100
    assert grid.shape == (3 * CELL + 2, 12 * CELL + 2, 3)                    # a row per psi
    assert all(labels[2 + r * CELL:(r + 1) * CELL].any() for r in range(3)) and (image[:, :strip] > 200).mean() > 0.8
    rows = np.stack([[cell(grid, r, c)[..., 0] for c in range(12)] for r in range(3)]).astype(float)
    spread = rows.std(axis=1).mean(axis=(1, 2))             # across the samples of each row
    assert spread[0] < spread[1] < spread[2]

    code, out, err = gen_main([mnist_run, "--truncation", 0.5, "--num", 10, "--out", tmp_path / "one.png"],
                              capsys)
    assert code == 0 and "10 samples at psi 0.5" in out
    one, top = png_array(tmp_path / "one.png"), helper_report.title_height()
    assert one.shape == (top + 2 * CELL + 2, 8 * CELL + 2, 3)   # --nrow 8, under "psi 0.5"
    assert (one[:top] < 100).any()


# ---------------------------------------------------------------- --nearest

def test_nearest_in_classifier_features(mnist_run, mnist_root, tmp_path, capsys, fake_classifier,
                                        nearest_spy, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code, out, err = gen_main([mnist_run, "--nearest", 2, "--num", 5, "--out", tmp_path / "n.png"], capsys)
    assert code == 0, err
    assert fake_classifier == [(str(mnist_root), str(tmp_path / "xdg" / "gan-lecture"))]   # never the run's cache
    assert "mnist classifier features" in out and "mean distance" in out
    samples_png, neighbours_png = nearest_parts(tmp_path / "n.png")
    assert samples_png.shape == (5 * CELL + 2, CELL + 2, 3)                 # the samples, apart
    assert neighbours_png.shape == (5 * CELL + 2, 2 * CELL + 2, 3)          # 2 nearest of each
    samples, train, idx, dist = nearest_spy[0]
    assert train.shape == (192, 1, 28, 28) and train.dtype == torch.uint8   # the fake MNIST, as stored
    feats = PooledPixels().features
    want = torch.cdist(feats(samples), feats(to_float(train))).topk(2, dim=1, largest=False)
    assert torch.equal(idx, want.indices)
    assert torch.allclose(dist, want.values, atol=1e-5)
    assert f"{float(dist[:, 0].mean()):.4f}" in out

    code, _, err = gen_main([mnist_run, "--nearest", "--data-dir", tmp_path / "nothing",
                             "--out", tmp_path / "m.png"], capsys)
    one_line_error(code, err, 1, "MNIST train files not found")                         # --data-dir is used


def test_nearest_finds_a_planted_copy_in_features(mnist_run, tmp_path, capsys, monkeypatch,
                                                  fake_classifier, nearest_spy):
    gen, cfg = load_generator(mnist_run, "cpu")
    samples = samples_of(gen, cfg["latent_dim"], 8, seed=0)            # what --nearest draws (--seed 0)
    train = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    train[17] = samples[5]
    monkeypatch.setattr(generate, "dataset_images", lambda cfg: train)
    code, _, err = gen_main([mnist_run, "--nearest", "--out", tmp_path / "n.png"], capsys)
    assert code == 0, err
    _, _, idx, dist = nearest_spy[0]
    assert idx.shape == (8, 3) and idx[5, 0] == 17 and dist[5, 0] < 1e-5
    assert (dist[:, 1:] > 1e-3).all()
    samples_png, neighbours_png = nearest_parts(tmp_path / "n.png")
    assert neighbours_png.shape == (8 * CELL + 2, 3 * CELL + 2, 3)          # --num 8, K 3 by default
    assert np.array_equal(cell(samples_png, 5, 0), cell(neighbours_png, 5, 0))   # the copy, first


def test_nearest_in_pixels_for_faces(dcgan_run, tmp_path, capsys, monkeypatch, nearest_spy):
    def no_classifier(*args, **kwargs):
        raise AssertionError("faces are compared in pixels")
    monkeypatch.setattr(generate, "load_mnist_classifier", no_classifier)
    code, out, err = gen_main([dcgan_run, "--nearest", 2, "--num", 3, "--out", tmp_path / "n.png"], capsys)
    assert code == 0, err
    assert "(pixels)" in out
    samples_png, neighbours_png = nearest_parts(tmp_path / "n.png", cell_size=34)
    assert samples_png.shape == (3 * 34 + 2, 36, 3)                         # 32 x 32 faces, 2 px padding
    assert neighbours_png.shape == (3 * 34 + 2, 2 * 34 + 2, 3)
    samples, train, idx, dist = nearest_spy[0]
    assert train.shape == (8, 3, 32, 32) and train.dtype == torch.uint8     # the run's cached faces
    d = torch.cdist(samples.flatten(1), to_float(train).flatten(1))
    assert torch.equal(idx[:, 0], d.argmin(1))
    assert torch.allclose(dist[:, 0], d.min(1).values, rtol=1e-4)

    planted = to_float(train.clone())
    planted[6] = samples[1]
    monkeypatch.setattr(generate, "dataset_images", lambda cfg: planted)
    code, _, err = gen_main([dcgan_run, "--nearest", 2, "--num", 3, "--out", tmp_path / "p.png"], capsys)
    assert code == 0, err
    _, _, idx, dist = nearest_spy[1]
    assert idx[1, 0] == 6 and dist[1, 0] == 0 and (dist[:, 1] > 0).all()


def test_nearest_k_beyond_the_training_set(mnist_run, tmp_path, capsys, monkeypatch, fake_classifier):
    monkeypatch.setattr(generate, "dataset_images", lambda cfg: torch.zeros(2, 1, 28, 28))
    code, _, err = gen_main([mnist_run, "--nearest", 3, "--out", tmp_path / "n.png"], capsys)
    one_line_error(code, err, 1, "only 2 training images")
    assert not (tmp_path / "n.png").exists()


# ---------------------------------------------------------------- where the pictures go

def test_default_outputs_land_in_the_run_folder(mnist_run, tmp_path, capsys, monkeypatch, fake_classifier):
    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)                        # the fixture's run stays as it was
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for flags, name in [([], "samples.png"), (["--interpolate", 2], "interpolation.png"),
                        (["--truncation", 0.7], "truncation.png"), (["--nearest"], "nearest.png")]:
        code, out, err = gen_main([run / "checkpoint.pt", *flags], capsys)
        assert code == 0, err
        assert (run / name).is_file() and str(run / name) in out
    assert list(cwd.iterdir()) == []


def test_refuses_to_overwrite_without_force(mnist_run, tmp_path, capsys):
    path = tmp_path / "x.png"
    assert gen_main([mnist_run, "--num", 4, "--out", path], capsys)[0] == 0
    before = path.read_bytes()
    code, _, err = gen_main([mnist_run, "--num", 4, "--seed", 1, "--out", path], capsys)
    one_line_error(code, err, 2, str(path), "--force")
    assert path.read_bytes() == before
    code, _, err = gen_main([mnist_run, "--num", 4, "--seed", 1, "--out", path, "--force"], capsys)
    assert code == 0, err
    assert path.read_bytes() != before


# ---------------------------------------------------------------- bad flags

@pytest.mark.parametrize("flags,needle", [
    (["--num", 0], "--num"),
    (["--num", 1025], "at most 1024"),
    (["--nrow", 0], "--nrow"),
    (["--interpolate", 0], "--interpolate"),
    (["--interpolate", 2, "--steps", 1], "--steps"),
    (["--interpolate", 200, "--steps", 100], "at most 1024"),
    (["--interpolate", 2, "--num", 4], "--num"),
    (["--steps", 4], "--steps goes with --interpolate"),
    (["--truncation", 0], "PSI must be > 0"),
    (["--truncation", 1, -0.5], "PSI must be > 0"),
    (["--truncation", "nan"], "PSI must be > 0"),
    (["--nearest", 0], "--nearest"),
    (["--nearest", 3, "--num", 300], "at most 1024"),
    (["--data-dir", "data"], "--data-dir goes with --nearest"),
    (["--interpolate", 2, "--truncation", 1], "not allowed with"),
    (["--truncation", 1, "--nearest"], "not allowed with"),
    (["--interpolate", 2, "--out", "x.pt"], "--out must end in .png or .gif"),
    (["--truncation", 1, "--out", "x.gif"], "--out must end in .png"),
    (["--nearest", "--out", "x.pt"], "--out must end in .png"),
])
def test_flag_errors_are_one_line(mnist_run, tmp_path, capsys, flags, needle):
    argv = [mnist_run, *flags]
    if "--out" not in flags:
        argv += ["--out", tmp_path / "x.png"]
    else:
        argv[argv.index("--out") + 1] = tmp_path / argv[argv.index("--out") + 1]
    code, _, err = gen_main(argv, capsys)
    one_line_error(code, err, 2, needle)
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_a_file_in_a_folder_that_can_exist(mnist_run, tmp_path, capsys):
    (tmp_path / "d.png").mkdir()
    code, _, err = gen_main([mnist_run, "--out", tmp_path / "d.png"], capsys)
    one_line_error(code, err, 2, "is a folder")
    (tmp_path / "file").write_text("")
    code, _, err = gen_main([mnist_run, "--out", tmp_path / "file" / "x.png"], capsys)
    one_line_error(code, err, 2, "is a file, not a folder")

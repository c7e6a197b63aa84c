"""The speed options change how fast training runs, not what it learns: the fast
input path and channels_last give the same losses as the plain path for a fixed
seed, and bf16 / fp16 autocast train without error on the CPU."""
import pytest
import torch

import train_celeba_dcgan
import train_mnist_gan
from conftest import dcgan_argv, make_celeba, metric_values, mnist_argv, run_main


def test_mnist_fast_and_per_image_paths_give_the_same_losses(mnist_root, tmp_path):
    runs = {}
    for path in ("tensor", "images"):
        out = tmp_path / path
        assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--input-path", path))[0] == 0
        runs[path] = metric_values(out)
    assert torch.equal(runs["tensor"], runs["images"])


def test_dcgan_channels_last_matches_the_plain_layout(tmp_path):
    data = tmp_path / "data"
    make_celeba(data, "flat", n=16)
    runs = {}
    for flag in ("--channels-last", "--no-channels-last"):
        out = tmp_path / flag
        argv = dcgan_argv(data, out, tmp_path / "cache", flag, "--input-path", "tensor")
        assert run_main(train_celeba_dcgan.main, argv)[0] == 0
        runs[flag] = metric_values(out)
    # Same steps, different kernels: the first step equal up to float rounding,
    # later ones within noise (Adam turns tiny gradient differences into lr-sized steps).
    a, b = runs["--channels-last"], runs["--no-channels-last"]
    assert torch.allclose(a[0], b[0], atol=1e-4)
    assert torch.allclose(a, b, atol=1e-2)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains_on_cpu(tmp_path, amp):
    data = tmp_path / "data"
    make_celeba(data, "flat", n=16)
    out = tmp_path / "run"
    code, _, _ = run_main(train_celeba_dcgan.main, dcgan_argv(data, out, tmp_path / "cache", "--amp", amp))
    assert code == 0
    values = metric_values(out)
    assert len(values) == 4 and torch.isfinite(values).all()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    if amp == "fp16":   # one GradScaler shared by both optimizers, saved for resume
        assert ckpt["scaler"]["scale"] > 0

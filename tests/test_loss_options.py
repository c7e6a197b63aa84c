"""The loss options inside the loop: each loss trains end to end through the
scripts, --n-critic moves G every K-th batch only, weight clipping bounds D,
runs with --n-critic / --r1 / spectral norm / DiffAugment resume exactly, a
typed --loss brings its defaults, and bad combinations get one line."""
import contextlib

import pytest
import torch

import helper_cli
from helper_files import RunError
import train_celeba_dcgan
import train_mnist_gan
from conftest import dcgan_argv, load_ckpt, metric_values, mnist_argv, run_main
from helper_train import GANState, gan_step
from models import FCDiscriminator, FCGenerator

NO_AMP = contextlib.nullcontext()


def tiny_state(**cfg):
    torch.manual_seed(0)
    cfg = {**train_mnist_gan.PRESETS["lecture"], "latent_dim": 8, "amp": "off", **cfg}
    gen = FCGenerator(8, (1, 4, 4), hidden=(16,), dropout=0.0)
    disc = FCDiscriminator((1, 4, 4), hidden=(16,), dropout=0.0)
    return GANState(gen, disc, cfg, torch.device("cpu")), cfg


def batch(seed=1):
    return torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_n_critic_moves_g_only_every_kth_batch():
    s, cfg = tiny_state(n_critic=3)
    before = params(s.gen)
    for i in range(3):
        d_before = params(s.disc)
        values = gan_step(s, batch(i), cfg, NO_AMP)
        assert torch.isfinite(values).all()
        assert any(not torch.equal(a, b) for a, b in zip(d_before, params(s.disc)))   # D every batch
        g_moved = any(not torch.equal(a, b) for a, b in zip(before, params(s.gen)))
        assert g_moved == (i == 2), i


def test_wgan_clips_every_d_weight():
    s, cfg = tiny_state(loss="wgan", clip=0.01, lr_disc=0.5, beta1=0.0, beta2=0.99)
    gan_step(s, batch(), cfg, NO_AMP)
    assert max(p.abs().max().item() for p in s.disc.parameters()) <= 0.01 + 1e-9


@pytest.mark.parametrize("loss", ["bce", "wgan", "wgan-gp", "hinge"])
def test_each_loss_trains_through_the_mnist_script(loss, mnist_root, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--loss", loss,
                                                           "--n-critic", 2, epochs=1))
    assert code == 0
    m = metric_values(out)
    assert len(m) == 3 and torch.isfinite(m).all()
    cfg = load_ckpt(out)["config"]
    assert cfg["loss"] == loss and cfg["n_critic"] == 2


def test_typed_loss_brings_its_defaults_and_typed_flags_win(tmp_path):
    parser = train_mnist_gan.build_parser()
    cfg, _ = helper_cli.parse_config(parser, train_mnist_gan.PRESETS,
                                     ["--loss", "wgan-gp", "--lr-gen", "3e-4", "--out", str(tmp_path)])
    assert (cfg["beta1"], cfg["beta2"], cfg["n_critic"], cfg["gp_weight"]) == (0.0, 0.9, 5, 10.0)
    assert cfg["lr_gen"] == 3e-4 and cfg["lr_disc"] == 1e-4
    lecture, _ = helper_cli.parse_config(parser, train_mnist_gan.PRESETS, ["--out", str(tmp_path)])
    assert (lecture["loss"], lecture["beta1"], lecture["beta2"], lecture["n_critic"]) == ("bce", 0.5, 0.999, 1)


def test_resume_with_critic_steps_r1_and_diffaug_is_exact(mnist_root, tmp_path):
    extra = ["--loss", "hinge", "--n-critic", 2, "--r1", 1.0, "--diffaug", "color,translation,cutout",
             "--spectral-norm", "--log-every", 1]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, ref, *extra, epochs=2))[0] == 0
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, *extra, epochs=1))[0] == 0
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 2])[0] == 0
    assert torch.equal(metric_values(out), metric_values(ref))
    a, b = load_ckpt(out)["disc"], load_ckpt(ref)["disc"]
    assert any("parametrizations" in k for k in a)            # spectral norm is in the weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_batchnorm_generator_and_ema_is_exact(mnist_root, tmp_path):
    """BatchNorm's running statistics are buffers: the checkpoint and the EMA
    copy must carry them for the resumed run to match the uninterrupted one."""
    extra = ["--g-batchnorm", "--dropout", 0, "--ema-decay", 0.9, "--log-every", 1]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, ref, *extra, epochs=2))[0] == 0
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, *extra, epochs=1))[0] == 0
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 2])[0] == 0
    assert torch.equal(metric_values(out), metric_values(ref))
    a, b = load_ckpt(out), load_ckpt(ref)
    assert any("running_mean" in k for k in a["ema"])
    for net in ("gen", "ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_dcgan_with_wgan_gp_and_channels_last(celeba_root, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_main(train_celeba_dcgan.main, dcgan_argv(celeba_root, out, tmp_path / "cache",
                                                              "--loss", "wgan-gp", "--n-critic", 1,
                                                              "--diffaug", "translation", epochs=1))
    assert code == 0 and torch.isfinite(metric_values(out)).all()


@pytest.mark.parametrize("argv,needle", [
    (["--loss", "wgan", "--label-smoothing", "0.1"], "--label-smoothing"),
    (["--diffaug", "colour"], "--diffaug"),
    (["--n-critic", "0"], "--n-critic"),
    (["--r1", "-1"], "--r1"),
    (["--loss", "lsgan"], "--loss"),
])
def test_bad_loss_flags_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    code, _, err = run_main(train_mnist_gan.main, ["--out", tmp_path / "run", *argv], capsys)
    assert code == 2 and needle in err.strip().splitlines()[-1] and "Traceback" not in err


def test_double_backward_refused_under_torchrun(tmp_path):
    cfg = {**train_mnist_gan.PRESETS["lecture"], "out": str(tmp_path), "loss": "wgan-gp"}
    with pytest.raises(RunError, match="one process"):
        helper_cli.prepare_run(cfg, set(), 0, 2, torch.device("cpu"))

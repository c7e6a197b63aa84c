"""The loss options inside the loop: each loss trains end to end through the
scripts, --n-critic moves G every K-th batch only, weight clipping bounds D,
rpgan's G step scores the paired reals without moving D, R2 is taken on the
fakes, the penalties are the same with --compile, --cosine's curve, runs with
--n-critic / --r1 / --r2 / rpgan / --cosine / spectral norm / DiffAugment
resume exactly, a typed --loss brings its defaults, and bad combinations get
one line."""
import contextlib
import copy
import functools

import pytest
import torch

import helper_cli
import helper_losses
import helper_schedule
import helper_train
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


@pytest.mark.parametrize("loss", helper_losses.LOSSES)
def test_each_loss_trains_through_the_mnist_script(loss, mnist_root, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--loss", loss,
                                                           "--n-critic", 2, epochs=1))
    assert code == 0
    m = metric_values(out)
    assert len(m) == 3 and torch.isfinite(m).all()
    cfg = load_ckpt(out)["config"]
    assert cfg["loss"] == loss and cfg["n_critic"] == 2


@pytest.mark.parametrize("ddp_like", [False, True])
def test_rpgan_g_step_scores_the_paired_reals_with_the_updated_d_and_leaves_d_alone(ddp_like):
    s, cfg = tiny_state(loss="rpgan", lr_disc=0.05, lr_gen=0.05)
    if ddp_like:   # as under DDP's no_sync: D's weights keep requires_grad in the G step
        s.frozen_disc = contextlib.nullcontext
    real, gen_before, after_d = batch(), copy.deepcopy(s.gen), {}
    d_step = s.opt_d.step

    def recorded_d_step(*a, **k):     # D as the G step must see it: just updated
        out = d_step(*a, **k)
        after_d.update(disc=copy.deepcopy(s.disc), params=params(s.disc),
                       grads=[p.grad.clone() for p in s.disc.parameters()])
        return out
    s.opt_d.step = recorded_d_step
    torch.manual_seed(7)
    values = gan_step(s, real, cfg, NO_AMP)
    # G's gradient is that of softplus(-(D(G(z)) - D(x))) with the updated D and this real batch
    torch.manual_seed(7)
    z = torch.randn(8, cfg["latent_dim"])
    d1 = after_d["disc"]
    expected = torch.nn.functional.softplus(-(d1(gen_before(z)) - d1(real).detach())).mean()
    expected.backward()
    assert values[0].item() == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(gen_before.parameters(), s.gen.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7)
    # The G step moved no D weight. D's gradients: untouched; under DDP (weights still
    # requiring grad) they gain the fake path's share only, which the next D step's
    # zero_grad discards: the real scores add nothing.
    assert all(torch.equal(a, b) for a, b in zip(after_d["params"], params(s.disc)))
    for a, p, q in zip(after_d["grads"], d1.parameters(), s.disc.parameters()):
        torch.testing.assert_close(q.grad, a + p.grad if ddp_like else a, rtol=1e-5, atol=1e-7)


def test_r2_is_taken_on_the_fakes_lazily_and_scaled_to_match():
    s, cfg = tiny_state(r2=0.5)
    real, fake = batch(1), batch(2)
    hyper = helper_schedule.at_step(cfg, 0)
    got = helper_train.penalties(s, real, fake, cfg, hyper)
    every = helper_train.R1_EVERY
    assert got.item() == pytest.approx(helper_losses.r2_penalty(s.disc, fake, 0.5 * every).item(), rel=1e-6)
    assert got.item() != pytest.approx(helper_losses.r2_penalty(s.disc, real, 0.5 * every).item(), rel=1e-3)
    s.step = 1
    assert helper_train.penalties(s, real, fake, cfg, hyper) == 0.0    # lazy: not on this step


def test_compiled_networks_give_the_eager_step_with_r1_r2_and_rpgan(monkeypatch):
    """The penalties run on the plain D, never the compiled wrapper (torch.compile
    has dropped second-order graphs silently: pytorch issues 91469, 181581). The
    aot_eager backend goes through dynamo and AOTAutograd, which refuse a double
    backward, without a C++ compiler."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    monkeypatch.setattr(helper_train, "R1_EVERY", 1)     # a penalty on every step
    runs = []
    for compiled in (False, True):
        s, cfg = tiny_state(loss="rpgan", r1=1.0, r2=1.0, compile=compiled)
        s.wrap(cfg, torch.device("cpu"), 1)
        torch.manual_seed(3)
        runs.append((torch.stack([gan_step(s, batch(i), cfg, NO_AMP) for i in range(2)]), s))
    torch._dynamo.reset()
    (eager, a), (compiled, b) = runs
    assert b.disc_step is not b.disc                      # it was compiled
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for net in ("gen", "disc"):
        for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_cosine_schedule_runs_from_the_config_to_the_end_values_and_holds():
    cfg = {"lr_gen": 4e-4, "lr_disc": 2e-4, "beta1": 0.0, "beta2": 0.99, "r1": 1.0, "r2": 0.5,
           "cosine": 100}
    assert helper_schedule.at_step(cfg, 0) == pytest.approx({k: cfg[k] for k in helper_schedule.SCHEDULED})
    end = {"lr_gen": 1e-4, "lr_disc": 5e-5, "beta2": 0.999, "r1": 0.1, "r2": 0.05}
    assert helper_schedule.at_step(cfg, 100) == pytest.approx(end)
    assert helper_schedule.at_step(cfg, 1000) == pytest.approx(end)       # held after STEPS
    mid = helper_schedule.at_step(cfg, 50)                                 # half way on a cosine
    assert mid["lr_gen"] == pytest.approx((4e-4 + 1e-4) / 2) and mid["beta2"] == pytest.approx(0.9945)
    assert helper_schedule.at_step({**cfg, "beta2": 0.9995}, 100)["beta2"] == 0.9995   # never lowered
    off = {**cfg, "cosine": 0}
    assert helper_schedule.at_step(off, 50) == {k: cfg[k] for k in helper_schedule.SCHEDULED}


def resumed_and_uninterrupted(mnist_root, tmp_path, extra):
    """Two MNIST runs with flags `extra`: one of 1 epoch resumed to 2, one of 2 epochs.
    Asserts their per-batch metrics are equal; returns their folders (resumed, other)."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, ref, *extra, epochs=2))[0] == 0
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, *extra, epochs=1))[0] == 0
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 2])[0] == 0
    assert torch.equal(metric_values(out), metric_values(ref))
    return out, ref


def test_resume_with_rpgan_r1_r2_and_cosine_is_exact(mnist_root, tmp_path):
    """24 steps of 12 batches: the lazy penalties run at steps 0 and 16 (after the
    resume at 12), and the cosine over 20 steps is both moving and held after it."""
    extra = ["--loss", "rpgan", "--r1", 1.0, "--r2", 0.5, "--cosine", 20, "--max-batches", 12,
             "--log-every", 1]
    out, ref = resumed_and_uninterrupted(mnist_root, tmp_path, extra)
    a, b = load_ckpt(out), load_ckpt(ref)
    for net in ("gen", "disc"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
    group = a["opt_d"]["param_groups"][0]
    assert group["lr"] == pytest.approx(2e-4 / 4) and group["betas"][1] == pytest.approx(0.999)
    assert group == b["opt_d"]["param_groups"][0]


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
    out, ref = resumed_and_uninterrupted(mnist_root, tmp_path, extra)
    a, b = load_ckpt(out)["disc"], load_ckpt(ref)["disc"]
    assert any("parametrizations" in k for k in a)            # spectral norm is in the weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_batchnorm_generator_and_ema_is_exact(mnist_root, tmp_path):
    """BatchNorm's running statistics are buffers: the checkpoint and the EMA
    copy must carry them for the resumed run to match the uninterrupted one."""
    extra = ["--g-batchnorm", "--dropout", 0, "--ema-decay", 0.9, "--log-every", 1]
    out, ref = resumed_and_uninterrupted(mnist_root, tmp_path, extra)
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
    (["--r2", "-0.5"], "--r2"),
    (["--cosine", "-1"], "--cosine"),
    (["--cosine", "1.5"], "--cosine"),
    (["--loss", "lsgan"], "--loss"),
])
def test_bad_loss_flags_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    code, _, err = run_main(train_mnist_gan.main, ["--out", tmp_path / "run", *argv], capsys)
    assert code == 2 and needle in err.strip().splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize("setting", [{"loss": "wgan-gp"}, {"r1": 1.0}, {"r2": 1.0}])
def test_double_backward_refused_under_torchrun(setting, tmp_path):
    cfg = {**train_mnist_gan.PRESETS["lecture"], "out": str(tmp_path), **setting}
    with pytest.raises(RunError, match="one process"):
        helper_cli.prepare_run(cfg, set(), 0, 2, torch.device("cpu"))

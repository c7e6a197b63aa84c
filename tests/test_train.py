"""helper_train: the GAN step (which network each optimizer moves, detach, the
lecture's losses), run folders, checkpoints, resuming (exactly equal to an
uninterrupted run), Ctrl-C, --time-budget, the NaN guard and overwrite protection. The runs
go through the scripts' main(argv) on the fake data of conftest.py."""
import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import helper_checkpoint
import helper_plot
import helper_train
import models
import train_celeba_dcgan
import train_mnist_gan
from conftest import (assert_state_dicts_equal, dcgan_argv, load_ckpt, metric_values, mnist_argv,
                      png_array, read_events, read_metrics, run_main, send_sigint, ten_seconds_per_step)
from helper_train import GANState, gan_step
from models import FCDiscriminator, FCGenerator, build_models

DEVICE = torch.device("cpu")
STEP_CFG = {**train_mnist_gan.PRESETS["lecture"],
            **dict(lr_gen=1e-2, lr_disc=1e-2, amp="off", seed=0, latent_dim=8)}


def tiny_state(dropout=0.0, **cfg):
    torch.manual_seed(0)
    cfg = {**STEP_CFG, **cfg}
    gen = FCGenerator(cfg["latent_dim"], (1, 4, 4), hidden=(16,), dropout=dropout)
    disc = FCDiscriminator((1, 4, 4), hidden=(16,), dropout=dropout)
    return GANState(gen, disc, cfg, DEVICE), cfg


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def nothing_same(a, b):
    return all(not torch.equal(x, y) for x, y in zip(a, b))


def real_batch(n=8):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---------------------------------------------------------------- the step: isolation and detach

def test_optimizers_hold_only_their_own_network():
    s, _ = tiny_state()
    g_ids = {id(p) for group in s.opt_g.param_groups for p in group["params"]}
    d_ids = {id(p) for group in s.opt_d.param_groups for p in group["params"]}
    assert g_ids == {id(p) for p in s.gen.parameters()}
    assert d_ids == {id(p) for p in s.disc.parameters()}
    assert not g_ids & d_ids
    for opt in (s.opt_g, s.opt_d):
        assert opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_each_optimizer_step_moves_only_its_network():
    """The two halves of the step done by hand with the state's optimizers."""
    s, cfg = tiny_state()
    x, z = real_batch(), torch.randn(8, 8)
    g0, d0 = snapshot(s.gen), snapshot(s.disc)
    s.opt_d.zero_grad(set_to_none=True)
    fake = s.gen(z)
    d_loss = 0.5 * (F.binary_cross_entropy_with_logits(s.disc(x), torch.ones(8))
                    + F.binary_cross_entropy_with_logits(s.disc(fake), torch.zeros(8)))  # no detach
    d_loss.backward()
    assert all(p.grad is not None for p in s.gen.parameters())   # G got gradients, yet ...
    s.opt_d.step()
    assert same(snapshot(s.gen), g0) and nothing_same(snapshot(s.disc), d0)   # ... only D moved
    d1 = snapshot(s.disc)
    s.opt_g.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(s.disc(s.gen(z)), torch.ones(8)).backward()
    assert all(p.grad is not None for p in s.disc.parameters())
    s.opt_g.step()
    assert same(snapshot(s.disc), d1) and nothing_same(snapshot(s.gen), g0)


def test_gan_step_d_half_moves_only_d_with_detached_fake_and_g_half_only_g():
    s, cfg = tiny_state(dropout=0.5)
    g0, d0 = snapshot(s.gen), snapshot(s.disc)
    seen = {}
    d_step, g_step = s.opt_d.step, s.opt_g.step

    def watch_d(*a, **k):
        seen["gen_grads_at_d_step"] = [p.grad for p in s.gen.parameters()]
        out = d_step(*a, **k)
        seen["gen_after_d"], seen["disc_after_d"] = snapshot(s.gen), snapshot(s.disc)
        return out

    def watch_g(*a, **k):
        seen["disc_before_g"] = snapshot(s.disc)
        out = g_step(*a, **k)
        seen["disc_after_g"] = snapshot(s.disc)
        return out

    s.opt_d.step, s.opt_g.step = watch_d, watch_g
    out = gan_step(s, real_batch(), cfg, helper_train.contextlib.nullcontext())
    assert seen.keys() == {"gen_grads_at_d_step", "gen_after_d", "disc_after_d",
                           "disc_before_g", "disc_after_g"}
    # D step: fake.detach() keeps gradients out of G, and G does not move
    assert all(g is None for g in seen["gen_grads_at_d_step"])
    assert same(seen["gen_after_d"], g0) and nothing_same(seen["disc_after_d"], d0)
    # G step: D does not move, G does
    assert same(seen["disc_before_g"], seen["disc_after_d"])
    assert same(seen["disc_after_g"], seen["disc_after_d"])
    assert nothing_same(snapshot(s.gen), g0) and same(snapshot(s.disc), seen["disc_after_d"])
    assert out.shape == (4,) and torch.isfinite(out).all() and s.step == 1


@pytest.mark.parametrize("fresh_noise", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gan_step_losses_are_the_lectures(fresh_noise, smoothing):
    """D loss = 0.5 (BCE(D(x), 1 - s) + BCE(D(G(z)), 0)) with the old D; G loss =
    BCE(D'(G(z)), 1) with the updated D' (flipped labels), z reused unless fresh_noise."""
    s, cfg = tiny_state(fresh_noise=fresh_noise, label_smoothing=smoothing)
    gen0, disc0 = copy.deepcopy(s.gen), copy.deepcopy(s.disc)
    x = real_batch()
    torch.manual_seed(42)
    out = gan_step(s, x, cfg, helper_train.contextlib.nullcontext())
    torch.manual_seed(42)
    z = torch.randn(8, 8)
    z_g = torch.randn(8, 8) if fresh_noise else z
    with torch.no_grad():
        lr, lf = disc0(x), disc0(gen0(z))
        d_ref = 0.5 * (F.binary_cross_entropy_with_logits(lr, torch.full((8,), 1 - smoothing))
                       + F.binary_cross_entropy_with_logits(lf, torch.zeros(8)))
        g_ref = F.binary_cross_entropy_with_logits(s.disc(gen0(z_g)), torch.ones(8))
    g_loss, d_loss, acc_real, acc_fake = out.tolist()
    assert d_loss == pytest.approx(d_ref.item(), abs=1e-6)
    assert g_loss == pytest.approx(g_ref.item(), abs=1e-6)
    assert acc_real == (lr > 0).float().mean().item() and acc_fake == (lf < 0).float().mean().item()


@pytest.mark.parametrize("step,decay", [(0, 0.1), (1000, 0.75)])
def test_ema_generator_follows_the_weights(step, decay):
    """EMA with warm-up: decay min(ema_decay, (1 + step) / (10 + step))."""
    s, cfg = tiny_state(ema_decay=0.75)
    s.step = step
    assert s.sampler() is s.ema and s.ema is not s.gen
    ema0 = snapshot(s.ema)
    gan_step(s, real_batch(), cfg, helper_train.contextlib.nullcontext())
    for e0, e1, g in zip(ema0, snapshot(s.ema), snapshot(s.gen)):
        assert torch.allclose(e1, decay * e0 + (1 - decay) * g, atol=1e-6)
    assert all(not p.requires_grad for p in s.ema.parameters())


def test_sample_uses_eval_mode_and_leaves_rng_and_mode_alone():
    s, _ = tiny_state(dropout=0.5)
    noise = torch.randn(5, 8)
    before = torch.get_rng_state()
    a = models.sample(s.gen, noise, batch=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert s.gen.training
    assert torch.equal(a, models.sample(s.gen, noise, batch=2))     # dropout off: deterministic
    assert torch.allclose(a, models.sample(s.gen, noise), atol=1e-6)  # chunking changes nothing
    assert a.shape == (5, 1, 4, 4) and a.device.type == "cpu"


# ---------------------------------------------------------------- a finished run's folder

RUN_FILES = ["config.json", "metrics.csv", "events.jsonl", "grids/epoch_001.png",
             "grids/epoch_002.png", "loss.png", "accuracy.png", "progress.png", "final_grid.png",
             "real_vs_fake.png", "reals.png", "checkpoint.pt"]


def test_run_folder_contents(mnist_run):
    for f in RUN_FILES:
        assert (mnist_run / f).is_file(), f
    assert not list(mnist_run.rglob("*.tmp*"))
    assert png_array(mnist_run / "grids" / "epoch_001.png").shape == (466, 466, 3)   # 8 x 8 grid of 28 px, doubled
    assert (png_array(mnist_run / "final_grid.png") == png_array(mnist_run / "grids" / "epoch_002.png")).all()
    cfg = json.loads((mnist_run / "config.json").read_text())
    assert cfg["batch_size"] == 16 and cfg["epochs"] == 2 and cfg["model"] == "fc"
    assert cfg["lr_gen"] == cfg["lr_disc"] == 2e-4 and cfg["beta1"] == 0.5 and cfg["latent_dim"] == 100


def test_metrics_csv(mnist_run):
    header, rows = read_metrics(mnist_run)
    assert header == ["step", "epoch", "batch", "g_loss", "d_loss", "d_acc_real", "d_acc_fake"]
    assert len(rows) == 6                                     # 2 epochs x 3 batches
    m = metric_values(mnist_run)
    assert m[:, 0].tolist() == list(range(6))
    assert m[:, 1].tolist() == [1, 1, 1, 2, 2, 2] and m[:, 2].tolist() == [1, 2, 3, 1, 2, 3]
    assert torch.isfinite(m).all() and (m[:, 3:5] > 0).all()
    assert ((m[:, 5:] >= 0) & (m[:, 5:] <= 1)).all()
    epochs = [e for e in read_events(mnist_run) if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and [e["step"] for e in epochs] == [3, 6]


def test_checkpoint_contents_load_weights_only(mnist_run):
    ckpt = load_ckpt(mnist_run)      # weights_only=True: plain data and tensors only
    for key in ("gen", "disc", "opt_g", "opt_d", "epoch", "batch", "step", "rng", "fixed_noise", "config"):
        assert key in ckpt, key
    assert ckpt["format"] == helper_checkpoint.CKPT_FORMAT
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (2, 0, 6)
    assert ckpt["fixed_noise"].shape == (64, 100)
    assert ckpt["config"]["model"] == "fc" and ckpt["config"]["batch_size"] == 16
    gen, disc = build_models(ckpt["config"])
    gen.load_state_dict(ckpt["gen"])
    disc.load_state_dict(ckpt["disc"])
    assert len(ckpt["opt_g"]["state"]) == len(list(gen.parameters()))
    assert len(ckpt["opt_d"]["state"]) == len(list(disc.parameters()))


def test_final_grid_is_the_fixed_noise_through_the_saved_generator(mnist_run, tmp_path):
    ckpt = load_ckpt(mnist_run)
    gen, _ = build_models(ckpt["config"])
    gen.load_state_dict(ckpt["gen"])
    helper_plot.save_grid(models.sample(gen, ckpt["fixed_noise"]), tmp_path / "grid.png")
    assert (png_array(tmp_path / "grid.png") == png_array(mnist_run / "final_grid.png")).all()


def test_same_seed_same_run(mnist_run, mnist_reference):
    """Two runs with one seed agree batch for batch (the reference just runs longer)."""
    assert torch.equal(metric_values(mnist_run), metric_values(mnist_reference)[:6])
    assert torch.equal(load_ckpt(mnist_run)["fixed_noise"], load_ckpt(mnist_reference)["fixed_noise"])
    for e in ("001", "002"):
        assert (png_array(mnist_run / "grids" / f"epoch_{e}.png")
                == png_array(mnist_reference / "grids" / f"epoch_{e}.png")).all()


def test_different_seed_different_run(mnist_root, mnist_run, tmp_path):
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, tmp_path / "r", "--seed", 2, epochs=1))
    assert code == 0
    assert not torch.equal(metric_values(tmp_path / "r")[:, 3:], metric_values(mnist_run)[:3, 3:])


# ---------------------------------------------------------------- resume == uninterrupted

def assert_same_run(run, ref, epochs):
    assert torch.equal(metric_values(run), metric_values(ref))
    a, b = load_ckpt(run), load_ckpt(ref)
    assert (a["epoch"], a["batch"], a["step"]) == (b["epoch"], b["batch"], b["step"])
    for key in ("gen", "disc"):
        assert_state_dicts_equal(a[key], b[key])
    for key in ("opt_g", "opt_d"):
        for i, st in b[key]["state"].items():
            for name, t in st.items():
                assert torch.equal(a[key]["state"][i][name], t), (key, i, name)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    for e in range(1, epochs + 1):
        assert (png_array(run / "grids" / f"epoch_{e:03d}.png")
                == png_array(ref / "grids" / f"epoch_{e:03d}.png")).all(), e


def test_resume_mnist_equals_uninterrupted(mnist_root, mnist_reference, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=1), capsys)
    assert code == 0 and load_ckpt(out)["epoch"] == 1 and len(read_metrics(out)[1]) == 3
    # a non-resumable flag given again is reported and ignored, the run's own value kept
    code, stdout, _ = run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 3,
                                                      "--beta1", 0.9, "--num-workers", 0], capsys)
    assert code == 0
    assert "ignoring --beta1" in stdout and "resuming at epoch 2" in stdout
    assert json.loads((out / "config.json").read_text())["beta1"] == 0.5
    assert_same_run(out, mnist_reference, 3)
    assert [e["epoch"] for e in read_events(out) if e["event"] == "epoch"] == [1, 2, 3]


@pytest.fixture(scope="module")
def dcgan_reference(celeba_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("dcgan_ref")
    code, _, _ = run_main(train_celeba_dcgan.main, dcgan_argv(celeba_root, base / "run", base / "cache", epochs=3))
    assert code == 0
    return base / "run"


def test_dcgan_run_folder(dcgan_reference):
    ckpt = load_ckpt(dcgan_reference)
    assert ckpt["config"]["model"] == "dcgan" and ckpt["config"]["g_features"] == 8
    assert any("running_mean" in k for k in ckpt["gen"])           # BN statistics are saved
    assert len(read_metrics(dcgan_reference)[1]) == 6               # 3 epochs x 2 batches
    assert png_array(dcgan_reference / "grids" / "epoch_003.png").shape == (530, 530, 3)  # 8 x 8 of 64 px
    for f in ("loss.png", "accuracy.png", "progress.png", "final_grid.png", "real_vs_fake.png"):
        assert (dcgan_reference / f).is_file()


def test_resume_dcgan_equals_uninterrupted(celeba_root, dcgan_reference, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    code, _, _ = run_main(train_celeba_dcgan.main, dcgan_argv(celeba_root, out, cache, epochs=1))
    assert code == 0
    code, _, _ = run_main(train_celeba_dcgan.main, ["--resume", "--out", out, "--epochs", 3])
    assert code == 0
    assert_same_run(out, dcgan_reference, 3)
    assert list(cache.iterdir()) and not list(tmp_path.rglob("*.tmp*"))


# ---------------------------------------------------------------- Ctrl-C

def interrupt_at(monkeypatch, step, inside=False, times=1):
    """Ctrl-C (`times` real SIGINTs) when global step `step` starts, or in its middle:
    after the D update, before the G update."""
    real = helper_train.gan_step

    def wrapped(s, batch, cfg, autocast, *labels):
        if s.step == step:
            if inside:
                g_step = s.opt_g.step

                def interrupted_g_step(*a, **k):
                    del s.opt_g.step
                    for _ in range(times):
                        send_sigint()
                    return g_step(*a, **k)
                s.opt_g.step = interrupted_g_step
            else:
                for _ in range(times):
                    send_sigint()
        return real(s, batch, cfg, autocast, *labels)
    monkeypatch.setattr(helper_train, "gan_step", wrapped)


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(mnist_root, mnist_reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 4)     # epoch 2, batch 2
    code, stdout, err = run_main(train_mnist_gan.main,
                                 mnist_argv(mnist_root, out, "--log-every", 1, epochs=3), capsys)
    assert code == 130
    assert "--resume" in err.strip().splitlines()[-1] and "Traceback" not in err
    ckpt = load_ckpt(out)
    assert ckpt["epoch"] == 1 and ckpt["batch"] in (1, 2) and ckpt["step"] == 3 + ckpt["batch"]
    for f in ("loss.png", "accuracy.png", "final_grid.png", "grids/epoch_001.png"):
        assert (out / f).is_file(), f
    assert not (out / "grids" / "epoch_002.png").exists()
    monkeypatch.undo()
    code, stdout, _ = run_main(train_mnist_gan.main, ["--resume", "--out", out], capsys)
    assert code == 0 and f"resuming at epoch 2, batch {ckpt['batch']}" in stdout
    assert_same_run(out, mnist_reference, 3)


def test_ctrl_c_keeps_the_buffered_metric_rows(mnist_root, mnist_reference, tmp_path, monkeypatch):
    """With the default --log-every 50 the rows of the interrupted epoch wait in memory:
    they must reach metrics.csv before the checkpoint that counts them."""
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 4)     # default --log-every 50: rows wait in memory
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=3))
    assert code == 130
    monkeypatch.undo()
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out])[0] == 0
    assert metric_values(out)[:, 0].tolist() == list(range(9))      # no step missing
    assert torch.equal(metric_values(out), metric_values(mnist_reference))


def test_ctrl_c_inside_a_step_resumes_exactly(mnist_root, mnist_reference, tmp_path, monkeypatch):
    """Ctrl-C between the D update and the G update: the step must still be finished
    (or not saved), never checkpointed half done."""
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 4, inside=True)
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--log-every", 1, epochs=3))
    assert code == 130
    monkeypatch.undo()
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out])[0] == 0
    assert_same_run(out, mnist_reference, 3)


def test_second_ctrl_c_quits_at_once_keeping_the_epoch_checkpoint(mnist_root, mnist_reference, tmp_path,
                                                                  monkeypatch, capsys):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 4, inside=True, times=2)
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=3), capsys)
    assert code == 130 and "--resume" in err.strip().splitlines()[-1]
    ckpt = load_ckpt(out)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 0, 3)   # not the half-done step
    assert (out / "loss.png").is_file()
    monkeypatch.undo()
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out])[0] == 0
    assert_same_run(out, mnist_reference, 3)


# ---------------------------------------------------------------- --time-budget

def test_time_budget_stops_mid_epoch_and_resumes_exactly(mnist_root, mnist_reference, tmp_path, monkeypatch,
                                                          capsys):
    """A clock that advances 10 s per step: a 0.5-minute budget runs out after the 4th
    step, epoch 2 batch 1, not at an epoch's end; the resumed run equals the uninterrupted one."""
    ten_seconds_per_step(monkeypatch)
    out = tmp_path / "run"
    code, stdout, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--time-budget", 0.5,
                                                                epochs=3), capsys)
    assert code == 0 and "time budget of 0.5 min reached" in stdout
    ckpt = load_ckpt(out)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 1, 4)
    assert len(read_metrics(out)[1]) == 4 and not (out / "grids" / "epoch_002.png").exists()
    assert read_events(out)[-1] == {"event": "time_budget", "epoch": 2, "batch": 1, "step": 4}
    monkeypatch.undo()
    code, stdout, _ = run_main(train_mnist_gan.main, ["--resume", "--out", out, "--time-budget", 0], capsys)
    assert code == 0 and "resuming at epoch 2, batch 1" in stdout
    assert_same_run(out, mnist_reference, 3)


# ---------------------------------------------------------------- NaN guard

def test_nan_loss_stops_and_keeps_last_good_checkpoint(mnist_root, tmp_path, monkeypatch, capsys):
    real = helper_train.gan_step

    def nan_at_step_4(s, *a):
        out = real(s, *a)
        if s.step - 1 == 4:          # epoch 2, batch 2
            out = out.clone()
            out[0] = float("nan")
        return out
    monkeypatch.setattr(helper_train, "gan_step", nan_at_step_4)
    out = tmp_path / "run"
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=3), capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "nan" in last and "epoch 2 batch 2" in last and "Traceback" not in err
    ckpt = load_ckpt(out)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 0, 3)
    m = metric_values(out)
    assert m[:, 0].tolist() == [0, 1, 2, 3, 4]          # ends at the NaN row
    assert torch.isnan(m[-1, 3]) and torch.isfinite(m[:-1]).all()
    assert (out / "loss.png").is_file() and (out / "accuracy.png").is_file()
    assert not (out / "grids" / "epoch_002.png").exists()
    assert any(e["event"] == "diverged" for e in read_events(out))


def test_real_divergence_is_caught(mnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--lr-gen", 1e30,
                                                             "--lr-disc", 1e30, epochs=2), capsys)
    assert code == 1
    assert "lower learning rates" in err.strip().splitlines()[-1]
    m = metric_values(out)
    assert not torch.isfinite(m[-1, 3:5]).all() and torch.isfinite(m[:-1, 3:5]).all()
    assert (out / "loss.png").is_file()


# ---------------------------------------------------------------- run folders: overwrite, resume errors

def test_refuses_to_overwrite_a_run(mnist_root, mnist_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(mnist_run, out)
    files = ("checkpoint.pt", "config.json", "metrics.csv", "events.jsonl", "loss.png")
    before = {f: (out / f).stat().st_mtime_ns for f in files}
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=1), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0] and "--overwrite" in lines[0]
    assert before == {f: (out / f).stat().st_mtime_ns for f in files}


def test_overwrite_replaces_the_run(mnist_root, mnist_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(mnist_run, out)
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--overwrite", epochs=1))
    assert code == 0
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch_001.png"]
    assert len(read_metrics(out)[1]) == 3 and load_ckpt(out)["epoch"] == 1
    assert [e["epoch"] for e in read_events(out) if e["event"] == "epoch"] == [1]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(train_mnist_gan.main, ["--resume", "--out", tmp_path / "empty"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no checkpoint" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_resume_a_moved_or_copied_run_writes_to_out(mnist_root, tmp_path, how):
    old, new = tmp_path / "old", tmp_path / "new"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, old, epochs=1))[0] == 0
    if how == "moved":
        old.rename(new)
    else:
        shutil.copytree(old, new)
    assert run_main(train_mnist_gan.main, ["--resume", "--out", new, "--epochs", 2])[0] == 0
    assert (new / "grids" / "epoch_002.png").is_file() and load_ckpt(new)["epoch"] == 2
    assert len(read_metrics(new)[1]) == 6
    if how == "moved":
        assert not old.exists()
    else:
        assert load_ckpt(old)["epoch"] == 1 and not (old / "grids" / "epoch_002.png").exists()


def test_resume_honours_max_batches_zero(mnist_root, tmp_path):
    out = tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=1))[0] == 0
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 2,
                                           "--max-batches", 0])[0] == 0
    m = metric_values(out)
    assert (m[:, 1] == 2).sum().item() == 12          # the whole epoch: 192 / 16 batches


def test_a_checkpoint_of_the_earlier_format_still_resumes(mnist_run, tmp_path):
    """Checkpoints written before the loss, dataset and speed settings existed lack
    those keys: they load with the lecture's values and go on training."""
    out = tmp_path / "old"
    shutil.copytree(mnist_run, out)
    ckpt = load_ckpt(out)
    for key in ("dataset", "loss", "n_critic", "beta2", "clip", "gp_weight", "spectral_norm", "r1", "r2",
                "cosine", "diffaug", "tensorboard", "threads", "g_batchnorm"):
        ckpt["config"].pop(key, None)
    torch.save(ckpt, out / "checkpoint.pt")
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 3])[0] == 0
    cfg = load_ckpt(out)["config"]
    assert load_ckpt(out)["epoch"] == 3 and (cfg["dataset"], cfg["loss"], cfg["r1"]) == ("mnist", "bce", 0.0)
    assert cfg["g_batchnorm"] is False and (cfg["r2"], cfg["cosine"]) == (0.0, 0)

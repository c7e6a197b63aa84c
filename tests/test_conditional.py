"""--conditional: the projection term against a hand-computed value, labels
travelling with their images through every loader (both input paths, IDX,
CIFAR-10, class folders, shards, a mid-epoch skip) and across a mid-epoch
resume, which network each optimizer moves (the class embeddings included),
the penalties seeing the labels, the refusals of unlabelled data, and both
scripts end to end."""
import contextlib
import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import helper_checkpoint
import helper_data as hd
import helper_schedule
import helper_train
import models
import train_celeba_dcgan
import train_mnist_gan
from conftest import (dcgan_argv, load_ckpt, make_cifar10, make_faces, make_idx_set, metric_values,
                      mnist_argv, png_array, run_main, ten_seconds_per_step, write_idx)
from helper_train import GANState, gan_step

NO_AMP = contextlib.nullcontext()
CPU = torch.device("cpu")


# ---------------------------------------------------------------- the networks

def test_projection_is_psi_of_phi_plus_the_class_embedding_dotted_with_phi():
    """D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, worked by hand on a 2-pixel image."""
    d = models.FCDiscriminator((1, 1, 2), hidden=(2,), slope=0.2, dropout=0.0, num_classes=3)
    with torch.no_grad():
        d.net[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        d.net[1].bias.zero_()
        d.net[3].weight.copy_(torch.tensor([[0.5, 1.0]]))
        d.net[3].bias.fill_(0.1)
        d.project.embed.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -5.0]]))
    x = torch.tensor([[[[3.0, 2.0]]]]).repeat(3, 1, 1, 1)
    # phi(x) = leaky([3, -2]) = [3, -0.4]; psi = 0.5 * 3 + 1 * -0.4 + 0.1 = 1.2
    # <embed(y), phi>: y=0: 0; y=1: 3 - 0.4 = 2.6; y=2: 6 + 2 = 8
    got = d(x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(got, torch.tensor([1.2, 3.8, 9.2]))


def test_dcgan_projection_uses_the_last_features_and_the_output_conv():
    torch.manual_seed(0)
    d = models.DCGANDiscriminator(3, 4, 16, slope=0.2, num_classes=5)
    torch.nn.init.normal_(d.project.embed.weight)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([4, 0, 2, 2])
    h = d.net[:-2](x)                                      # 8 x 4 x 4 features
    psi = torch.nn.functional.conv2d(h, d.net[-2].weight, d.net[-2].bias).view(-1)
    want = psi + (d.project.embed.weight[y] * h.flatten(1)).sum(1)
    torch.testing.assert_close(d(x, y), want)


def test_a_fresh_projection_d_is_the_unconditional_d_and_unconditional_networks_are_unchanged():
    torch.manual_seed(0)
    plain = models.FCDiscriminator((1, 4, 4), hidden=(8,), dropout=0.0)
    torch.manual_seed(0)
    cond = models.FCDiscriminator((1, 4, 4), hidden=(8,), dropout=0.0, num_classes=3)
    x = torch.randn(5, 1, 4, 4)
    torch.testing.assert_close(cond(x, torch.tensor([0, 1, 2, 1, 0])), plain(x))   # zero at the start
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"project.embed.weight"}
    gen = models.FCGenerator(8, (1, 4, 4), hidden=(8,), num_classes=3)
    assert gen.embed.weight.shape == (3, models.CLASS_DIM)
    assert "embed.weight" not in models.FCGenerator(8, (1, 4, 4), hidden=(8,)).state_dict()
    with pytest.raises(ValueError, match="conditional"):
        gen(torch.randn(2, 8))                 # a conditional G needs its labels
    with pytest.raises(ValueError, match="conditional"):
        plain(x, torch.zeros(5, dtype=torch.long))


def test_the_class_changes_what_g_draws_and_the_class_grid_keeps_the_noise_across_a_column():
    torch.manual_seed(0)
    gen = models.FCGenerator(8, (1, 4, 4), hidden=(16,), dropout=0.0, num_classes=12)
    z = torch.randn(3, 8)
    a, b = models.sample(gen, z, labels=torch.tensor([0, 0, 0])), models.sample(gen, z, labels=torch.tensor([5, 5, 5]))
    assert not torch.allclose(a, b)
    noise = torch.randn(64, 8)
    grid = models.class_grid(gen, noise, cols=4)
    assert grid.shape == (10 * 4, 1, 4, 4)                 # the first 10 of 12 classes
    for row in range(10):
        want = models.sample(gen, noise[:4], labels=torch.full((4,), row))
        torch.testing.assert_close(grid[row * 4:(row + 1) * 4], want)
    # the default labels of a conditional generator: every class in turn
    torch.testing.assert_close(models.sample(gen, noise[:24]),
                               models.sample(gen, noise[:24], labels=torch.arange(24) % 12))


def test_class_batchnorm_is_batchnorm_then_the_scale_and_shift_of_each_image_class():
    torch.manual_seed(0)
    cbn = models.ClassBatchNorm2d(3, 2)
    torch.nn.init.normal_(cbn.scale.weight)
    torch.nn.init.normal_(cbn.shift.weight)
    x, y = torch.randn(6, 2, 3, 3), torch.tensor([2, 0, 1, 1, 2, 0])
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-5) * cbn.scale.weight[y][:, :, None, None] \
        + cbn.shift.weight[y][:, :, None, None]
    torch.testing.assert_close(cbn(x, y), want)
    # class weights: a one-hot row is its class, a half-and-half row lies halfway
    onehot = torch.eye(3)[y]
    torch.testing.assert_close(cbn(x, onehot), want)
    halves = torch.full((6, 3), 0.0).index_fill_(1, torch.tensor([0, 2]), 0.5)
    torch.testing.assert_close(cbn(x, halves), (cbn(x, torch.zeros(6, dtype=torch.long))
                                                + cbn(x, torch.full((6,), 2))) / 2)


def test_a_fresh_cbn_generator_draws_every_class_as_the_unconditional_one_and_learns_classes_apart():
    """Scale 1 and shift 0 at the start: with the same conv weights, every class
    draws what the unconditional generator draws; the class weights live in the
    BatchNorms (no embedding beside the noise); labels are required."""
    torch.manual_seed(0)
    plain = models.DCGANGenerator(8, 4, 3, 16, num_classes=0)
    cbn = models.DCGANGenerator(8, 4, 3, 16, num_classes=3, class_input="cbn")
    convs = {k: v for k, v in plain.state_dict().items() if "running" not in k and "num_batches" not in k
             and not k.endswith((".1.weight", ".1.bias", ".4.weight", ".4.bias"))}   # BN affines
    cbn.load_state_dict(convs, strict=False)
    z = torch.randn(5, 8)
    for k in range(3):
        torch.testing.assert_close(cbn(z, torch.full((5,), k)), plain(z))
    assert cbn.embed is None and cbn.net[0].in_channels == 8
    assert {type(m) for m in cbn.net} >= {models.ClassBatchNorm2d}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for m in cbn.modules())
    with pytest.raises(ValueError, match="conditional"):
        cbn(z)
    models.dcgan_init_(cbn)                                   # per-class scales ~ N(1, 0.02)
    a, b = cbn(z, torch.zeros(5, dtype=torch.long)), cbn(z, torch.ones(5, dtype=torch.long))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(cbn(z, torch.eye(3)[[1] * 5]), b)   # one-hot weights = the label


@pytest.mark.parametrize("class_input", ["concat", "cbn"])
def test_each_dcgan_optimizer_moves_only_its_network_with_the_class_weights(class_input):
    torch.manual_seed(0)
    cfg = {**train_celeba_dcgan.PRESETS["lecture"], "latent_dim": 8, "amp": "off", "conditional": True,
           "classes": ["a", "b", "c"], "channels_last": False, "ema_decay": 0.5}
    gen = models.DCGANGenerator(8, 4, 3, 8, num_classes=3, class_input=class_input)
    disc = models.DCGANDiscriminator(3, 4, 8, num_classes=3)
    s = GANState(gen, disc, cfg, CPU)
    g0, d0, seen = snapshot(s.gen), snapshot(s.disc), {}
    d_step = s.opt_d.step

    def watch_d(*a, **k):
        out = d_step(*a, **k)
        seen["g"] = snapshot(s.gen)
        return out
    s.opt_d.step = watch_d
    real = torch.rand(6, 3, 8, 8) * 2 - 1
    gan_step(s, real, cfg, NO_AMP, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert not moved(g0, seen["g"])                                   # D step: G untouched
    class_weights = {k for k in g0 if "embed" in k or "scale" in k or "shift" in k}
    assert class_weights and class_weights <= moved(g0, snapshot(s.gen))   # G step: its class weights too
    assert "project.embed.weight" in moved(d0, snapshot(s.disc))


def test_class_input_is_refused_without_conditional_and_old_configs_are_concat(capsys):
    code, _, err = run_main(train_celeba_dcgan.main, ["--class-input", "cbn"], capsys)
    assert code == 2 and "add --conditional" in err.strip().splitlines()[-1]
    code, _, err = run_main(train_celeba_dcgan.main, ["--class-input", "film"], capsys)
    assert code == 2 and "concat" in err.strip().splitlines()[-1]
    old = {k: v for k, v in train_celeba_dcgan.PRESETS["lecture"].items() if k != "class_input"}
    gen, _ = models.build_models({**old, "conditional": True, "classes": ["a", "b"]})
    assert gen.embed is not None and not gen.cbn


# ---------------------------------------------------------------- the step

def tiny_state(classes=3, **cfg):
    torch.manual_seed(0)
    cfg = {**train_mnist_gan.PRESETS["lecture"], "latent_dim": 8, "amp": "off", "lr_gen": 1e-2,
           "lr_disc": 1e-2, "conditional": True, "classes": [str(i) for i in range(classes)], **cfg}
    gen = models.FCGenerator(8, (1, 4, 4), hidden=(16,), dropout=0.0, num_classes=classes)
    disc = models.FCDiscriminator((1, 4, 4), hidden=(16,), dropout=0.0, num_classes=classes)
    return GANState(gen, disc, cfg, CPU), cfg


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(9, 1, 4, 4, generator=g) * 2 - 1, torch.arange(9) % 3


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def moved(a, b):
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.mark.parametrize("loss", ["bce", "hinge", "rpgan", "wgan-gp"])
def test_d_step_moves_only_d_and_g_step_only_g_with_their_class_embeddings(loss):
    s, cfg = tiny_state(loss=loss, ema_decay=0.5)
    real, y = batch()
    g0, d0, seen = snapshot(s.gen), snapshot(s.disc), {}
    d_step, g_step = s.opt_d.step, s.opt_g.step

    def watch_d(*a, **k):
        out = d_step(*a, **k)
        seen["g"], seen["d"] = snapshot(s.gen), snapshot(s.disc)
        return out

    def watch_g(*a, **k):
        seen["d_before_g"] = snapshot(s.disc)
        return g_step(*a, **k)
    s.opt_d.step, s.opt_g.step = watch_d, watch_g
    values = gan_step(s, real, cfg, NO_AMP, y)
    assert torch.isfinite(values).all()
    # D step: D moves (its weights and class embedding; an output bias may have a zero
    # gradient, as hinge's has when as many scores on each side are inside the margin)
    assert not moved(g0, seen["g"]) and {"net.1.weight", "project.embed.weight"} <= moved(d0, seen["d"])
    assert not moved(seen["d_before_g"], snapshot(s.disc)) and not moved(seen["d"], snapshot(s.disc))
    assert moved(g0, snapshot(s.gen)) == set(g0) and "embed.weight" in g0           # G step: all of G
    assert not torch.equal(s.ema.embed.weight, g0["embed.weight"])                  # EMA follows it


def test_the_step_uses_the_batch_labels_for_real_and_fake():
    """The losses of a step with the labels y equal those computed by hand with
    D(x, y) and D(G(z, y), y); other labels give other losses."""
    s, cfg = tiny_state()
    with torch.no_grad():
        torch.nn.init.normal_(s.disc.project.embed.weight)
    gen0, disc0 = copy.deepcopy(s.gen), copy.deepcopy(s.disc)
    real, y = batch()
    torch.manual_seed(5)
    g_loss, d_loss, _, _ = gan_step(s, real, cfg, NO_AMP, y).tolist()
    torch.manual_seed(5)
    z = torch.randn(9, 8)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.no_grad():
        want = 0.5 * (bce(disc0(real, y), torch.ones(9)) + bce(disc0(gen0(z, y), y), torch.zeros(9)))
        other = 0.5 * (bce(disc0(real, y.flip(0)), torch.ones(9)) + bce(disc0(gen0(z, y), y.flip(0)), torch.zeros(9)))
    assert d_loss == pytest.approx(want.item(), abs=1e-6) and d_loss != pytest.approx(other.item(), abs=1e-4)
    with torch.no_grad():
        assert g_loss == pytest.approx(bce(s.disc(gen0(z, y), y), torch.ones(9)).item(), abs=1e-6)


@pytest.mark.parametrize("setting", [{"r1": 1.0}, {"r2": 1.0}, {"loss": "wgan-gp"}])
def test_penalties_differentiate_d_at_each_image_of_its_class(setting):
    s, cfg = tiny_state(**setting)
    with torch.no_grad():
        torch.nn.init.normal_(s.disc.project.embed.weight)
    real, y = batch()
    fake = batch(2)[0]
    hyper = helper_schedule.at_step(cfg, 0)

    def penalty(labels):
        torch.manual_seed(0)   # wgan-gp's interpolation
        return helper_train.penalties(s, real, fake, cfg, hyper, (labels,)).item()
    r, d = helper_train.R1_EVERY, (lambda x: s.disc(x, y))
    by_hand = {"r1": lambda: helper_train.losses.r1_penalty(d, real, r),
               "r2": lambda: helper_train.losses.r2_penalty(d, fake, r),
               "loss": lambda: helper_train.losses.gradient_penalty(d, real, fake, cfg["gp_weight"])}
    torch.manual_seed(0)
    want = by_hand[next(iter(setting))]().item()
    assert penalty(y) == pytest.approx(want, rel=1e-6)
    assert penalty(y.flip(0)) != pytest.approx(penalty(y), rel=1e-4)


# ---------------------------------------------------------------- labels through the loaders

def solid_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 10, 3), value, dtype=np.uint8)).save(path)


def class_folder(root, sizes=(3, 4, 2)):
    """root/c0, c1, ...: solid PNGs whose grey value 40 * class + i names their class."""
    for k, n in enumerate(sizes):
        for i in range(n):
            solid_png(root / f"c{k}" / ("deeper" if i == 1 else "") / f"{i}.png", 40 * k + i)
    return [f"c{k}" for k in range(len(sizes))]


def pairs(loader, epoch=0, skip=0):
    out = [(x.clone(), y.clone()) for x, y in loader.batches(epoch, skip)]
    return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out]), len(out)


def loaders(name, root, tmp_path, **extra):
    cfg = dict(dataset=name, data_dir=str(root), batch_size=4, seed=3, num_workers=0, conditional=True,
               download=False, image_size=8, cache_dir=str(tmp_path / "cache"), **extra)
    return [hd.make_loader(name, {**cfg, "input_path": p}, CPU) for p in ("tensor", "images")]


def assert_labels_follow_images(name, root, tmp_path, truth, classes):
    """truth(image batch) -> the labels those images must have."""
    fast, per_image = loaders(name, root, tmp_path)
    assert fast.classes == per_image.classes == classes
    for epoch in (0, 1):
        x, y, n = pairs(fast, epoch)
        assert torch.equal(y, truth(x)) and n == len(fast)
        x2, y2, _ = pairs(per_image, epoch)       # the per-image path: the same pairs
        assert torch.equal(x2, x) and torch.equal(y2, y)
        xs, ys, _ = pairs(fast, epoch, skip=2)    # a mid-epoch resume: the rest, in order
        assert torch.equal(xs, x[8:]) and torch.equal(ys, y[8:])
    shards = [hd.make_loader(name, dict(dataset=name, data_dir=str(root), batch_size=2, seed=3,
                                        num_workers=0, conditional=True, download=False, image_size=8,
                                        cache_dir=str(tmp_path / "cache"), input_path="tensor"),
                             CPU, rank, 2) for rank in (0, 1)]
    for shard in shards:
        x, y, _ = pairs(shard)
        assert torch.equal(y, truth(x))


def lookup(images_uint8, labels):
    """truth() for a data set whose images are all different."""
    table = {bytes(img.numpy().tobytes()): int(t) for img, t in zip(images_uint8, labels)}

    def truth(batch):
        as_uint8 = ((batch + 1) / 2 * 255).round().to(torch.uint8)
        return torch.tensor([table[bytes(img.numpy().tobytes())] for img in as_uint8])
    return truth


@pytest.mark.parametrize("folder,name", [("MNIST", "mnist"), ("FashionMNIST", "fashion-mnist"),
                                         ("KMNIST", "kmnist")])
def test_idx_labels_follow_their_images(folder, name, tmp_path):
    images, labels = make_idx_set(tmp_path, folder, n_train=21)
    assert_labels_follow_images(name, tmp_path, tmp_path, lookup(torch.from_numpy(images)[:, None], labels),
                                hd.CLASS_NAMES[name])


def test_cifar10_labels_follow_their_images(tmp_path):
    make_cifar10(tmp_path, n=4)
    images, labels = hd.read_cifar10(tmp_path, labels=True)
    assert labels.shape == (20,) and labels.dtype == torch.int64
    resized = hd.resize_images(images, 8)
    assert_labels_follow_images("cifar10", tmp_path, tmp_path, lookup(resized, labels), hd.CLASS_NAMES["cifar10"])


def test_class_folder_labels_follow_their_images(tmp_path):
    classes = class_folder(tmp_path / "data", sizes=(4, 3, 5))
    def truth(x):   # the grey value 40 * class + i
        return (((x[:, 0, 0, 0] + 1) / 2 * 255).round().long() // 40)
    assert_labels_follow_images("folder", tmp_path / "data", tmp_path, truth, classes)


# ---------------------------------------------------------------- refusals

def mnist_with_labels(root, labels):
    make_idx_set(root, "MNIST", n_train=len(labels))
    write_idx(root / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.array(labels, dtype=np.uint8))


@pytest.mark.parametrize("case", ["celeba", "stacked", "flat", "loose", "one class", "one digit",
                                  "bad label"])
def test_unlabelled_data_or_one_class_exits_2_with_one_line(case, celeba_root, tmp_path, capsys):
    data = tmp_path / "data"
    if case in ("flat", "loose", "one class"):
        make_faces(data / ("only" if case == "one class" else ""), 3, size=(16, 16))
        if case == "loose":
            make_faces(data / "cats", 3, size=(16, 16), start=10)
    elif case in ("one digit", "bad label"):
        mnist_with_labels(data, [3] * 8 if case == "one digit" else [1, 2, 30, 4])
    if case in ("one digit", "bad label"):
        argv = mnist_argv(data, tmp_path / "run", "--conditional")
        main = train_mnist_gan.main
    else:
        dataset = {"celeba": "celeba", "stacked": "stacked-mnist"}.get(case, "folder")
        argv = dcgan_argv(celeba_root if case == "celeba" else data, tmp_path / "run", tmp_path / "cache",
                          "--dataset", dataset, "--conditional")
        main = train_celeba_dcgan.main
    code, _, err = run_main(main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error:") and "Traceback" not in err, err
    want = {"celeba": "no class labels", "stacked": "no class labels", "flat": "outside any class subfolder",
            "loose": "outside any class subfolder", "one class": "one class", "one digit": "one class",
            "bad label": "outside the 10 classes"}[case]
    assert want in lines[-1]
    assert not (tmp_path / "run").exists()          # refused before anything was written


def test_an_old_checkpoint_config_is_unconditional():
    old = {k: v for k, v in train_mnist_gan.PRESETS["lecture"].items() if k != "conditional"}
    assert helper_checkpoint.upgrade_config(old)["conditional"] is False


# ---------------------------------------------------------------- end to end

def test_mnist_script_trains_conditionally_and_resumes_mid_epoch_exactly(tmp_path, monkeypatch, capsys):
    """--preset best (BatchNorm, EMA, R1) with --conditional; a time budget stops
    it mid-epoch, and the resumed run's per-batch losses equal an uninterrupted run's."""
    data = tmp_path / "data"
    make_idx_set(data, "MNIST", n_train=96)
    extra = ["--conditional", "--preset", "best", "--batch-size", 16, "--log-every", 1, "--max-batches", 0]
    ref = tmp_path / "ref"
    assert run_main(train_mnist_gan.main, mnist_argv(data, ref, *extra, epochs=2))[0] == 0
    ten_seconds_per_step(monkeypatch)
    out = tmp_path / "run"
    code, stdout, _ = run_main(train_mnist_gan.main, mnist_argv(data, out, *extra, "--time-budget", 1.5,
                                                                epochs=2), capsys)
    assert code == 0 and "time budget" in stdout
    ckpt = load_ckpt(out)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 4)            # mid-epoch 2 (of 6 batches)
    monkeypatch.undo()
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--time-budget", 0])[0] == 0
    assert torch.equal(metric_values(out), metric_values(ref))
    a, b = load_ckpt(out), load_ckpt(ref)
    assert a["config"]["classes"] == hd.CLASS_NAMES["mnist"] and a["config"]["conditional"] is True
    for net in ("gen", "disc", "ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in b[net]), net
    assert "embed.weight" in a["ema"] and "project.embed.weight" in a["disc"]
    # the class grid: 10 rows of 8, each row labelled, wider than the plain grid by the labels
    grid = png_array(out / "grids" / "epoch_002.png")
    assert grid.shape[0] == 10 * (56 + 2) + 2 and grid.shape[1] > 8 * (56 + 2) + 2
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in (out / "report.html").read_text()   # the classes named
    gen, cfg = helper_checkpoint.load_generator(out)
    assert gen.num_classes == 10 and models.samples_of(gen, cfg["latent_dim"], 20).shape == (20, 1, 28, 28)


def test_dcgan_script_trains_on_a_class_folder_with_each_loss(tmp_path):
    data = tmp_path / "data"
    for k, name in enumerate(("ant", "bee", "cow")):
        make_faces(data / name, 4, size=(24, 24), seed=k)
    for loss, class_input in (("bce", "concat"), ("hinge", "cbn"), ("wgan", "concat")):
        out = tmp_path / loss
        code, _, _ = run_main(train_celeba_dcgan.main, dcgan_argv(
            data, out, tmp_path / "cache", "--dataset", "folder", "--image-size", 16, "--conditional",
            "--loss", loss, "--n-critic", 1, "--diffaug", "translation", "--input-path", "images",
            "--class-input", class_input, epochs=1))
        assert code == 0 and torch.isfinite(metric_values(out)).all()
        assert load_ckpt(out)["config"]["classes"] == ["ant", "bee", "cow"]
    grid = png_array(tmp_path / "bce" / "grids" / "epoch_001.png")
    assert grid.shape[0] == 3 * (32 + 2) + 2                   # 16 px doubled, one row per class


@pytest.mark.parametrize("class_input", ["cbn", "concat"])
def test_dcgan_conditional_trains_under_bf16_autocast(class_input, tmp_path):
    """AMP (CPU bf16 autocast) with the labels: finite losses, and G's class
    weights stay float32 in the checkpoint."""
    data = tmp_path / "data"
    for k, name in enumerate(("ant", "bee")):
        make_faces(data / name, 4, size=(24, 24), seed=k)
    out = tmp_path / "run"
    code, _, _ = run_main(train_celeba_dcgan.main, dcgan_argv(
        data, out, tmp_path / "cache", "--dataset", "folder", "--image-size", 8, "--conditional",
        "--class-input", class_input, "--amp", "bf16", "--batch-size", 4, epochs=1))
    assert code == 0 and torch.isfinite(metric_values(out)).all()
    gen = load_ckpt(out)["gen"]
    weights = [v for k, v in gen.items() if "embed" in k or "scale" in k or "shift" in k]
    assert weights and all(w.dtype == torch.float32 for w in weights)


def test_resuming_on_data_with_other_classes_is_refused(tmp_path, capsys):
    data, other = tmp_path / "data", tmp_path / "other"
    class_folder(data, sizes=(3, 3))
    class_folder(other, sizes=(3, 3, 3))
    out = tmp_path / "run"
    argv = dcgan_argv(data, out, tmp_path / "cache", "--dataset", "folder", "--image-size", 8,
                      "--conditional", "--batch-size", 4, epochs=1)
    assert run_main(train_celeba_dcgan.main, argv)[0] == 0
    code, _, err = run_main(train_celeba_dcgan.main, ["--resume", "--out", out, "--epochs", 2,
                                                      "--data-dir", other], capsys)
    assert code == 2 and "c0, c1, c2" in err.strip().splitlines()[-1]


# ---------------------------------------------------------------- generate.py

@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    make_idx_set(root / "data", "MNIST", n_train=48)
    out = root / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(root / "data", out, "--conditional", "--ema-decay", 0.9,
                                                     epochs=1))[0] == 0
    return out


def test_generate_draws_the_class_asked_for(cond_run, tmp_path):
    import generate
    gen, cfg = helper_checkpoint.load_generator(cond_run)
    for k in ("7", "3"):
        assert run_main(generate.main, [cond_run, "--class", k, "--num", 6, "--out", tmp_path / f"{k}.pt"])[0] == 0
    got = torch.load(tmp_path / "7.pt")
    torch.testing.assert_close(got, models.samples_of(gen, 100, 6, 0, labels=torch.full((6,), 7)))
    assert not torch.allclose(got, torch.load(tmp_path / "3.pt"))


def test_generate_class_all_draws_a_row_per_class(cond_run, tmp_path):
    import generate
    out = tmp_path / "classes.png"
    assert run_main(generate.main, [cond_run, "--class", "all", "--num", 3, "--out", out])[0] == 0
    grid = png_array(out)
    assert grid.shape[0] == 10 * (56 + 2) + 2 and grid.shape[1] > 3 * (56 + 2) + 2   # row labels on the left


def test_generate_walks_from_one_class_to_another_at_fixed_noise(cond_run, tmp_path, monkeypatch):
    import generate
    seen = {}
    monkeypatch.setattr(generate, "walk_pictures", lambda images, *a: seen.update(x=images) or "")
    argv = [cond_run, "--interpolate", 2, "--class", 3, "--to-class", 8, "--steps", 4, "--out", tmp_path / "w.png"]
    assert run_main(generate.main, argv)[0] == 0
    gen, _ = helper_checkpoint.load_generator(cond_run)
    noise = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    walks = seen["x"].unflatten(0, (2, 4))
    torch.testing.assert_close(walks[:, 0], models.sample(gen, noise, labels=torch.tensor([3, 3])))
    torch.testing.assert_close(walks[:, -1], models.sample(gen, noise, labels=torch.tensor([8, 8])))
    assert not torch.allclose(walks[:, 1], walks[:, 0]) and not torch.allclose(walks[:, 1], walks[:, -1])


@pytest.mark.parametrize("argv,needle", [
    (["--class", "11"], "not a class of this run"),
    (["--class", "all", "--nearest"], "does not go with --nearest"),
    (["--to-class", "3"], "--to-class goes with --interpolate"),
    (["--interpolate", "2", "--class", "1", "--to-class", "x"], "not a class of this run"),
])
def test_generate_bad_class_flags_exit_2(cond_run, argv, needle, capsys):
    import generate
    code, _, err = run_main(generate.main, [cond_run, *argv], capsys)
    assert code == 2 and needle in err.strip().splitlines()[-1]


def test_generate_class_on_an_unconditional_run_exits_2(mnist_run, capsys):
    import generate
    code, _, err = run_main(generate.main, [mnist_run, "--class", "3"], capsys)
    assert code == 2 and "without --conditional" in err.strip().splitlines()[-1]


# ---------------------------------------------------------------- scores

class PixelReader(torch.nn.Module):
    """A stand-in classifier: it reads the class whose pixel (row 0, columns 0-9) is brightest."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Identity()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def features(self, x):
        return x[:, 0, 0, :10] + self.dummy


def reading_as(classes):
    x = torch.full((len(classes), 1, 28, 28), -1.0)
    x[torch.arange(len(classes)), 0, 0, torch.tensor(classes)] = 1.0
    return x


def test_class_agreement_counts_the_samples_read_as_their_class():
    import helper_eval
    asked = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    read = [0, 0, 0, 5, 1, 1, 7, 2]
    _, logits = helper_eval._classify(PixelReader(), reading_as(read))
    got = helper_eval.class_agreement(logits, asked, num_classes=4)
    assert got["class_agreement"] == pytest.approx(6 / 8)
    assert got["class_agreement_per_class"][:3] == pytest.approx([0.75, 1.0, 0.5])
    assert np.isnan(got["class_agreement_per_class"][3])          # no samples of class 3
    assert got["min_class_agreement"] == pytest.approx(0.5)


def test_class_fid_compares_each_class_with_the_real_images_of_that_class():
    import helper_eval
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 28, 28, generator=g) * 2 - 1
    real_labels = torch.arange(40) % 2
    fake, labels = real.clone(), real_labels.clone()
    fake[labels == 1, 0, 0, :10] += 0.5                  # class 1's samples are off, class 0's exact
    fake, real = (helper_eval._classify(PixelReader(), x)[0] for x in (fake, real))
    got = helper_eval.class_fid(fake, labels, real, real_labels, num_classes=3)
    zero, off, missing = got["class_fid_per_class"]
    assert zero == pytest.approx(0.0, abs=1e-9) and off == pytest.approx(10 * 0.25, rel=1e-6)
    assert np.isnan(missing) and got["mean_class_fid"] == pytest.approx(off / 2)
    swapped = helper_eval.class_fid(fake, 1 - labels, real, real_labels, num_classes=2)
    assert swapped["class_fid_per_class"][0] > 0.1      # the classes are told apart


def test_evaluate_scores_a_conditional_run_by_class_with_the_real_accuracy_as_ceiling(
        cond_run, tmp_path, monkeypatch, capsys):
    import evaluate
    import helper_eval
    monkeypatch.setattr(helper_eval, "load_mnist_classifier", lambda *a, **k: PixelReader())
    drawn = {}
    real_scores = helper_eval.class_agreement

    def recorded(logits, labels, *a):
        drawn.setdefault("labels", labels)
        return real_scores(logits, labels, *a)
    monkeypatch.setattr(helper_eval, "class_agreement", recorded)
    out = tmp_path / "scores.json"
    code, printed, _ = run_main(evaluate.main, [cond_run, "--num", 40, "--json", out], capsys)
    assert code == 0
    assert torch.equal(drawn["labels"], torch.arange(40) % 10)     # every class, 4 of each
    result = json.loads(out.read_text())
    per_class = result["samples"]["class_agreement_per_class"]
    assert len(per_class) == 10 and result["classes"] == hd.CLASS_NAMES["mnist"]
    assert len(result["samples"]["class_fid_per_class"]) == 10 and "mean_class_fid" in result["real_floor"]
    test, labels = hd.read_idx_set(cond_run.parent / "data", train=False, labels=True)
    ceiling = (hd.to_float(test)[:, 0, 0, :10].argmax(1) == labels).double().mean().item()
    assert result["real_floor"]["class_agreement"] == pytest.approx(ceiling)
    assert "class agreement (read as asked)" in printed and "real test images: the ceiling" in printed

"""The four networks of models.py: shapes, value ranges, the lecture's
architecture, bad sizes, build_models and the DCGAN initialisation."""
import pytest
import torch
from torch import nn

from models import (DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator,
                    build_models, dcgan_init_)


def last(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)][-1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- shapes

def test_fc_generator_shape_and_noise_shapes():
    gen = FCGenerator().eval()          # eval: dropout off, so both calls are comparable
    z = torch.randn(5, 100)
    out = gen(z)
    assert out.shape == (5, 1, 28, 28) and out.dtype == torch.float32
    assert torch.equal(gen(z.view(5, 100, 1, 1)), out)   # the lecture's N x latent x 1 x 1


def test_fc_discriminator_returns_n_logits():
    disc = FCDiscriminator()
    assert disc(torch.rand(7, 1, 28, 28) * 2 - 1).shape == (7,)
    assert disc(torch.zeros(1, 1, 28, 28)).shape == (1,)


@pytest.mark.parametrize("size", [64, 32])
def test_dcgan_shapes(size):
    gen = DCGANGenerator(latent_dim=100, features=8, image_size=size).eval()
    disc = DCGANDiscriminator(features=8, image_size=size)
    z = torch.randn(3, 100)
    x = gen(z)
    assert x.shape == (3, 3, size, size)
    assert torch.equal(gen(z.view(3, 100, 1, 1)), x)
    assert disc(x).shape == (3,)
    assert disc(x[:1]).shape == (1,)


def test_dcgan_lecture_sizes_4_8_16_32_64():
    """Default widths g = d = 64: feature maps 8g x 4, 4g x 8, 2g x 16, g x 32, 3 x 64."""
    gen = DCGANGenerator()
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)]
    gen(torch.randn(2, 100))
    for h in hooks:
        h.remove()
    assert shapes == [(512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32), (3, 64, 64)]
    convs = [m for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert all(c.bias is None for c in convs[:-1])          # no bias before BN
    assert sum(isinstance(m, nn.BatchNorm2d) for m in gen.modules()) == 4
    assert isinstance(list(gen.modules())[-1], nn.Tanh)

    disc = DCGANDiscriminator()
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in disc.modules() if isinstance(m, nn.Conv2d)]
    disc(torch.randn(2, 3, 64, 64))
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1, 1, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in disc.modules()) == 3   # none after the first conv
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.Sigmoid))
                   for m in disc.modules())


def test_fc_lecture_architecture():
    gen, disc = FCGenerator(), FCDiscriminator()
    g_layers = [type(m) for m in gen.net]
    assert g_layers == [nn.Linear, nn.LeakyReLU, nn.Dropout, nn.Linear, nn.Tanh]
    assert (gen.net[0].in_features, gen.net[0].out_features) == (100, 128)
    assert gen.net[3].out_features == 784
    d_layers = [type(m) for m in disc.net]
    assert d_layers == [nn.Flatten, nn.Linear, nn.LeakyReLU, nn.Dropout, nn.Linear]
    assert disc.net[-1].out_features == 1


# ---------------------------------------------------------------- value ranges

@pytest.mark.parametrize("make", [lambda: FCDiscriminator(),
                                  lambda: DCGANDiscriminator(features=8, image_size=32)])
def test_discriminator_outputs_are_logits_not_probabilities(make):
    disc = make().eval()
    x = torch.rand(4, *((1, 28, 28) if isinstance(disc, FCDiscriminator) else (3, 32, 32))) * 2 - 1
    head = last(disc, (nn.Linear, nn.Conv2d))
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(3.0)
        assert torch.allclose(disc(x), torch.full((4,), 3.0))     # a sigmoid would give 0.95
        head.bias.fill_(-2.5)
        assert torch.allclose(disc(x), torch.full((4,), -2.5))


@pytest.mark.parametrize("make", [FCGenerator, lambda: DCGANGenerator(features=8, image_size=32)])
def test_generator_output_in_minus_one_one(make):
    gen = make()
    with torch.no_grad():
        last(gen, (nn.Linear, nn.ConvTranspose2d)).weight.mul_(1000)   # saturate the output layer
        out = gen(torch.randn(16, 100))
    assert out.min() >= -1 and out.max() <= 1
    assert out.abs().max() > 0.99            # actually reaches the ends: tanh, not a clamp of small values


# ---------------------------------------------------------------- sizes, activations

@pytest.mark.parametrize("size", [
    4, 48, 100, 65,
    0,
])
def test_bad_image_size_raises(size):
    with pytest.raises(ValueError, match="image size"):
        DCGANGenerator(features=8, image_size=size)
    with pytest.raises(ValueError, match="image size"):
        DCGANDiscriminator(features=8, image_size=size)


def test_fc_generator_batchnorm_option():
    """BatchNorm after each hidden Linear (which then has no bias), never after
    the output layer; in eval mode the running statistics make a sample
    independent of the rest of its batch."""
    gen, _ = build_models({**FC_CFG, "dropout": 0.0, "g_batchnorm": True})
    assert [type(m) for m in gen.net] == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU,
                                          nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, nn.Linear, nn.Tanh]
    assert [m.bias is None for m in gen.net if isinstance(m, nn.Linear)] == [True, True, False]
    z = torch.randn(6, 16)
    gen(z)                                            # train mode: updates the running statistics
    assert not torch.equal(gen.net[1].running_mean, torch.zeros(32))
    gen.eval()
    assert torch.allclose(gen(z)[:2], gen(z[:2]), atol=1e-6)
    plain, _ = build_models(FC_CFG)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())


def test_relu_activation_variant_and_unknown_activation():
    gen = DCGANGenerator(features=8, image_size=32, activation="relu")
    assert any(isinstance(m, nn.ReLU) for m in gen.modules())
    assert not any(isinstance(m, nn.LeakyReLU) for m in gen.modules())
    with pytest.raises(ValueError):
        FCGenerator(activation="gelu")


# ---------------------------------------------------------------- build_models, init

FC_CFG = dict(model="fc", latent_dim=16, img_shape=[1, 28, 28], g_hidden=[32, 64],
              d_hidden=[48], dropout=0.3, slope=0.2, gen_activation="leaky", init="default",
              g_batchnorm=False)
DC_CFG = dict(model="dcgan", latent_dim=16, g_features=4, d_features=6, channels=3,
              image_size=32, slope=0.2, gen_activation="leaky", init="default")


def test_build_models_fc():
    gen, disc = build_models(FC_CFG)
    assert isinstance(gen, FCGenerator) and isinstance(disc, FCDiscriminator)
    assert gen(torch.randn(2, 16)).shape == (2, 1, 28, 28)
    assert disc(torch.randn(2, 1, 28, 28)).shape == (2,)
    widths = [m.out_features for m in gen.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 64, 784]
    assert [m.out_features for m in disc.modules() if isinstance(m, nn.Linear)] == [48, 1]
    assert all(m.p == 0.3 for m in gen.modules() if isinstance(m, nn.Dropout))
    assert all(m.negative_slope == 0.2 for m in gen.modules() if isinstance(m, nn.LeakyReLU))


def test_build_models_dcgan_and_unknown():
    gen, disc = build_models(DC_CFG)
    assert isinstance(gen, DCGANGenerator) and isinstance(disc, DCGANDiscriminator)
    x = gen(torch.randn(2, 16))
    assert x.shape == (2, 3, 32, 32) and disc(x).shape == (2,)
    assert last(gen, nn.ConvTranspose2d).in_channels == 4
    assert [m.out_channels for m in disc.modules() if isinstance(m, nn.Conv2d)][0] == 6
    with pytest.raises(ValueError):
        build_models({**DC_CFG, "model": "resnet"})


def test_build_models_init_option():
    torch.manual_seed(0)
    default_gen, _ = build_models({**DC_CFG, "g_features": 16})
    gen, disc = build_models({**DC_CFG, "g_features": 16, "init": "dcgan"})
    w = torch.cat([m.weight.flatten() for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)])
    w_default = torch.cat([m.weight.flatten() for m in default_gen.modules()
                           if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 0.002
    assert abs(w_default.std().item() - 0.02) > 0.005    # PyTorch's default init is different


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    gen = dcgan_init_(DCGANGenerator(features=16, image_size=64))
    disc = dcgan_init_(DCGANDiscriminator(features=16, image_size=64))
    for net in (gen, disc):
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        w = torch.cat([m.weight.detach().flatten() for m in convs])
        assert w.numel() > 100_000
        assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
        assert all(m.bias is None or torch.all(m.bias == 0) for m in convs)
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        bw = torch.cat([m.weight.detach() for m in bns])
        assert abs(bw.mean().item() - 1) < 0.01 and 0.01 < bw.std().item() < 0.03
        assert all(torch.all(m.bias == 0) for m in bns)
    lin = dcgan_init_(nn.Linear(500, 400))
    assert abs(lin.weight.std().item() - 0.02) < 0.001 and torch.all(lin.bias == 0)

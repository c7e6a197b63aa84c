"""The other data sets through the training scripts: Fashion-MNIST / KMNIST on
the MNIST script, an image folder and CIFAR-10 on the DCGAN script. The data
set (and crop) are part of the run's config, so --resume and generate.py know
them; the wrong kind of data set for a script is a one-line error."""
import pytest
import torch

import train_celeba_dcgan
import train_mnist_gan
from conftest import (dcgan_argv, load_ckpt, make_cifar10, make_faces, make_idx_set, metric_values,
                      mnist_argv, run_main)
from helper_checkpoint import load_generator
from models import samples_of


@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_mnist_script_trains_and_resumes_on_other_idx_sets(name, folder, tmp_path):
    make_idx_set(tmp_path / "data", folder, n_train=48)
    out = tmp_path / "run"
    argv = mnist_argv(tmp_path / "data", out, "--dataset", name, epochs=1)
    assert run_main(train_mnist_gan.main, argv)[0] == 0
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 2])[0] == 0
    assert load_ckpt(out)["config"]["dataset"] == name and load_ckpt(out)["epoch"] == 2
    assert torch.isfinite(metric_values(out)).all()


def test_mnist_script_names_the_files_it_misses(tmp_path, capsys):
    make_idx_set(tmp_path / "data", "MNIST")     # MNIST is there, Fashion-MNIST is not
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(tmp_path / "data", tmp_path / "run",
                                                             "--dataset", "fashion-mnist"), capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "FashionMNIST" in line and "Traceback" not in err
    assert not (tmp_path / "data" / "FashionMNIST").exists() and not (tmp_path / "run").exists()


def test_dcgan_on_an_image_folder_with_class_subfolders(tmp_path):
    for cls in ("cats", "dogs"):
        make_faces(tmp_path / "pics" / cls, 5, size=(50, 40), seed=len(cls))
    out = tmp_path / "run"
    argv = dcgan_argv(tmp_path / "pics", out, tmp_path / "cache", "--dataset", "folder",
                      "--image-size", 32, epochs=1)
    assert run_main(train_celeba_dcgan.main, argv)[0] == 0
    cfg = load_ckpt(out)["config"]
    assert (cfg["dataset"], cfg["crop"]) == ("folder", "center")
    gen, cfg = load_generator(out)
    assert samples_of(gen, cfg["latent_dim"], 3).shape == (3, 3, 32, 32)


def test_dcgan_on_cifar10_defaults_to_32_pixels(tmp_path):
    make_cifar10(tmp_path / "data", n=4)
    out = tmp_path / "run"
    argv = [a for a in dcgan_argv(tmp_path / "data", out, tmp_path / "cache", "--dataset", "cifar10",
                                  epochs=1)]
    assert run_main(train_celeba_dcgan.main, argv)[0] == 0
    cfg = load_ckpt(out)["config"]
    assert (cfg["image_size"], cfg["crop"]) == (32, "none")


@pytest.mark.parametrize("main,dataset", [(train_mnist_gan.main, "celeba"),
                                          (train_celeba_dcgan.main, "mnist")])
def test_a_data_set_of_the_other_script_is_refused(main, dataset, tmp_path, capsys):
    code, _, err = run_main(main, ["--out", tmp_path / "run", "--dataset", dataset], capsys)
    assert code == 2 and "--dataset" in err.strip().splitlines()[-1]

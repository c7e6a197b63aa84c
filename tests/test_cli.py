"""The command lines: flag validation, data errors, generate.py, and true end-to-end
runs of the three scripts as subprocesses."""
import argparse
import ast
import os
import runpy
import subprocess
import sys

import pytest
import torch
from PIL import Image

import ablate
import evaluate
import generate
import helper_checkpoint
import helper_cli
import helper_eval
import helper_health
import models
import train_celeba_dcgan
import train_mnist_gan
from conftest import ROOT, dcgan_argv, load_ckpt, make_celeba, mnist_argv, run_main
from models import build_models

SCRIPTS = {"mnist": train_mnist_gan.main, "celeba": train_celeba_dcgan.main}


def assert_one_line_error(code, err, expected_code=2, *needles):
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


# ---------------------------------------------------------------- flag errors

@pytest.mark.parametrize("script", ["mnist", "celeba"])
@pytest.mark.parametrize("argv,needle", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--preset", "nope"], "--preset"),
    (["--lr-gen", "0"], "--lr-gen"),
    (["--latent-dim", "0"], "--latent-dim"),
    (["--label-smoothing", "1.5"], "--label-smoothing"),
    (["--resume", "--overwrite"], "--resume"),
    (["--input-path", "disk"], "--input-path"),
    (["--epochs", "two"], "--epochs"),
])
def test_bad_flags_exit_2_with_one_line(script, argv, needle, tmp_path, capsys):
    code, _, err = run_main(SCRIPTS[script], ["--out", tmp_path / "run", *argv], capsys)
    assert_one_line_error(code, err, 2, needle)
    assert not (tmp_path / "run").exists()


def test_abbreviated_flags_are_refused(mnist_run, tmp_path, capsys):
    """argparse's prefix matching is off: --epoch and --max-batch are no flags."""
    for main, argv in [(train_mnist_gan.main, ["--epoch", 1, "--max-batch", 5]),
                       (train_celeba_dcgan.main, ["--epoch", 1]),
                       (generate.main, [mnist_run, "--nu", 4]), (evaluate.main, [mnist_run, "--nu", 8]),
                       (ablate.main, ["--max-batch", 5]), (helper_eval.main, ["--data", tmp_path]),
                       (helper_health.main, [mnist_run, "--he"])]:
        code, _, err = run_main(main, [*argv, "--out", tmp_path / "run"] if main in SCRIPTS.values()
                                else argv, capsys)
        assert code == 2 and "unrecognized arguments" in err, (main.__module__, err)
    assert not (tmp_path / "run").exists()


def test_every_parser_refuses_abbreviations():
    """Every argparse.ArgumentParser(...) in the project says allow_abbrev=False."""
    for path in ROOT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
                flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                assert flags.get("allow_abbrev") is False, f"{path.name}:{node.lineno}"


@pytest.mark.parametrize("script", ["mnist", "celeba"])
def test_help_lists_the_presets_and_beta2(script, capsys):
    code, out, _ = run_main(SCRIPTS[script], ["--help"], capsys)
    assert code == 0 and "--preset {lecture,best}" in " ".join(out.split())
    assert "beta2 is" not in out and "(beta2: --beta2)" in " ".join(out.split())


def test_generate_and_evaluate_exit_2_for_a_missing_run(tmp_path, capsys):
    for main, argv in [(generate.main, ["--out", tmp_path / "x.png"]), (evaluate.main, [])]:
        code, _, err = run_main(main, [tmp_path / "nothing", *argv], capsys)
        assert_one_line_error(code, err, 2, "no checkpoint at")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_mnist_widths(tmp_path, capsys):
    code, _, err = run_main(train_mnist_gan.main, ["--out", tmp_path / "r", "--g-hidden", "0,5"], capsys)
    assert_one_line_error(code, err, 2, "--g-hidden")
    code, _, err = run_main(train_mnist_gan.main, ["--out", tmp_path / "r", "--d-hidden", "a,b"], capsys)
    assert_one_line_error(code, err, 2, "--d-hidden")


@pytest.mark.parametrize("script,argv", [
    ("celeba", ["--image-size", "48"]),
    ("mnist", ["--dropout", "1.5"]),
    ("mnist", ["--beta1", "1.5"]),
])
def test_unusable_model_flags_exit_2_with_one_line(script, argv, mnist_root, celeba_root, tmp_path, capsys):
    out = tmp_path / "run"
    base = (mnist_argv(mnist_root, out, epochs=1) if script == "mnist"
            else dcgan_argv(celeba_root, out, tmp_path / "cache", epochs=1))
    code, _, err = run_main(SCRIPTS[script], [*base, *argv], capsys)
    assert_one_line_error(code, err, 2, argv[0])
    assert not (out / "config.json").exists()


def test_missing_celeba_exits_2_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(train_celeba_dcgan.main,
                            dcgan_argv(tmp_path / "nowhere", out, tmp_path / "cache"), capsys)
    assert_one_line_error(code, err, 2, "img_align_celeba")
    assert not out.exists()


def test_zip_only_celeba_folder_exits_2_with_hint(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "img_align_celeba.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    code, _, err = run_main(train_celeba_dcgan.main,
                            dcgan_argv(tmp_path / "data", tmp_path / "run", tmp_path / "cache"), capsys)
    assert_one_line_error(code, err, 2, "unzip it first")


def test_celeba_flat_folder_and_images_input_path(tmp_path, capsys):
    """The plain folder of 178 x 218 JPEGs, decoded per image every epoch."""
    make_celeba(tmp_path / "data", "flat", n=10, size=(178, 218))
    out = tmp_path / "run"
    code, _, err = run_main(train_celeba_dcgan.main,
                            dcgan_argv(tmp_path / "data", out, tmp_path / "cache", "--input-path", "images",
                                       "--image-size", 32, epochs=1), capsys)
    assert code == 0, err
    ckpt = load_ckpt(out)
    assert ckpt["config"]["image_size"] == 32 and ckpt["epoch"] == 1
    with Image.open(out / "reals.png") as im:
        assert im.size == (8 * 34 + 2, 34 + 2)              # the first batch of real images
    assert not (tmp_path / "cache").exists()                # per-image path: no cache built


# ---------------------------------------------------------------- generate.py

def gen_main(argv, capsys):
    return run_main(generate.main, argv, capsys)


def test_generate_tensor(mnist_run, tmp_path, capsys):
    code, out, _ = gen_main([mnist_run / "checkpoint.pt", "--num", 10, "--out", tmp_path / "x.pt",
                             "--device", "cpu"], capsys)
    assert code == 0 and "wrote 10 images" in out
    x = torch.load(tmp_path / "x.pt", weights_only=True)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    # the same images, by hand: the saved generator in eval mode on noise seeded by --seed (0)
    ckpt = load_ckpt(mnist_run)
    gen, _ = build_models(ckpt["config"])
    gen.load_state_dict(ckpt["gen"])
    noise = torch.randn(10, 100, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, models.sample(gen, noise), atol=1e-6)


def test_generate_seeds_and_run_folder(mnist_run, tmp_path, capsys):
    def images(src, seed, name):
        code, _, err = gen_main([src, "--num", 10, "--seed", seed, "--out", tmp_path / name], capsys)
        assert code == 0, err
        return torch.load(tmp_path / name, weights_only=True)
    a = images(mnist_run / "checkpoint.pt", 3, "a.pt")
    assert torch.equal(a, images(mnist_run / "checkpoint.pt", 3, "b.pt"))
    assert not torch.allclose(a, images(mnist_run / "checkpoint.pt", 4, "c.pt"))
    assert torch.equal(a, images(mnist_run, 3, "d.pt"))          # the run folder works too


def test_generate_png_grid(mnist_run, tmp_path, capsys):
    out = tmp_path / "sub" / "x.png"
    code, _, _ = gen_main([mnist_run, "--num", 10, "--out", out], capsys)
    assert code == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (8 * 58 + 2, 2 * 58 + 2)   # 10 images (doubled), 8 per row
    code, _, _ = gen_main([mnist_run, "--num", 6, "--nrow", 3, "--out", tmp_path / "y.png"], capsys)
    with Image.open(tmp_path / "y.png") as im:
        assert code == 0 and im.size == (3 * 58 + 2, 2 * 58 + 2)


def test_generate_uses_the_ema_generator(mnist_run, tmp_path, capsys):
    ckpt = load_ckpt(mnist_run)
    ckpt["ema"] = {k: torch.zeros_like(v) for k, v in ckpt["gen"].items()}   # tanh(0) = 0 everywhere
    torch.save(ckpt, tmp_path / "ema.pt")
    code, _, _ = gen_main([tmp_path / "ema.pt", "--num", 4, "--out", tmp_path / "x.pt"], capsys)
    assert code == 0 and torch.equal(torch.load(tmp_path / "x.pt"), torch.zeros(4, 1, 28, 28))


def test_generate_refuses_garbage_and_foreign_files(tmp_path, capsys):
    (tmp_path / "garbage.pt").write_bytes(os.urandom(1000))
    code, _, err = gen_main([tmp_path / "garbage.pt", "--out", tmp_path / "x.pt"], capsys)
    assert code == 2    # bad input, as on --resume in training
    assert_one_line_error(code, err, code, "not a PyTorch checkpoint")

    torch.save({"a": 1}, tmp_path / "foreign.pt")
    code, _, err = gen_main([tmp_path / "foreign.pt", "--out", tmp_path / "x.pt"], capsys)
    assert_one_line_error(code, err, code, "not a checkpoint of these scripts")
    assert code != 0

    code, _, err = gen_main([tmp_path / "missing", "--out", tmp_path / "x.pt"], capsys)
    assert code != 0 and assert_one_line_error(code, err, code, "no checkpoint at")
    assert not (tmp_path / "x.pt").exists()


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_generate_refuses_pickled_objects(tmp_path, capsys):
    torch.save({"format": helper_checkpoint.CKPT_FORMAT, "x": argparse.Namespace(a=1)}, tmp_path / "ns.pt")
    code, _, err = gen_main([tmp_path / "ns.pt", "--out", tmp_path / "x.pt"], capsys)
    assert code != 0
    assert_one_line_error(code, err, code, "not loaded")
    marker = tmp_path / "code_ran"
    torch.save({"format": helper_checkpoint.CKPT_FORMAT, "config": _Payload(str(marker))}, tmp_path / "evil.pt")
    code, _, err = gen_main([tmp_path / "evil.pt", "--out", tmp_path / "x.pt"], capsys)
    assert code != 0 and not marker.exists()
    assert_one_line_error(code, err, code, "not loaded")


def test_generate_flag_errors(mnist_run, tmp_path, capsys):
    code, _, err = gen_main([mnist_run, "--num", 0, "--out", tmp_path / "x.pt"], capsys)
    assert_one_line_error(code, err, 2, "--num")
    code, _, err = gen_main([mnist_run, "--out", tmp_path / "x.jpg"], capsys)
    assert_one_line_error(code, err, 2, "--out")
    if not torch.cuda.is_available():
        code, _, err = gen_main([mnist_run, "--device", "cuda", "--out", tmp_path / "x.pt"], capsys)
        assert code != 0 and assert_one_line_error(code, err, code, "--device cpu")


# ---------------------------------------------------------------- end to end, as a user runs them

def run_script(*argv, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_mnist_script_end_to_end(mnist_root, tmp_path):
    out = tmp_path / "run"
    p = run_script("train_mnist_gan.py", *mnist_argv(mnist_root, out, epochs=1))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "done after" in p.stdout and "Traceback" not in p.stderr
    for f in ("metrics.csv", "checkpoint.pt", "loss.png", "final_grid.png", "grids/epoch_001.png"):
        assert (out / f).is_file(), f
    assert load_ckpt(out)["epoch"] == 1


def test_generate_as_a_script(mnist_run, tmp_path, monkeypatch, capsys):
    """generate.py's __main__ path (in-process, to spare a second interpreter start)."""
    monkeypatch.setattr(sys, "argv", ["generate.py", str(mnist_run), "--num", "5",
                                      "--out", str(tmp_path / "s.pt")])
    runpy.run_path(str(ROOT / "generate.py"), run_name="__main__")
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (5, 1, 28, 28)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(sys, "argv", ["generate.py", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "t.pt")])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "generate.py"), run_name="__main__")
    assert e.value.code == 2
    assert_one_line_error(2, capsys.readouterr().err, 2, "not a PyTorch checkpoint")


def test_celeba_script_end_to_end(celeba_root, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    p = run_script("train_celeba_dcgan.py", *dcgan_argv(celeba_root, out, cache, epochs=1))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "done after" in p.stdout and "Traceback" not in p.stderr
    ckpt = load_ckpt(out)
    assert ckpt["config"]["model"] == "dcgan" and ckpt["epoch"] == 1
    assert len(list(cache.glob("faces_64px_16_*.npy"))) == 1     # 16 train images, valid/test left out
    for f in ("metrics.csv", "loss.png", "final_grid.png", "real_vs_fake.png"):
        assert (out / f).is_file(), f


@pytest.mark.parametrize("given,env,preset,expected", [
    (set(), None, 1, 1),              # the MNIST preset's one thread
    (set(), "2", 1, 5),               # OMP_NUM_THREADS set by the user wins over the preset
    ({"threads"}, "2", 3, 3),         # a typed --threads wins over everything
    (set(), None, 0, 5),              # 0: leave PyTorch's own choice
])
def test_threads_follow_the_users_setting(given, env, preset, expected, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(5)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        if env is not None:
            monkeypatch.setenv("OMP_NUM_THREADS", env)
        helper_cli.set_threads({"threads": preset}, given)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


# What a script's `main` sees of --help and of a flag argparse refuses, in a fresh
# interpreter: the answer comes before torch (or numpy, or matplotlib) is imported.
NO_TORCH_YET = """
import sys
import {script}
try:
    {script}.main({argv!r})
except SystemExit as e:
    print("exit", e.code)
print("loaded", sorted(m for m in ("torch", "numpy", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("script", ["train_mnist_gan", "train_celeba_dcgan"])
@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["--epochs", "x"], 2), (["--epoch", "1"], 2)])
def test_help_and_flag_errors_answer_before_torch_loads(script, argv, code):
    done = subprocess.run([sys.executable, "-c", NO_TORCH_YET.format(script=script, argv=argv)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"exit {code}" in done.stdout, done.stdout + done.stderr
    assert "loaded []" in done.stdout, done.stdout
    if code:
        assert_one_line_error(code, done.stderr, code)

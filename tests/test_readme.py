"""The README's commands run as written, top to bottom, in a fresh folder with
tiny data in ./data: every `python SCRIPT.py ...` line of its bash blocks, cut
short (--epochs, --max-batches, --num), and none of them writes outside the
run folders. Lines that install, run the tests, train for minutes
(ablate.py) or need several processes (torchrun) are left out and listed."""
import re
import shlex

import pytest

import evaluate
import generate
import helper_features
import train_celeba_dcgan
import train_mnist_gan
from conftest import ROOT, make_celeba, make_mnist, run_main

MAINS = {"train_mnist_gan.py": train_mnist_gan.main, "train_celeba_dcgan.py": train_celeba_dcgan.main,
         "generate.py": generate.main, "evaluate.py": evaluate.main}
NOT_RUN = ("pip ", "python -m ", "python -c ", "tensorboard ", "torchrun ", "python ablate.py")


def readme_commands():
    """Every command line of the README's bash blocks, continuation lines joined, comments cut."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("   #")[0].split("  #")[0].strip()
            if line:
                lines.append(line)
    return lines


def shortened(script, args, trained):
    """The command cut short: training runs 2 batches of 16 per epoch, one epoch
    more than the folder already has; evaluations score few samples."""
    args = list(args)
    if script.startswith("train_"):
        out = args[args.index("--out") + 1] if "--out" in args else \
            {"train_mnist_gan.py": "runs/mnist_gan", "train_celeba_dcgan.py": "runs/celeba_dcgan"}[script]
        if "--epochs" in args:
            del args[args.index("--epochs"):args.index("--epochs") + 2]
        trained[out] = trained.get(out, 0) + 1
        return args + ["--epochs", trained[out], "--max-batches", 2, "--batch-size", 16,
                       "--num-workers", 0, "--device", "cpu"]
    if script == "evaluate.py":
        if "--num" in args:
            del args[args.index("--num"):args.index("--num") + 2]
        return args + ["--num", 16, "--inception-num", 8]
    return args


def test_the_readme_commands_run_as_written(tmp_path, monkeypatch, capsys):
    make_mnist(tmp_path / "data", n_train=256, n_test=64)
    make_celeba(tmp_path / "data", n=40)
    monkeypatch.chdir(tmp_path)
    try:
        helper_features.find_network()
        have_network = True
    except helper_features.NetworkUnavailable:
        have_network = False
    ran, trained = [], {}
    for line in readme_commands():
        if line.startswith(NOT_RUN) or not line.startswith("python "):
            continue
        script, *args = shlex.split(line)[1:]
        assert script in MAINS, f"the README runs {script}: add it to this test"
        if "--inception" in args and not have_network:
            continue
        code, _, err = run_main(MAINS[script], shortened(script, args, trained), capsys)
        assert code == 0, f"{line}\n{err}"
        ran.append(line)
    assert len(ran) >= 10, ran
    # outputs went into run folders only: nothing else appeared beside ./data
    assert {p.name for p in tmp_path.iterdir()} <= {"data", "runs"}


@pytest.mark.parametrize("line", [c for c in readme_commands() if c.startswith("python ")
                                  and not c.startswith(NOT_RUN)])
def test_readme_commands_name_no_tracked_folder(line):
    """A README command never writes into the repository's own docs/ images."""
    assert "docs/" not in line

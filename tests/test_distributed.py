"""torchrun with 2 CPU processes and the gloo backend: the run finishes, every
rank ends with the same weights, only rank 0 writes outputs, and the checkpoint
loads in a single process and resumes under torchrun."""
import subprocess
import sys
import textwrap

import pytest
import torch

from helper_checkpoint import load_generator
from models import samples_of

from conftest import ROOT, load_ckpt, read_events, read_metrics

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this PyTorch build has no torch.distributed")

# Runs the MNIST script, then saves each rank's final weights so the test can compare them.
LAUNCHER = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {root!r})
    import helper_cli, train_mnist_gan
    train = helper_cli.train_gan

    def train_and_keep_weights(state, loader, cfg, run_dir, *args, **kwargs):
        status = train(state, loader, cfg, run_dir, *args, **kwargs)
        rank = torch.distributed.get_rank()
        torch.save({{"gen": state.gen.state_dict(), "disc": state.disc.state_dict()}},
                   f"{{run_dir}}/../rank{{rank}}.pt")
        return status

    helper_cli.train_gan = train_and_keep_weights
    train_mnist_gan.main(sys.argv[1:])
""")


def torchrun(script, argv, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), *map(str, argv)]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)


def test_torchrun_two_processes_gloo(mnist_root, tmp_path):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(root=str(ROOT)))
    out = tmp_path / "run"
    argv = ["--data-dir", mnist_root, "--out", out, "--batch-size", 32, "--max-batches", 3,
            "--num-workers", 0, "--device", "cpu", "--log-every", 2]
    done = torchrun(script, [*argv, "--epochs", 1], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = torchrun(script, [*argv, "--epochs", 2, "--resume"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    # Both ranks hold identical weights after training (DDP all-reduced every gradient).
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("gen", "disc"):
        for k in w0[net]:
            assert torch.equal(w0[net][k], w1[net][k]), (net, k)

    # One set of outputs: rank 0 alone wrote them, rows not doubled.
    _, rows = read_metrics(out)
    assert [int(r[0]) for r in rows] == list(range(6))      # 2 epochs x 3 batches
    assert [e["epoch"] for e in read_events(out) if e["event"] == "epoch"] == [1, 2]
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    ckpt = load_ckpt(out)
    assert ckpt["epoch"] == 2
    assert ckpt["config"]["batch_size"] == 32                # global batch: 16 per process
    for net in ("gen", "disc"):
        for k in w0[net]:
            assert torch.equal(ckpt[net][k], w0[net][k]), (net, k)

    # The checkpoint samples in a single process.
    gen, cfg = load_generator(out)
    images = samples_of(gen, cfg["latent_dim"], 4, seed=0)
    assert images.shape == (4, 1, 28, 28)

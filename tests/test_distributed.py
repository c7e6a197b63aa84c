"""torchrun with 2 CPU processes and the gloo backend: the run finishes, every
rank ends with the same weights, only rank 0 writes outputs, and the checkpoint
loads in a single process and resumes under torchrun. A worker killed mid-run
is restarted by torchrun and the run continues from its checkpoint to the same
losses; two torchrun launchers ("nodes") meet at a c10d rendezvous endpoint."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from helper_checkpoint import load_generator
from models import samples_of

from conftest import ROOT, load_ckpt, make_faces, read_events, read_metrics

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this PyTorch build has no torch.distributed")

# Runs a training script (the MNIST one unless told), then saves each rank's final
# weights so the test can compare them.
LAUNCHER = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {root!r})
    import helper_cli
    import {script} as train_script
    train = helper_cli.train_gan

    def train_and_keep_weights(state, loader, cfg, run_dir, *args, **kwargs):
        status = train(state, loader, cfg, run_dir, *args, **kwargs)
        rank = torch.distributed.get_rank()
        torch.save({{"gen": state.gen.state_dict(), "disc": state.disc.state_dict()}},
                   f"{{run_dir}}/../rank{{rank}}.pt")
        return status

    helper_cli.train_gan = train_and_keep_weights
    train_script.main(sys.argv[1:])
""")

# Rank 1 of the first start kills itself (SIGKILL, as the OOM killer would) at
# the second batch of epoch 2: its first batch synchronised the ranks, so rank 0
# had saved epoch 1's checkpoint. Ranks above 0 log every file they open for
# writing in the run folder (there should be none).
KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import helper_train, train_mnist_gan
    step, rank = helper_train.gan_step, int(os.environ["RANK"])
    first_start = os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"

    def gan_step(state, *args):
        if rank == 1 and first_start and state.epoch == 1 and state.batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(state, *args)

    def log_writes(event, args):
        writing = event == "open" and args[1] is not None and any(c in args[1] for c in "wax+")
        writing |= event == "open" and args[1] is None and args[2] & (os.O_WRONLY | os.O_RDWR)
        if writing and str(args[0]).startswith({out!r}):
            with open({writes!r}, "a") as f:
                f.write(f"{{rank}} {{args[0]}}\\n")

    helper_train.gan_step = gan_step
    if rank > 0:
        sys.addaudithook(log_writes)
    train_mnist_gan.main(sys.argv[1:])
""")


def torchrun(script, argv, tmp_path, launch=("--standalone", "--nproc-per-node", "2"), timeout=240):
    """Runs torchrun to the end; past `timeout` seconds (a hang) it and its
    workers are killed and the test fails."""
    proc = start_torchrun(script, argv, tmp_path, launch)
    return finish(proc, timeout)


def start_torchrun(script, argv, tmp_path, launch):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, str(script), *map(str, argv)]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # torchrun and its workers: nothing left hanging
        out, err = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_torchrun_two_processes_gloo(mnist_root, tmp_path):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(root=str(ROOT), script="train_mnist_gan"))
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


def test_torchrun_trains_a_conditional_dcgan_with_its_labels_sharded(tmp_path):
    """--conditional under torchrun on a class folder (each shard's labels are
    checked in test_conditional): DDP takes the labels through both networks, and
    both ranks end with the same parameters, the generator's per-class BatchNorm
    scales and shifts and D's projection included."""
    data = tmp_path / "data"
    for k, name in enumerate(("ant", "bee", "cow")):
        make_faces(data / name, 8, size=(24, 24), seed=k)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(root=str(ROOT), script="train_celeba_dcgan"))
    out = tmp_path / "run"
    argv = ["--dataset", "folder", "--data-dir", data, "--out", out, "--cache-dir", tmp_path / "cache",
            "--image-size", 8, "--g-features", 4, "--d-features", 4, "--conditional", "--batch-size", 8,
            "--epochs", 2, "--num-workers", 0, "--device", "cpu", "--log-every", 1]
    done = torchrun(script, argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert {"net.1.scale.weight", "net.1.shift.weight"} <= set(w0["gen"]) and "project.embed.weight" in w0["disc"]
    for net in ("gen", "disc"):   # BatchNorm's running statistics are each rank's own (rank 0's are saved)
        for k in (k for k in w0[net] if "running" not in k and "num_batches" not in k):
            assert torch.equal(w0[net][k], w1[net][k]), (net, k)
    cfg = load_ckpt(out)["config"]
    assert cfg["classes"] == ["ant", "bee", "cow"] and cfg["class_input"] == "cbn"
    _, rows = read_metrics(out)
    assert len(rows) == 2 * 3                                # 24 images, global batch 8, 2 epochs


def small_run(mnist_root, out):
    return ["--data-dir", mnist_root, "--out", out, "--batch-size", 32, "--max-batches", 3,
            "--num-workers", 0, "--device", "cpu", "--log-every", 2]


def test_a_killed_worker_is_restarted_and_the_run_resumes_to_the_same_losses(mnist_root, tmp_path):
    argv = [*small_run(mnist_root, tmp_path / "run"), "--epochs", 3]
    writes = tmp_path / "writes.txt"
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=str(ROOT), out=str(tmp_path / "run"), writes=str(writes)))
    done = torchrun(script, [*argv, "--overwrite"],   # --overwrite: a restart resumes all the same
                    tmp_path, ("--standalone", "--nproc-per-node", "2", "--max-restarts", "1"), timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exitcode: -9" in done.stderr                    # rank 1 was killed ...
    assert "torchrun restarted the workers (restart 1): resuming" in done.stdout   # ... and the run went on
    assert "resuming at epoch 2, batch 0" in done.stdout
    assert not writes.exists(), writes.read_text()

    plain = tmp_path / "plain.py"                           # the same run, never interrupted
    plain.write_text(KILLER.format(root=str(ROOT), out="/nonexistent", writes=str(writes)).replace(
        "first_start and", "False and"))
    done = torchrun(plain, [*small_run(mnist_root, tmp_path / "plain"), "--epochs", 3], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _, rows = read_metrics(tmp_path / "run")
    _, expected = read_metrics(tmp_path / "plain")
    assert len(rows) == 9 and rows == expected               # every batch's losses, to the last digit
    assert [e["epoch"] for e in read_events(tmp_path / "run") if e["event"] == "epoch"] == [1, 2, 3]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_nodes_meet_at_a_c10d_endpoint_and_only_rank_0_writes(mnist_root, tmp_path):
    """Two torchrun launchers with one process each, as two machines would run
    them (there with the first machine's host name instead of localhost)."""
    out, writes = tmp_path / "run", tmp_path / "writes.txt"
    script = tmp_path / "node.py"
    script.write_text(KILLER.format(root=str(ROOT), out=str(out), writes=str(writes)).replace(
        "first_start and", "False and"))

    def two_nodes(*extra):
        port = free_port()
        launches = [start_torchrun(script, [*small_run(mnist_root, out), *extra], tmp_path,
                                   ("--nnodes", "2", "--node-rank", str(node), "--rdzv-backend", "c10d",
                                    "--rdzv-endpoint", f"localhost:{port}", "--nproc-per-node", "1"))
                    for node in (0, 1)]
        return [finish(p, 150) for p in launches]

    for node in two_nodes("--epochs", 1):
        assert node.returncode == 0, node.stderr[-3000:]
    ends = two_nodes("--epochs", 2, "--resume")
    for node in ends:
        assert node.returncode == 0, node.stderr[-3000:]
    assert "resuming at epoch 2, batch 0" in ends[0].stdout + ends[1].stdout
    assert "2 processes" in ends[0].stdout + ends[1].stdout
    _, rows = read_metrics(out)
    assert [int(r[0]) for r in rows] == list(range(6))       # 2 epochs x 3 batches, written once
    assert [e["epoch"] for e in read_events(out) if e["event"] == "epoch"] == [1, 2]
    assert load_ckpt(out)["epoch"] == 2
    assert not writes.exists(), writes.read_text()


def test_a_restarted_group_agrees_on_a_namespace_no_dead_group_used(tmp_path):
    """What torchrun's agent keeps between restarts: one store, still holding
    the dead group's keys (a hello from its rank 1, rank 0's reply to it). The
    new ranks, started in either order, agree on one new namespace."""
    import threading
    from datetime import timedelta

    import helper_dist

    port = free_port()
    server = torch.distributed.TCPStore("localhost", port, None, True, timeout=timedelta(seconds=20))
    server.set("gan/hello/1", "dead-token")
    server.set("gan/reply/dead-token", "gan/group-dead")
    server.set("gan/hello/2", "dead-token-2")
    got = {}

    def rank(r, delay):
        time.sleep(delay)
        store = torch.distributed.TCPStore("localhost", port, None, False, timeout=timedelta(seconds=20))
        got[r] = helper_dist.fresh_namespace(store, r, 3, timeout=20)

    threads = [threading.Thread(target=rank, args=(r, delay)) for r, delay in ((0, 0.0), (1, 0.3), (2, 0.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 3 and len(set(got.values())) == 1, got
    assert got[0] != "gan/group-dead" and got[0].startswith("gan/group-")

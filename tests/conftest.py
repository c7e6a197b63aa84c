"""Shared fixtures: a fake MNIST in torchvision's layout, tiny CelebA folders in
the three accepted layouts, tiny training runs, and helpers to call the scripts'
main(argv) in-process. Everything is written under pytest's tmp_path."""
import csv
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A shared 2-core machine: one intra-op thread keeps the in-process runs light.
torch.set_num_threads(1)

# The user's cache (~/.cache/gan-lecture) is never written by the tests: what a test
# caches there (a classifier trained for a few steps on fake digits) is not a user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="gan-tests-cache-")

N_MNIST = 192  # 12 batches of 16


# ---------------------------------------------------------------- fake MNIST (IDX files)

def write_idx(path, array):
    """uint8 array N (labels) or N x rows x cols (images) as an IDX file:
    big-endian magic 2049 / 2051, the sizes, then the raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 3:
        header = struct.pack(">IIII", 2051, *array.shape)
    elif array.ndim == 1:
        header = struct.pack(">II", 2049, array.shape[0])
    else:
        raise ValueError(array.shape)
    Path(path).write_bytes(header + array.tobytes())


def make_mnist(root, n_train=N_MNIST, n_test=16, seed=0):
    """root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with random
    digits-sized images. Returns the train images (N x 28 x 28 uint8)."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", test)
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test, dtype=np.uint8))
    return train


# ---------------------------------------------------------------- fake CelebA (JPEG folders)

def face_image(seed, size=(178, 218)):
    """A smooth random RGB picture (JPEG-friendly), width x height = size."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR)


def make_faces(folder, n, size=(178, 218), start=1, seed=0):
    """n JPEGs named like CelebA's (000001.jpg, ...) in folder. Returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"{i:06d}.jpg"
        face_image(seed * 100003 + i, size).save(p, quality=92)
        paths.append(p)
    return paths


def image_folder(root, layout):
    """Where the images go in each accepted layout."""
    root = Path(root)
    return {"torchvision": root / "celeba" / "img_align_celeba",
            "folder": root / "img_align_celeba",
            "flat": root}[layout]


def make_celeba(root, layout="torchvision", n=6, size=(178, 218), partition=None, seed=0):
    """A tiny CelebA in one of the three layouts. partition: list of split ids
    (0 train, 1 valid, 2 test), one per image, written as list_eval_partition.txt
    beside the image folder. Returns the image paths."""
    folder = image_folder(root, layout)
    paths = make_faces(folder, n, size, seed=seed)
    if partition is not None:
        lines = [f"{p.name} {s}" for p, s in zip(paths, partition)]
        (folder.parent / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return paths


# ---------------------------------------------------------------- running the scripts in-process

def run_main(main, argv, capsys=None):
    """Call a script's main(argv); returns (exit code, stdout, stderr).
    stdout/stderr are only collected when capsys is given."""
    if capsys is not None:
        capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):   # sys.exit("message") prints it to stderr
            print(e.code, file=sys.stderr)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def mnist_argv(data, out, *extra, epochs=2):
    return ["--data-dir", data, "--out", out, "--epochs", epochs, "--batch-size", 16,
            "--max-batches", 3, "--num-workers", 0, "--device", "cpu", *extra]


def dcgan_argv(data, out, cache, *extra, epochs=2):
    return ["--data-dir", data, "--out", out, "--epochs", epochs, "--g-features", 8,
            "--d-features", 8, "--batch-size", 8, "--max-batches", 2, "--num-workers", 0,
            "--cache-dir", cache, "--device", "cpu", *extra]


def ten_seconds_per_step(monkeypatch):
    """The training loop's clock, made to advance 10 s per gan_step: --time-budget
    runs out at a known step."""
    import types
    import helper_train
    now, step = [1000.0], helper_train.gan_step

    def timed_step(*args):
        out = step(*args)
        now[0] += 10.0
        return out
    monkeypatch.setattr(helper_train, "gan_step", timed_step)
    monkeypatch.setattr(helper_train, "time", types.SimpleNamespace(time=lambda: now[0]))


def read_metrics(run_dir):
    """metrics.csv as (header, rows of strings)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def metric_values(run_dir):
    """The numeric columns of metrics.csv as a float tensor (rows x columns)."""
    _, rows = read_metrics(run_dir)
    return torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)


def read_events(run_dir):
    path = Path(run_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_ckpt(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)


def assert_state_dicts_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def png_array(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def send_sigint():
    """A real Ctrl-C: SIGINT to this process, then a few bytecodes so Python's
    handler (or the code's own) runs here and not later."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        pass


# ---------------------------------------------------------------- shared data fixtures

@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist_data")
    make_mnist(root)
    return root


@pytest.fixture(scope="session")
def mnist_images(mnist_root):
    """The train images of the fake MNIST (N x 28 x 28 uint8), read back from the IDX bytes."""
    data = (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    assert (magic, n, rows, cols) == (2051, N_MNIST, 28, 28)
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, rows, cols)


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory):
    """torchvision's layout at half resolution (89 x 109), with a partition file:
    16 train images and 4 valid/test images that must not be used."""
    root = tmp_path_factory.mktemp("celeba_data")
    make_celeba(root, "torchvision", n=20, size=(89, 109), partition=[0] * 16 + [1, 1, 2, 2])
    return root


@pytest.fixture(scope="session")
def mnist_run(mnist_root, tmp_path_factory):
    """A finished 2-epoch MNIST run (3 batches of 16 per epoch). Read it, never write to it."""
    import train_mnist_gan
    out = tmp_path_factory.mktemp("mnist_run") / "run"
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=2))
    assert code == 0
    return out


@pytest.fixture
def run_copy(mnist_run, tmp_path):
    """A private copy of the finished 2-epoch MNIST run, free to damage."""
    shutil.copytree(mnist_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="session")
def mnist_reference(mnist_root, tmp_path_factory):
    """An uninterrupted 3-epoch MNIST run to compare resumed runs against."""
    import train_mnist_gan
    out = tmp_path_factory.mktemp("mnist_ref") / "run"
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=3))
    assert code == 0
    return out


# ---------------------------------------------------------------- more data sets: the MNIST family, CIFAR-10

def make_idx_set(root, folder="MNIST", n_train=40, n_test=8, seed=0, gz=False):
    """root/FOLDER/raw/ with the four IDX files (FOLDER: MNIST, FashionMNIST or
    KMNIST), gzip-compressed (name.gz only) with gz=True.
    Returns the train images (N x 28 x 28 uint8) and labels (N uint8)."""
    import gzip
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, array in arrays.items():
        write_idx(raw / name, array)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
            (raw / name).unlink()
    return arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]


def _py2_str(b):
    """A Python 2 str in a pickle: SHORT_BINSTRING or BINSTRING."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def py2_batch_pickle(data, labels):
    """A CIFAR-10 batch as the official files hold it: a protocol 2 pickle
    written by Python 2 (str keys, numpy.core.multiarray._reconstruct), here
    assembled opcode by opcode. data: N x 3072 uint8; labels: N ints < 256."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b")
             + b"\x87R(K\x01J" + struct.pack("<i", data.shape[0]) + b"M\x00\x0c\x86"
             + b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
             + b"\x89" + _py2_str(data.tobytes()) + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"batch_label") + _py2_str(b"training batch")
            + _py2_str(b"data") + array + _py2_str(b"labels") + label_list + b"u.")


def make_cifar10(root, n=3, seed=0):
    """root/cifar-10-batches-py/ with data_batch_1..5 (n images each) and
    test_batch (n images), in the official files' format. Returns the train
    images as a 5n x 3 x 32 x 32 uint8 array."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (folder / name).write_bytes(py2_batch_pickle(data, rng.integers(0, 10, n)))
        if name != "test_batch":
            train.append(data)
    return np.concatenate(train).reshape(-1, 3, 32, 32)


# ---------------------------------------------------------------- a training subprocess, paused

# Runs the MNIST script with a pause before global step `pause` until the file `go`
# appears (never, for the lock test), after writing the file `ready`; `extra`:
# more code to run first (more patches).
LAUNCHER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    import helper_train, train_mnist_gan
    step = helper_train.gan_step

    def paused_step(s, *args):
        if s.step == {pause}:
            open({ready!r}, "w").close()
            while not os.path.exists({go!r}):
                time.sleep(0.02)
        return step(s, *args)

    helper_train.gan_step = paused_step
    {extra}
    train_mnist_gan.main(sys.argv[1:])
""")


@pytest.fixture
def paused_run(tmp_path):
    """start(argv): a training subprocess paused before global step `pause`
    (default 4: epoch 2, batch 2, where epoch 1's checkpoint is written); it
    holds the run's lock. Returns (process, the file that lets it go on).
    Killed at teardown if still there."""
    procs = []

    def start(argv, pause=4, extra=""):
        ready, go = tmp_path / "ready", tmp_path / "go"
        script = tmp_path / "launch.py"
        script.write_text(LAUNCHER.format(root=str(ROOT), pause=pause, ready=str(ready), go=str(go),
                                          extra=extra))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, argv)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.time() + 120
        while not ready.exists():
            assert procs[-1].poll() is None, procs[-1].communicate()[1][-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        return procs[-1], go
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

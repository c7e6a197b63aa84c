"""Issue 22: the last bad cases of a 225-case probe. Each ends in one clear
line (or the right behaviour) with nothing lost: signals while data loads or a
checkpoint is saved, torn metrics files, foreign checkpoints that name folders,
odd files among the images, names too long, a file in the way, unbounded
sample sets."""
import errno
import html
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import ablate
import evaluate
import generate
import helper_data
import helper_health
import helper_plot
import train_celeba_dcgan
import train_mnist_gan
from conftest import ROOT, dcgan_argv, load_ckpt, make_faces, mnist_argv, read_events, run_main
from test_safety import assert_one_line, full_disk_at, snapshot

MNIST, CELEBA = train_mnist_gan.main, train_celeba_dcgan.main

# Runs the CelebA script with image decoding slowed down (workers are forked, so
# they decode slowly too); the first decoded image writes the file `ready`.
SLOW_DECODE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import helper_data, train_celeba_dcgan
    load = helper_data.load_face

    def slow_load(*args):
        open({ready!r}, "w").close()
        time.sleep(0.3)
        return load(*args)

    helper_data.load_face = slow_load
    train_celeba_dcgan.main(sys.argv[1:])
""")


def start_slow_cache_build(tmp_path, argv):
    """A training subprocess, in its own process group (a terminal's Ctrl-C goes
    to the whole group), once it is decoding images into the cache."""
    ready = tmp_path / "ready"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_DECODE.format(root=str(ROOT), ready=str(ready)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, str(script), *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)   # inside the pool's work
    return proc


def finish(proc, timeout=60):
    """(exit code, stderr); a process still there after `timeout` is killed and fails the test."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process hung")
    return proc.returncode, err


# ---------------------------------------------------------------- 2, 3: signals before the first checkpoint

@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_signal_during_the_cache_build_is_one_line(how, celeba_root, tmp_path, capsys):
    """Ctrl-C reaches the pool's workers too (the whole process group); SIGTERM
    only the main process. Either way: one line, no worker tracebacks, no hang,
    and the same command then starts the run."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = dcgan_argv(celeba_root, out, cache, "--num-workers", 2, epochs=1)
    proc = start_slow_cache_build(tmp_path, argv)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert "ForkPoolWorker" not in err
    assert_one_line(code, err, 130, "run the same command again to start")
    assert not list(cache.glob("*.tmp*"))
    assert run_main(CELEBA, argv, capsys)[0] == 0 and load_ckpt(out)["epoch"] == 1


def test_a_run_killed_before_its_first_checkpoint_starts_again(mnist_root, paused_run, tmp_path, capsys):
    out = tmp_path / "run"
    argv = mnist_argv(mnist_root, out, epochs=1)
    proc, _ = paused_run(argv, pause=1)
    proc.kill()                                       # SIGKILL in epoch 1: config.json, metrics.csv, no checkpoint
    proc.communicate()
    assert (out / "config.json").is_file() and not (out / "checkpoint.pt").exists()
    code, stdout, _ = run_main(MNIST, argv, capsys)
    assert code == 0 and "stopped before its first checkpoint: starting it again" in stdout
    assert load_ckpt(out)["epoch"] == 1
    assert [r.split(",")[0] for r in (out / "metrics.csv").read_text().split()[1:]] == ["0", "1", "2"]


# ---------------------------------------------------------------- 4: a torn last line in metrics.csv

def test_a_torn_last_metrics_row_is_skipped_and_dropped_on_resume(run_copy, capsys):
    rows = (run_copy / "metrics.csv").read_text().splitlines()
    with open(run_copy / "metrics.csv", "a") as f:
        f.write("3")                                   # a row cut short after one digit: step 3 < 6
    for main in (helper_plot.main, helper_health.main):
        assert run_main(main, [run_copy], capsys)[0] == 0
    code, _, err = run_main(MNIST, ["--resume", "--out", run_copy, "--epochs", 3], capsys)
    assert code == 0, err
    steps = [line.split(",")[0] for line in (run_copy / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(9)] and (run_copy / "metrics.csv").read_text().startswith(rows[0])
    assert run_main(MNIST, ["--resume", "--out", run_copy, "--epochs", 4], capsys)[0] == 0


# ---------------------------------------------------------------- 5: a checkpoint from someone else names folders

def test_a_foreign_checkpoint_chooses_no_folders(run_copy, mnist_root, tmp_path, monkeypatch, capsys):
    """Its config names a cache folder deep in a place of its choosing: nothing is
    created there; the data folder read is named; caches go to the user's folder."""
    ckpt = load_ckpt(run_copy)
    theirs = tmp_path / "theirs" / "deep" / "cache"
    ckpt["config"] = {**ckpt["config"], "cache_dir": str(theirs), "data_dir": str(mnist_root)}
    torch.save(ckpt, run_copy / "checkpoint.pt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code, out, err = run_main(generate.main, [run_copy, "--nearest", 1, "--num", 2, "--out", tmp_path / "n.png"],
                              capsys)
    assert code == 0, err
    assert f"reading the mnist images from {mnist_root} (the run's own" in out
    assert not (tmp_path / "theirs").exists()
    assert list((tmp_path / "xdg" / "gan-lecture").glob("mnist_classifier_*.pt"))
    code, out, err = run_main(evaluate.main, [run_copy, "--num", 16], capsys)
    assert code == 0, err
    assert f"reading the mnist images from {mnist_root}" in out and not (tmp_path / "theirs").exists()
    own = tmp_path / "mine"
    assert run_main(evaluate.main, [run_copy, "--num", 16, "--cache-dir", own], capsys)[0] == 0
    assert list(own.glob("mnist_classifier_*.pt")) and not (tmp_path / "theirs").exists()


# ---------------------------------------------------------------- 6, 7: a broken link and a named pipe among the images

def odd_image_folder(tmp_path):
    """Six images, a link x.jpg to nowhere and a named pipe zz.png (opening it
    would wait forever for a writer)."""
    folder = tmp_path / "pictures"
    make_faces(folder, 6, size=(40, 40))
    (folder / "x.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(folder / "zz.png")
    return folder


def test_only_regular_files_are_images(tmp_path):
    folder = odd_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="not a regular file") as caught:
        files = helper_data.find_images(folder)
    assert [f.name for f in files] == [f"{i:06d}.jpg" for i in range(1, 7)]
    assert sorted(str(w.message).split(": ")[0].split("/")[-1] for w in caught) == ["x.jpg", "zz.png"]


def test_odd_files_among_the_images_are_skipped_in_training(tmp_path, capsys):
    folder = odd_image_folder(tmp_path)
    argv = dcgan_argv(folder, tmp_path / "run", tmp_path / "cache", "--dataset", "folder", epochs=1)
    with pytest.warns(UserWarning) as caught:
        code, _, err = run_main(CELEBA, argv, capsys)
    assert code == 0 and "Traceback" not in err
    skipped = [str(w.message) for w in caught if "not a regular file" in str(w.message)]
    assert sorted(m.split(": ")[0].split("/")[-1] for m in skipped) == ["x.jpg", "zz.png"]
    assert [p.name.split("_")[2] for p in (tmp_path / "cache").glob("faces_*.npy")] == ["6"]


# ---------------------------------------------------------------- 8: a second signal during the checkpoint save

# Once the file `go` exists, a checkpoint save writes part of its file, writes the
# file `saving` and waits. A signal then makes it fail as torch's zip writer does
# when interrupted mid-write (measured with a real save and a timer signal): a
# RuntimeError raised while handling the KeyboardInterrupt.
SLOW_SAVE = textwrap.dedent("""
    import torch
    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        if not os.path.exists({go!r}):
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        try:
            open({saving!r}, "w").close()
            time.sleep(60)
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5252480")

    torch.save = interrupted_save
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_the_save_quits_in_one_line(sig, mnist_root, paused_run, tmp_path):
    out, saving = tmp_path / "run", tmp_path / "saving"
    proc, go = paused_run(mnist_argv(mnist_root, out, epochs=3),
                          extra=SLOW_SAVE.format(go=str(tmp_path / "go"), saving=str(saving)))
    proc.send_signal(sig)                             # the first: finish the batch, then save
    time.sleep(0.2)
    go.touch()
    deadline = time.time() + 60
    while not saving.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)                             # the second, in the middle of that save
    code, err = finish(proc)
    lines = err.strip().splitlines()
    assert code == 130 and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("quit at once: the checkpoint of the last finished epoch is kept")
    assert load_ckpt(out)["epoch"] == 1 and not list(out.glob("*.tmp*"))
    assert [e["event"] for e in read_events(out)][-1] == "interrupted"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_double_signal_mid_batch_leaves_an_interrupted_event(sig, mnist_root, paused_run, tmp_path):
    """Two Ctrl-C (or SIGTERM) in one batch: out at once, and events.jsonl says so."""
    out = tmp_path / "run"
    proc, _ = paused_run(mnist_argv(mnist_root, out, epochs=3))    # paused in epoch 2, batch 2
    proc.send_signal(sig)
    time.sleep(0.5)                                    # the first one's handler has run
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("quit at once")
    last = read_events(out)[-1]
    assert (last["event"], last["epoch"], last["batch"]) == ("interrupted", 2, 1), last
    assert "quit at once" in last["message"]


# ---------------------------------------------------------------- 9: a name longer than the file system allows

@pytest.mark.parametrize("tool", ["train", "train, deeper", "generate", "evaluate --json"])
def test_a_name_too_long_is_one_line(tool, mnist_root, mnist_run, tmp_path, capsys):
    long = tmp_path / ("a" * 300)
    argv = {"train": (MNIST, mnist_argv(mnist_root, long)),
            "train, deeper": (MNIST, mnist_argv(mnist_root, long / "run")),
            "generate": (generate.main, [mnist_run, "--out", f"{long}.png"]),
            "evaluate --json": (evaluate.main, [mnist_run, "--json", f"{long}.json"])}[tool]
    assert_one_line(*run_main(*argv, capsys)[::2], 2, "File name too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 10: a file named tb in the run folder

def test_a_file_named_tb_is_one_line_and_overwrite_clears_it(mnist_root, run_copy, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    (run_copy / "tb").write_text("not a folder")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "tb").write_text("not a folder")
    for argv in (["--resume", "--out", run_copy, "--epochs", 3, "--tensorboard"],
                 mnist_argv(mnist_root, fresh, "--tensorboard")):
        before = snapshot(argv[argv.index("--out") + 1])
        assert_one_line(*run_main(MNIST, argv, capsys)[::2], 2, "tb is a file, where --tensorboard writes")
        assert snapshot(argv[argv.index("--out") + 1]) == before
    code, _, err = run_main(MNIST, mnist_argv(mnist_root, run_copy, "--tensorboard", "--overwrite", epochs=1),
                            capsys)
    assert code == 0, err
    assert (run_copy / "tb").is_dir() and load_ckpt(run_copy)["epoch"] == 1


# ---------------------------------------------------------------- 11: ablate.py --skip-training without the runs

def test_ablate_skip_training_without_runs_is_one_line(mnist_root, mnist_run, tmp_path, capsys):
    out = tmp_path / "ablation"
    argv = ["--skip-training", "--out", out, "--data-dir", mnist_root, "--variants", "lecture", "ema",
            "--seeds", 1]
    assert_one_line(*run_main(ablate.main, argv, capsys)[::2], 2, "2 of the 2 runs have no checkpoint")
    shutil.copytree(mnist_run, out / "lecture" / "seed1")
    shutil.copytree(mnist_run, out / "ema" / "seed1")
    (out / "ema" / "seed1" / "checkpoint.pt").write_bytes(b"damaged")
    assert_one_line(*run_main(ablate.main, argv, capsys)[::2], 1, "not a PyTorch checkpoint")


# ---------------------------------------------------------------- 12: a run folder named like a link scheme

def test_compare_links_are_paths_even_for_a_run_named_javascript(mnist_run, tmp_path, capsys):
    run = tmp_path / "javascript:alert(1)"
    shutil.copytree(mnist_run, run)
    assert run_main(helper_plot.main, ["compare", run, mnist_run, "--out", tmp_path], capsys)[0] == 0
    hrefs = re.findall(r'href="([^"]*)"', (tmp_path / "compare.html").read_text())
    assert len(hrefs) == 2 and all(h.startswith("./") for h in hrefs), hrefs
    assert (tmp_path / html.unescape(hrefs[0])).resolve() == (run / "report.html").resolve()


# ---------------------------------------------------------------- 13: more samples than can fit

def test_generate_refuses_samples_that_cannot_fit(mnist_run, tmp_path, capsys):
    code, _, err = run_main(generate.main, [mnist_run, "--num", 10**12, "--out", tmp_path / "x.pt"], capsys)
    assert_one_line(code, err, 1, "--num 1,000,000,000,000 samples need 3,536,000.0 GB, more than the")
    assert "lower --num" in err and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- also: a full disk names its file; final_grid.png whole

@pytest.mark.parametrize("target,call,name", [("checkpoint", 2, "checkpoint.pt"), ("plot", 1, ".png")])
def test_a_full_disk_names_the_file(target, call, name, mnist_root, tmp_path, monkeypatch, capsys):
    full_disk_at(monkeypatch, target, call)
    code, _, err = run_main(MNIST, mnist_argv(mnist_root, tmp_path / "run", epochs=3), capsys)
    line = assert_one_line(code, err, 1, "No space left on device: " + str(tmp_path / "run"))
    assert line.split(";")[0].endswith(name) and ".tmp" not in line, line


def test_final_grid_is_replaced_whole_or_not_at_all(run_copy, monkeypatch):
    before = (run_copy / "final_grid.png").read_bytes()

    def full_disk(src, dst):
        Path(dst).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="final_grid.png"):
        helper_plot.plot_run(run_copy)
    assert (run_copy / "final_grid.png").read_bytes() == before and not list(run_copy.glob("*.tmp*"))

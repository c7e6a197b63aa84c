"""Issue 8: run folders that cannot be corrupted, and one clear line for every
bad input. Tables of refusals (argv, exit code, a phrase of the one line, what
must stay untouched), then the cases that need their own set-up: two processes
on one run folder, SIGTERM, a full disk, resuming from elsewhere, divergence
advice that can be followed."""
import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import matplotlib.figure
import pytest
import torch

import evaluate
import generate
import helper_checkpoint
import helper_cli
import helper_files
import helper_health
import helper_plot
import helper_train
import models
import train_celeba_dcgan
import train_mnist_gan
from conftest import dcgan_argv, load_ckpt, metric_values, mnist_argv, read_events, run_main
from helper_files import RunError, RunLock

MNIST, CELEBA = train_mnist_gan.main, train_celeba_dcgan.main


def assert_one_line(code, err, expected_code, phrase):
    """Exit code, no traceback, one line on stderr holding `phrase` (after
    argparse's usage lines, where it refused a flag)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert code == expected_code, err
    assert "Traceback" not in err and "\x1b[" not in err and len(lines) == 1, err
    assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def snapshot(folder):
    """Every file under folder with a hash of its bytes ({} when it does not exist)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def celeba_run(celeba_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("celeba_run")
    code, _, _ = run_main(CELEBA, dcgan_argv(celeba_root, base / "run", base / "cache", epochs=1))
    assert code == 0
    return base / "run"


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nobody may write to. chmod does not stop root, so for root the
    calls that write there fail as on a read-only filesystem instead."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open, real_access = os.open, os.access

        def inside(path):
            return Path(os.path.abspath(path)).is_relative_to(folder)

        def fake_open(path, flags, *args, **kwargs):
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
            False if inside(p) and mode & os.W_OK else real_access(p, mode, **kw)))
    yield folder
    folder.chmod(0o755)


# ---------------------------------------------------------------- bad flags and --out: nothing written

# (case, script, extra argv, --out relative to tmp_path, exit code, phrase); the data flags are added.
FLAG_CASES = [
    ("g-features 0", "celeba", ["--g-features", 0], "run", 2, "--g-features must be a positive integer"),
    ("d-features -2", "celeba", ["--d-features", -2], "run", 2, "--d-features"),
    ("image size 2048", "celeba", ["--image-size", 2048], "run", 2, "--image-size"),
    ("huge networks", "mnist", ["--g-hidden", "100000,100000"], "run", 2, "parameters"),
    ("device tpu", "mnist", ["--device", "tpu"], "run", 2, "--device"),
    ("device mps", "mnist", ["--device", "mps"], "run", 2, "only cpu and cuda"),
    ("device meta", "mnist", ["--device", "meta"], "run", 2, "only cpu and cuda"),
    ("lr-gen inf", "mnist", ["--lr-gen", "inf"], "run", 2, "--lr-gen must be a finite number"),
    ("out is a file", "mnist", [], "file", 2, "is a file, not a folder"),
    ("out under a file", "mnist", [], "file/run", 2, "cannot create run folder"),
]


@pytest.mark.parametrize("case,script,extra,out,code,phrase", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_bad_input_leaves_no_run_folder(case, script, extra, out, code, phrase, mnist_root, celeba_root,
                                        tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / out
    argv = (mnist_argv(mnist_root, out, *extra) if script == "mnist"
            else dcgan_argv(celeba_root, out, tmp_path / "cache", *extra))
    assert_one_line(*run_main({"mnist": MNIST, "celeba": CELEBA}[script], argv, capsys)[::2], code, phrase)
    assert not (tmp_path / "run").exists() and (tmp_path / "file").read_text() == "a file, not a folder"


def test_out_in_a_read_only_folder(mnist_root, read_only, capsys):
    for out in (read_only, read_only / "run"):
        code, _, err = run_main(MNIST, mnist_argv(mnist_root, out), capsys)
        assert_one_line(code, err, 2, str(read_only))
    assert snapshot(read_only) == {} and not (read_only / "run").exists()


def test_bad_data_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "run"      # the lock created all three: all three go again
    code, _, err = run_main(CELEBA, dcgan_argv(tmp_path / "nowhere", out, tmp_path / "cache"), capsys)
    assert_one_line(code, err, 2, "nowhere")
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------- --resume refused: the run untouched

RESUME_CASES = [   # (case, script, run folder, phrase)
    ("celeba run, mnist script", MNIST, "celeba", "resume it with train_celeba_dcgan.py"),
    ("mnist run, celeba script", CELEBA, "mnist", "resume it with train_mnist_gan.py"),
    ("no checkpoint", MNIST, "empty", "no checkpoint"),
]


@pytest.mark.parametrize("case,script,which,phrase", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_refusals_touch_nothing(case, script, which, phrase, run_copy, celeba_run, tmp_path, capsys):
    run = {"mnist": run_copy, "celeba": tmp_path / "celeba", "empty": tmp_path / "empty"}[which]
    if which == "celeba":
        shutil.copytree(celeba_run, run)
    run.mkdir(exist_ok=True)
    before = snapshot(run)
    code, _, err = run_main(script, ["--resume", "--out", run, "--epochs", 5], capsys)
    assert_one_line(code, err, 2, phrase)
    assert snapshot(run) == before


def test_resume_below_the_epochs_done_says_so(run_copy, capsys):
    before = snapshot(run_copy)
    code, out, err = run_main(MNIST, ["--resume", "--out", run_copy, "--epochs", 1], capsys)
    assert code == 0 and not err
    assert "has finished epoch 2 already" in out and "--epochs above 2" in out
    assert snapshot(run_copy) == before


def test_resume_accepts_the_checkpoint_file_as_out(run_copy, capsys):
    code, out, _ = run_main(MNIST, ["--resume", "--out", run_copy / "checkpoint.pt", "--epochs", 3], capsys)
    assert code == 0 and "resuming at epoch 3" in out
    assert load_ckpt(run_copy)["epoch"] == 3 and (run_copy / "grids" / "epoch_003.png").is_file()


def test_paths_are_stored_absolute_and_resume_works_from_elsewhere(mnist_root, tmp_path, monkeypatch):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    argv = mnist_argv(os.path.relpath(mnist_root), "run", "--cache-dir", "cache", epochs=1)
    assert run_main(MNIST, argv)[0] == 0
    cfg = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert cfg["data_dir"] == str(mnist_root) and cfg["out"] == str(tmp_path / "a" / "run")
    assert cfg["cache_dir"] == str(tmp_path / "a" / "cache")
    assert load_ckpt(tmp_path / "a" / "run")["config"]["data_dir"] == str(mnist_root)
    monkeypatch.chdir(tmp_path / "b")
    assert run_main(MNIST, ["--resume", "--out", "../a/run", "--epochs", 2])[0] == 0
    assert load_ckpt(tmp_path / "a" / "run")["epoch"] == 2 and not (tmp_path / "b" / "run").exists()


# ---------------------------------------------------------------- malformed checkpoints

def _set(path, value):
    """A change to a checkpoint: `value` at the nested key path (None: delete it)."""
    def change(ckpt):
        *parents, last = path
        for key in parents:
            ckpt = ckpt[key]
        if value is None:
            del ckpt[last]
        else:
            ckpt[last] = value(ckpt[last]) if callable(value) else value
    return change


# (case, change, phrase, refused by generate/evaluate too: they only read the config and G's weights)
CKPT_CASES = [
    ("wrong shape", _set(["gen", "net.0.weight"], torch.zeros(3, 3)), "need float32 (128, 100)", True),
    ("wrong dtype", _set(["gen", "net.0.weight"], lambda t: t.double()), "float64", True),
    ("missing key", _set(["gen", "net.0.bias"], None), "lacks 'net.0.bias'", True),
    ("unknown key", _set(["gen", "extra"], torch.zeros(1)), "unknown 'extra'", True),
    ("weights not tensors", _set(["gen"], [1, 2]), "gen is not a set of tensors", True),
    ("unknown model", _set(["config", "model"], "resnet"), "model must be fc or dcgan", True),
    ("wrong type", _set(["config", "latent_dim"], "100"), "--latent-dim must be a positive integer", True),
    ("config missing a key", _set(["config", "g_hidden"], None), "no 'g_hidden'", True),
    ("no config", _set(["config"], 5), "holds no config", True),
    ("other image shape", _set(["config", "img_shape"], [3, 64, 64]), "needs img_shape [1, 28, 28]", True),
    ("huge config", _set(["config", "g_hidden"], [10**6] * 3), "parameters", True),
    ("deep config", _set(["config", "d_hidden"], [1] * 1000), "--d-hidden must be 1 to 64", True),
    ("optimizer shapes", _set(["opt_g", "state", 0, "exp_avg"], torch.zeros(2)), "opt_g holds a state",
     False),
    ("optimizer groups", _set(["opt_d", "param_groups"], []), "opt_d is not the state", False),
    ("position", _set(["epoch"], "two"), "epoch is not a count", False),
    ("fixed noise", _set(["fixed_noise"], torch.zeros(64, 3)), "fixed_noise", False),
    ("rng state", _set(["rng", "torch"], torch.zeros(3, dtype=torch.uint8)), "random number generator",
     False),
    ("scaler", _set(["scaler"], {"scale": "big"}), "scaler", False),
]


@pytest.mark.parametrize("case,change,phrase,for_sampling", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_malformed_checkpoints_are_refused_in_one_line(case, change, phrase, for_sampling, run_copy,
                                                       tmp_path, capsys):
    ckpt = load_ckpt(run_copy)
    change(ckpt)
    torch.save(ckpt, run_copy / "checkpoint.pt")
    before, start = snapshot(run_copy), time.time()
    code, _, err = run_main(MNIST, ["--resume", "--out", run_copy, "--epochs", 3], capsys)
    assert_one_line(code, err, 2, phrase)
    assert snapshot(run_copy) == before            # config.json, reals.png, ... not rewritten
    assert time.time() - start < 20                 # refused before building anything big
    code, _, err = run_main(generate.main, [run_copy, "--out", tmp_path / "x.pt"], capsys)
    if not for_sampling:                            # sampling needs only the config and G's weights
        assert code == 0 and (tmp_path / "x.pt").is_file()
        return
    assert_one_line(code, err, 2, phrase)          # bad input, as in training
    assert_one_line(*run_main(evaluate.main, [run_copy, "--num", 10], capsys)[::2], 2, phrase)
    assert not (tmp_path / "x.pt").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_pickle_refusal_does_not_advise_the_unsafe_way(run_copy, capsys):
    torch.save({"format": helper_checkpoint.CKPT_FORMAT, "config": _Payload()}, run_copy / "checkpoint.pt")
    code, _, err = run_main(MNIST, ["--resume", "--out", run_copy], capsys)
    line = assert_one_line(code, err, 2, "not loaded (it could run code)")
    assert "weights_only" not in line and "likely succeed" not in line and "system" in line


# ---------------------------------------------------------------- generate, evaluate, helper_plot, helper_health

TOOL_CASES = [   # (case, main, argv with RUN / TMP / RO placeholders, exit code, phrase)
    ("out is a folder", generate.main, ["RUN", "--out", "TMP/dir.png"], 2, "is a folder"),
    ("out read-only", generate.main, ["RUN", "--out", "RO/x.png"], 2, "cannot write"),
    ("out under a file", generate.main, ["RUN", "--out", "TMP/file/x.png"], 2, "file, not a folder"),
    ("nrow 0", generate.main, ["RUN", "--nrow", 0, "--out", "TMP/x.png"], 2, "--nrow must be >= 1"),
    ("num -3", generate.main, ["RUN", "--num", -3, "--out", "TMP/x.png"], 2, "--num must be >= 1"),
    ("grid too big", generate.main, ["RUN", "--num", 2000, "--out", "TMP/x.png"], 2, "at most 1024"),
    ("evaluate num 0", evaluate.main, ["RUN", "--num", 0], 2, "--num must be from 4 to 50000"),
    ("evaluate json folder", evaluate.main, ["RUN", "--json", "TMP/dir.png"], 2, "is a folder"),
    ("evaluate json read-only", evaluate.main, ["RUN", "--json", "RO/s.json"], 2, "cannot write"),
    ("plot: not a run", helper_plot.main, ["TMP/dir.png"], 2, "not a run folder"),
    ("plot: mistyped", helper_plot.main, ["TMP/nope"], 2, "not a run folder"),
    ("health: not a run", helper_health.main, ["TMP/dir.png"], 2, "not a run folder"),
    ("health: two folders", helper_health.main, ["RUN", "RUN"], 2, "unrecognized arguments"),
]


@pytest.mark.parametrize("case,main,argv,code,phrase", TOOL_CASES, ids=[c[0] for c in TOOL_CASES])
def test_tool_refusals(case, main, argv, code, phrase, mnist_run, read_only, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "Reference", None)   # refused before evaluating: never reached
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "file").write_text("")
    places = {"RUN": str(mnist_run), "TMP": str(tmp_path), "RO": str(read_only)}
    argv = [str(a) for a in argv]
    for key, value in places.items():
        argv = [a.replace(key, value) if a.startswith(key) else a for a in argv]
    before = snapshot(tmp_path)
    assert_one_line(*run_main(main, argv, capsys)[::2], code, phrase)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("main", [helper_plot.main, helper_health.main])
def test_run_folder_tools_have_help(main, capsys):
    code, out, _ = run_main(main, ["--help"], capsys)
    assert code == 0 and out.startswith("usage:")


def test_generate_many_samples_in_batches(mnist_run, tmp_path, capsys):
    code, _, _ = run_main(generate.main, [mnist_run, "--num", 2100, "--out", tmp_path / "a" / "x.pt"], capsys)
    assert code == 0
    gen, _ = helper_checkpoint.load_generator(mnist_run)
    x = torch.load(tmp_path / "a" / "x.pt", weights_only=True)
    noise = torch.randn(2100, 100, generator=torch.Generator().manual_seed(0))   # --seed 0
    with torch.no_grad():
        assert torch.allclose(x, gen(noise), atol=1e-6)   # G in eval mode, all at once
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.pt"]   # no temporary file left


def test_evaluate_json_folder_is_made_before_evaluating(mnist_run, tmp_path, monkeypatch, capsys):
    class Reference:   # a stand-in: the real one needs MNIST and a trained classifier
        def __init__(self, cfg, num, seed):
            assert (tmp_path / "a" / "b").is_dir()
            self.num = num

        def scores(self, samples):
            assert len(samples) == self.num
            return {"fid": float("nan")}

        def of_generator(self, gen, cfg, num, seed=0):
            return self.scores(models.samples_of(gen, cfg["latent_dim"], num, seed))

        def floor(self):
            return {"fid": 0.5}
    monkeypatch.setattr(evaluate, "Reference", Reference)
    code, _, _ = run_main(evaluate.main, [mnist_run, "--num", 8, "--json", tmp_path / "a" / "b" / "s.json"],
                          capsys)
    assert code == 0
    saved = json.loads((tmp_path / "a" / "b" / "s.json").read_text(), parse_constant=pytest.fail)
    assert saved["samples"] == {"fid": None} and saved["num"] == 8


def test_nan_in_events_is_written_as_null(tmp_path):
    log = helper_train.MetricsLog(tmp_path, 0, {"tensorboard": False})
    log.event(event="eval", fid=float("nan"), scores=[float("inf"), 1.0])
    log.close()
    line = (tmp_path / "events.jsonl").read_text()
    assert json.loads(line, parse_constant=pytest.fail) == {"event": "eval", "fid": None,
                                                            "scores": [None, 1.0]}


# ---------------------------------------------------------------- the run lock

def test_run_lock_in_process(tmp_path):
    folder = tmp_path / "a" / "run"
    with RunLock(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunError, match=f"in use by another run \\(pid {os.getpid()} on "):
            with RunLock(folder):
                pass
        (folder / "x").write_text("")
    assert not (folder / ".lock").exists() and (folder / "x").is_file()
    with RunLock(tmp_path / "b" / "c"):   # created and left empty: removed again
        pass
    assert not (tmp_path / "b").exists()


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_run_lock_without_fcntl_uses_a_pid_file(tmp_path, monkeypatch):
    monkeypatch.setattr(helper_files, "fcntl", None)
    folder = tmp_path / "run"
    folder.mkdir()
    with RunLock(folder):
        with pytest.raises(RunError, match="delete .*\\.lock"):
            with RunLock(folder):
                pass
    (folder / ".lock").write_text(json.dumps({"pid": dead_pid()}))   # its holder was killed
    with RunLock(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()


def test_two_processes_on_one_run(mnist_root, mnist_reference, paused_run, tmp_path, capsys):
    out = tmp_path / "run"
    proc, _ = paused_run(mnist_argv(mnist_root, out, epochs=3))
    before = snapshot(out)
    assert ".lock" in before and "checkpoint.pt" in before
    for extra in (["--resume"], ["--overwrite"], []):
        code, _, err = run_main(MNIST, mnist_argv(mnist_root, out, *extra, epochs=3), capsys)
        assert_one_line(code, err, 2, f"in use by another run (pid {proc.pid} on ")
    assert snapshot(out) == before
    proc.kill()                                        # SIGKILL: no handler, no clean-up
    proc.communicate()
    (out / f"checkpoint.tmp{proc.pid}.pt").write_bytes(b"half a checkpoint")   # as a kill mid-save leaves
    (out / f"loss.tmp{proc.pid}.png").write_bytes(b"")
    code, stdout, _ = run_main(MNIST, ["--resume", "--out", out], capsys)   # the stale lock is taken
    assert code == 0 and "resuming at epoch 2, batch 0" in stdout
    assert not list(out.glob("*.tmp*")) and not (out / ".lock").exists()
    assert torch.equal(metric_values(out), metric_values(mnist_reference))


def test_sigterm_saves_mid_epoch_and_resumes_exactly(mnist_root, mnist_reference, paused_run, tmp_path,
                                                     capsys):
    out = tmp_path / "run"
    proc, go = paused_run(mnist_argv(mnist_root, out, epochs=3))
    proc.send_signal(signal.SIGTERM)                   # arrives during step 4 (epoch 2, batch 2) ...
    time.sleep(0.2)
    go.touch()                                         # ... which then finishes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]         # 130 as for Ctrl-C: an interrupted run
    assert "SIGTERM: stopping after this batch" in err and "Traceback" not in err
    assert "--resume" in err.strip().splitlines()[-1]
    ckpt = load_ckpt(out)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 2, 5)   # mid-epoch
    code, stdout, _ = run_main(MNIST, ["--resume", "--out", out], capsys)
    assert code == 0 and "resuming at epoch 2, batch 2" in stdout
    assert torch.equal(metric_values(out), metric_values(mnist_reference))
    for net in ("gen", "disc"):
        for k, v in load_ckpt(mnist_reference)[net].items():
            assert torch.equal(load_ckpt(out)[net][k], v), (net, k)


# ---------------------------------------------------------------- a full disk

def full_disk_at(monkeypatch, target, call):
    """The `call`-th write through `target` ("checkpoint": torch.save, "plot": savefig)
    fails as on a full disk, after writing part of its file."""
    calls = []
    real = {"checkpoint": torch.save, "plot": matplotlib.figure.Figure.savefig}[target]

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) < call:
            return real(*args, **kwargs)
        dest = args[1]
        if hasattr(dest, "write"):
            dest.write(b"partial")
        else:
            Path(dest).write_bytes(b"")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    owner = torch if target == "checkpoint" else matplotlib.figure.Figure
    monkeypatch.setattr(owner, "save" if target == "checkpoint" else "savefig", failing)


@pytest.mark.parametrize("target,call,epoch", [("checkpoint", 2, 1), ("plot", 1, 3)])
def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(target, call, epoch, mnist_root, tmp_path,
                                                             monkeypatch, capsys):
    out = tmp_path / "run"
    full_disk_at(monkeypatch, target, call)
    code, _, err = run_main(MNIST, mnist_argv(mnist_root, out, epochs=3), capsys)
    assert_one_line(code, err, 1, "No space left on device")
    monkeypatch.undo()
    assert not list(out.rglob("*.tmp*")) and not (out / ".lock").exists()
    assert load_ckpt(out)["epoch"] == epoch                     # the last good one, whole


# ---------------------------------------------------------------- after a divergence: advice that works

def test_divergence_advice_can_be_followed(mnist_root, tmp_path, monkeypatch, capsys):
    real = helper_train.gan_step

    def nan_at_step_4(s, *args):
        out = real(s, *args)
        return out.clone().fill_(float("nan")) if s.step - 1 == 4 else out
    monkeypatch.setattr(helper_train, "gan_step", nan_at_step_4)
    out = tmp_path / "run"
    code, _, err = run_main(MNIST, mnist_argv(mnist_root, out, epochs=3), capsys)
    line = assert_one_line(code, err, 1, "Try lower learning rates: ")
    advice = line.split("Try lower learning rates: ")[1]
    assert advice == f"--resume --out {out} --lr-gen 0.0001 --lr-disc 0.0001"
    monkeypatch.undo()
    code, stdout, _ = run_main(MNIST, [*shlex.split(advice), "--amp", "off"], capsys)
    assert code == 0 and "--lr-gen 0.0002 -> 0.0001" in stdout
    assert json.loads((out / "config.json").read_text())["lr_gen"] == 1e-4
    ckpt = load_ckpt(out)
    assert ckpt["epoch"] == 3 and [g["lr"] for g in ckpt["opt_g"]["param_groups"]] == [1e-4]
    changes = [e for e in read_events(out) if e["event"] == "config_change"]
    assert changes == [{"event": "config_change", "epoch": 1, "step": 3, "changes": {
        "amp": ["auto", "off"], "lr_disc": [2e-4, 1e-4], "lr_gen": [2e-4, 1e-4]}}]


def test_ctrl_c_before_the_first_checkpoint_says_to_start_again(celeba_root, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the image cache is built: there is nothing to --resume, so the
    message must not suggest it; no run folder files are left behind."""

    def interrupted_loader(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(helper_cli, "ranked_loader", interrupted_loader)
    out = tmp_path / "run"
    code, _, err = run_main(train_celeba_dcgan.main, dcgan_argv(celeba_root, out, tmp_path / "cache"), capsys)
    last = err.strip().splitlines()[-1]
    assert code == 130 and "--resume" not in last and "same command" in last
    assert not (out / "checkpoint.pt").exists() and not (out / "config.json").exists()

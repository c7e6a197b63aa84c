"""helper_tensorboard: what the training loop writes is what TensorBoard's own
reader sees -- per-batch scalars, one grid per epoch, eval scores, text -- and
a resumed run continues the curves with each step exactly once."""
import importlib.util
import io
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helper_tensorboard import INSTALL_HINT, ROW_TAGS, TensorBoardMissing, open_writer

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard is not installed (optional extra: pip install tensorboard)")


def read_tb(run_dir):
    """TensorBoard's reader over run_dir/tb, keeping every event (size guidance 0)."""
    ea_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    sizes = {key: 0 for key in ea_module.DEFAULT_SIZE_GUIDANCE}
    return ea_module.EventAccumulator(str(run_dir / "tb"), size_guidance=sizes).Reload()


def read_tb_plugin(run_dir):
    """The reader of `tensorboard --load_fast=false`: everything as tensors, text included
    (the reader above keeps text too but never purges it)."""
    pea = pytest.importorskip("tensorboard.backend.event_processing.plugin_event_accumulator")
    return pea.EventAccumulator(str(run_dir / "tb"), size_guidance={pea.TENSORS: 0}).Reload()


def scalars(acc, tag):
    """{step: value} of a scalar tag, failing on a step seen twice."""
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"{tag}: duplicated steps {steps}"
    return {e.step: e.value for e in events}


def texts(acc, tag):
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(f"{tag}/text_summary")}


def make_rows(steps, seed):
    """metrics.csv-like rows with known random losses and accuracies (3 batches per epoch)."""
    values = torch.rand(len(steps), 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return [[s, s // 3 + 1, s % 3 + 1, *v] for s, v in zip(steps, values.tolist())]


def assert_rows_logged(acc, rows):
    for col, tag in enumerate(ROW_TAGS, start=3):
        got = scalars(acc, tag)
        assert sorted(got) == [r[0] for r in rows], tag
        want = np.array([r[col] for r in rows], dtype=np.float32)   # TensorBoard keeps float32
        np.testing.assert_array_equal(np.array([got[r[0]] for r in rows], dtype=np.float32), want)


def next_second():
    """Event files are named by their creation second and read in name order:
    a resumed run starts in a later second in real use, so here too."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.01)


@needs_tensorboard
def test_rows_become_per_step_scalars(tmp_path):
    rows = make_rows(range(25), seed=0)
    with open_writer(tmp_path) as tb:
        for i in range(0, 25, 10):      # flushed in chunks, like the training loop
            tb.rows(rows[i:i + 10])
    assert_rows_logged(read_tb(tmp_path), rows)


@needs_tensorboard
def test_epoch_grid_time_scores_and_text(tmp_path):
    with open_writer(tmp_path) as tb:
        tb.config({"lr": 2e-4, "model": "fc"})
        for epoch, fill in [(1, -1.0), (2, 1.0), (3, 0.0)]:
            tb.epoch(epoch, step=3 * epoch - 1, seconds=10.0 + epoch, grid=torch.full((4, 1, 28, 28), fill),
                     nrow=2)
        tb.scores(2, {"fid": 3.5, "class_shares": [0.25, 0.75], "inception_fid": None})
        tb.text("health", "D accuracy stuck at 1.00", 4)
    acc = read_tb(tmp_path)
    images = acc.Images("samples/fixed_noise")
    assert [im.step for im in images] == [1, 2, 3]
    for im, want in zip(images, [0, 255, 128]):     # -1 black, +1 white, 0 mid-grey
        assert (im.width, im.height) == (62, 62)      # 2 x 2 images of 28 + 2 px padding, + 2
        pixels = np.asarray(Image.open(io.BytesIO(im.encoded_image_string)).convert("RGB"))
        assert abs(int(pixels[15, 15, 0]) - want) <= 1
    assert scalars(acc, "time/epoch_seconds") == {1: 11.0, 2: 12.0, 3: 13.0}
    assert scalars(acc, "progress/epoch") == {2: 1.0, 5: 2.0, 8: 3.0}
    assert scalars(acc, "eval/fid") == {2: 3.5}
    assert scalars(acc, "eval/class_shares/1") == {2: 0.75}
    assert not any("inception_fid" in tag for tag in acc.Tags()["scalars"])
    assert texts(acc, "health") == {4: "D accuracy stuck at 1.00"}
    config = texts(acc, "config")[0]
    assert config.startswith("```json\n") and config.endswith("\n```") and '"lr": 0.0002' in config


@needs_tensorboard
def test_resume_continues_the_curves_with_each_step_once(tmp_path):
    first, second = make_rows(range(10), seed=1), make_rows(range(6, 13), seed=2)
    tb = open_writer(tmp_path)
    tb.config({"epochs": 3})
    tb.rows(first[:6])
    tb.epoch(1, 2, 1.0, torch.zeros(4, 1, 8, 8))
    tb.rows(first[6:])
    tb.text("health", "a warning after the checkpoint", 8)   # the crashed run's, to be hidden
    tb.close()          # "crash" after step 9; the checkpoint was taken after 6 steps
    next_second()
    with open_writer(tmp_path, resume_step=6) as tb:
        tb.rows(second)
    acc = read_tb(tmp_path)
    assert_rows_logged(acc, first[:6] + second)       # 0..5 from the first run, 6..12 from the second
    assert [im.step for im in acc.Images("samples/fixed_noise")] == [1]
    plugin = read_tb_plugin(tmp_path)
    assert [e.step for e in plugin.Tensors("loss/generator")] == list(range(13))
    assert plugin.Tensors("health/text_summary") == []        # written after the checkpoint
    assert list(texts(plugin, "config")) == [0]


@needs_tensorboard
def test_fresh_run_hides_an_overwritten_run(tmp_path):
    with open_writer(tmp_path) as tb:
        tb.rows(make_rows(range(10), seed=3))
    next_second()
    rows = make_rows(range(4), seed=4)
    with open_writer(tmp_path) as tb:
        tb.rows(rows)
    assert_rows_logged(read_tb(tmp_path), rows)


@needs_tensorboard
def test_bad_rows_and_grids_are_one_line_errors(tmp_path):
    with open_writer(tmp_path) as tb:
        with pytest.raises(ValueError, match="metrics row has 7 values"):
            tb.rows([[0, 1, 1, 0.5, 0.5]])
        with pytest.raises(ValueError, match=r"N x C x H x W, not shape \(1, 28, 28\)"):
            tb.epoch(1, 0, 1.0, torch.zeros(1, 28, 28))
        with pytest.raises(ValueError, match="number or a list of numbers"):
            tb.scores(1, {"fid": "low"})


@pytest.mark.parametrize("step", [-1, 2.5, float("inf"), "6", True])
def test_bad_resume_step(tmp_path, step):
    with pytest.raises(ValueError, match="resume_step must be"):
        open_writer(tmp_path, resume_step=step)


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # import now fails
    with pytest.raises(TensorBoardMissing) as err:
        open_writer(tmp_path)
    assert str(err.value) == INSTALL_HINT
    assert INSTALL_HINT == "--tensorboard needs the tensorboard package: pip install tensorboard"
    assert isinstance(err.value, ImportError)
    assert not (tmp_path / "tb").exists()


# ---------------------------------------------------------------- through the training script

def test_training_with_tensorboard_matches_metrics_csv_across_a_resume(mnist_root, tmp_path):
    import train_mnist_gan
    from conftest import metric_values, mnist_argv, run_main
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, "--tensorboard", epochs=1))[0] == 0
    # TensorBoard reads event files in name order: events.out.tfevents.<second>.<host>.<pid>.<n>.
    # Two writers of one process in the same second sort by n as text (".10" before ".9"), which
    # only a test can do; a new second keeps the resumed file after the first.
    time.sleep(1.1)
    assert run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 2])[0] == 0
    m = metric_values(out)
    acc = read_tb(out)
    got = scalars(acc, "loss/generator")                               # fails on a step seen twice
    assert sorted(got) == m[:, 0].long().tolist()
    assert torch.allclose(torch.tensor([got[s] for s in sorted(got)], dtype=torch.float64), m[:, 3],
                          atol=1e-6)
    assert sorted(scalars(acc, "time/epoch_seconds")) == [1, 2]
    assert len(acc.Images("samples/fixed_noise")) == 2

"""bench.py on a tiny fake MNIST and face folder: the --quick run writes every
measurement, and its two sides really compare the same training step."""
import argparse
import json
import statistics

import pytest
import torch

import bench
import bench_gpu
import helper_train
from conftest import assert_state_dicts_equal, make_celeba, make_mnist


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """48 digits (6 batches of 8) and 16 train faces at 89 x 109 (4 more outside the split)."""
    root = tmp_path_factory.mktemp("bench_data")
    make_mnist(root, n_train=48)
    make_celeba(root, n=20, size=(89, 109), partition=[0] * 16 + [1, 1, 2, 2])
    return root


def bench_json(data, tmp_path, *extra):
    out = tmp_path / "results" / "bench.json"   # a folder that does not exist yet
    bench.main(["--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8",
                "--num-workers", "0", "--device", "cpu", "--threads", "1", "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_quick_run_writes_every_measurement(data, tmp_path, capsys):
    results = bench_json(data, tmp_path, "--quick", "--batches", "2")
    for key in ("mnist_pipeline", "celeba_pipeline", "mnist_train", "celeba_train"):
        for side in ("lecture", "project"):
            e = results[key][side]
            assert e["median"] > 0 and len(e["values"]) == len(e["wall_s"]) == len(e["cpu_s"]) == 1
            assert e["peak_mem_mb"][0] > 0 and e["mem_increase_mb"][0] >= 0
        assert results[key]["ratio_b_over_a"] > 0 and results[key]["speedup"] > 0
    assert results["mnist_train"]["plan"] == {"warmup": 3, "batches": 2, "epoch_batches": 6,
                                              "full_epoch": False}
    assert results["celeba_cache"]["images"] == 16 and results["celeba_cache"]["build_s"] is not None
    assert results["mnist_setup"]["lecture_s"] >= 0 and results["mnist_setup"]["project_s"] >= 0
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["torch"] and machine["cpu"] and machine["torch_threads"] == 1
    table = capsys.readouterr().out
    for row in ("MNIST GAN epoch", "DCGAN training", "MNIST input only", "CelebA input only",
                "CelebA cache: one-time build", "MNIST setup"):
        assert row in table


def test_full_epoch_with_repeats(data, tmp_path):
    results = bench_json(data, tmp_path, "--only", "mnist", "--repeats", "2")
    assert set(results) & set(bench.ROWS) == {"mnist_train"} and "celeba_cache" not in results
    e = results["mnist_train"]
    assert e["plan"]["full_epoch"] and e["plan"]["batches"] == 6
    for side in ("lecture", "project"):
        assert len(e[side]["values"]) == 2 and e[side]["median"] == statistics.median(e[side]["values"])


# MNIST matches to float32 rounding for several steps; the DCGAN's channels_last
# convolutions round differently, so one step and a looser tolerance there.
@pytest.mark.parametrize("dataset, steps, rel", [("mnist", 3, 1e-6), ("celeba", 1, 1e-4)])
def test_both_sides_start_equal_and_take_the_same_steps(data, tmp_path, dataset, steps, rel):
    """Same initial weights, and on the same batches and noise the lecture's step
    and gan_step give the same losses: the benchmark times the same computation."""
    args = argparse.Namespace(data_dir=str(data), batch_size=8, num_workers=0, cache_dir=str(tmp_path))
    cfg = bench.config(dataset, args)
    device = torch.device("cpu")
    lecture = bench.Lecture(dataset, cfg, device, train=True)
    project = bench.Project(dataset, cfg, device, train=True)
    assert_state_dicts_equal(lecture.gen.state_dict(), project.state.gen.state_dict())
    assert_state_dicts_equal(lecture.disc.state_dict(), project.state.disc.state_dict())

    for i, real in zip(range(steps), project.epoch(0)):
        torch.manual_seed(i)
        lecture.step(real)
        torch.manual_seed(i)
        batch = helper_train.prepare_batch(real, cfg)
        g, d, acc_real, acc_fake = helper_train.gan_step(project.state, batch, cfg, project.autocast).tolist()
        log = {k: v[i] for k, v in lecture.log.items()}
        assert (g, d) == pytest.approx((log["g_loss"], log["d_loss"]), rel=rel)
        assert (acc_real * 100, acc_fake * 100) == pytest.approx((log["acc_real"], log["acc_fake"]))


def test_gpu_check_runs_its_tiny_version_on_a_cpu(data, tmp_path, capsys):
    """`bench.py --gpu` on a CPU: every check runs on a few batches, bf16
    really trains in reduced precision (losses near float32's, not equal; the
    CPU's autocast leaves this model in float32 with fp16), and the two input
    paths are the two ways TensorLoader keeps the images."""
    results = bench_json(data, tmp_path, "--gpu")
    assert results["tiny"] and results["passed"]
    p = results["mnist"]["precision"]
    assert list(p) == ["off", "bf16", "fp16"] and all(e["finite"] and e["ok"] for e in p.values())
    assert 0 < p["bf16"]["max_abs_diff"] <= bench_gpu.PRECISION_TOLERANCE["max"]
    assert list(results["celeba"]["precision"]) == ["off"]   # bf16 convolutions: minutes on a CPU
    assert list(results["celeba"]["variants"]) == ["channels_last=False compile=False",
                                                   "channels_last=True compile=False"]
    assert results["input"]["on_device"]["on_device"] and not results["input"]["host_pinned"]["on_device"]
    assert results["celeba_train"]["project"]["median"] > 0 and results["mnist_train"]["lecture"]["median"] > 0
    table = capsys.readouterr().out
    assert "the tiny CPU version, not a measurement" in table and "all checks passed" in table


def test_precision_check_fails_past_its_tolerance(data, monkeypatch):
    """The same tiny MNIST comparison with no difference allowed: bf16 fails, float32 not."""
    args = argparse.Namespace(data_dir=str(data), batch_size=8, num_workers=0, cache_dir=None)
    cfg = bench.config("mnist", args)
    loader = bench.helper_data.make_loader("mnist", cfg, torch.device("cpu"))
    monkeypatch.setattr(bench_gpu, "PRECISION_TOLERANCE", {"mean": 0.0, "max": 0.0})
    checks = bench_gpu.precision(cfg, torch.device("cpu"), loader, 3)
    assert [checks[amp]["ok"] for amp in ("off", "bf16")] == [True, False]

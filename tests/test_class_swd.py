"""Per-class SWD, the class score of conditional runs on RGB data: near zero for
real images of the right class, large when two visibly different classes swap
labels; the labels staying with their images through the reference's seeded
pick (class folders and CIFAR-10); evaluate.py, --eval-every's evaluator and
ablate.py on a tiny conditional class-folder run."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import ablate
import evaluate
import helper_checkpoint
import helper_data as hd
import helper_eval
import train_celeba_dcgan
from conftest import dcgan_argv, make_cifar10, run_main

# class k: a solid colour, channel k bright, the others dark
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def coloured(n, k, size=16, seed=0):
    """n images (N x 3 x size x size in [-1, 1]) of class k: its colour plus smooth
    noise, so that no two are the same."""
    g = torch.Generator().manual_seed(seed * 10 + k)
    base = torch.tensor(COLOURS[k], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    noise = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g) - 0.5, size=size,
                                            mode="bilinear", align_corners=False)
    return (base + 0.4 * noise).clamp(-1, 1)


def labelled_set(per_class, seed):
    """(images, labels): per_class[k] images of class k, the classes interleaved."""
    images = torch.cat([coloured(n, k, seed=seed) for k, n in enumerate(per_class)])
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(per_class)])
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return images[order], labels[order]


# ---------------------------------------------------------------- the score

def test_class_swd_is_small_for_the_right_class_and_large_when_two_classes_swap():
    real, real_labels = labelled_set((20, 20, 20), seed=1)
    fake, labels = labelled_set((20, 20, 20), seed=2)        # other images of the same classes
    right = helper_eval.class_swd(fake, labels, real, real_labels, 3)
    swapped_labels = labels.clone()
    swapped_labels[labels == 0], swapped_labels[labels == 1] = 1, 0   # red drawn as green, green as red
    swapped = helper_eval.class_swd(fake, swapped_labels, real, real_labels, 3)
    ok, wrong = right["class_swd_per_class"], swapped["class_swd_per_class"]
    assert len(ok) == 3 and all(np.isfinite(ok))
    assert wrong[0] > 5 * ok[0] and wrong[1] > 5 * ok[1]
    assert wrong[2] == pytest.approx(ok[2])                   # the blue class is untouched
    assert swapped["mean_class_swd"] > 5 * right["mean_class_swd"]
    assert right["mean_class_swd"] == pytest.approx(np.mean(ok))
    # the whole set's SWD cannot see the mix-up: it is the same images either way
    assert helper_eval.swd(fake, real)["swd_mean"] < wrong[0] / 5


def test_a_class_with_too_few_images_is_nan_and_left_out_of_the_mean():
    real, real_labels = labelled_set((20, 20, 3), seed=1)     # 3 real images of class 2
    fake, labels = labelled_set((20, 20, 20), seed=2)
    got = helper_eval.class_swd(fake, labels, real, real_labels, 4)   # class 3: no images at all
    a, b, few, none = got["class_swd_per_class"]
    assert np.isnan(few) and np.isnan(none) and np.isfinite([a, b]).all()
    assert got["mean_class_swd"] == pytest.approx((a + b) / 2)
    lower = helper_eval.class_swd(fake, labels, real, real_labels, 4, min_images=3)
    assert np.isfinite(lower["class_swd_per_class"][2])
    again = helper_eval.class_swd(fake, labels, real, real_labels, 4)
    assert again["class_swd_per_class"][:2] == [a, b]              # deterministic


# ---------------------------------------------------------------- labels through the reference

def colour_folder(root, per_class=(14, 12, 16), size=12):
    """root/red, root/green, root/blue: solid PNGs of their class's colour, the
    image's number added to every channel so that each is different."""
    names = ["blue", "green", "red"]            # sorted: the labels are 0 blue, 1 green, 2 red
    colours = {"red": COLOURS[0], "green": COLOURS[1], "blue": COLOURS[2]}
    for name, n in zip(names, per_class):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixel = np.array(colours[name]) + i
            Image.fromarray(np.tile(pixel.astype(np.uint8), (size, size, 1))).save(root / name / f"{i}.png")
    return names


def colour_of(images):
    """The class (0 blue, 1 green, 2 red) of solid images, from their brightest channel."""
    return 2 - images[:, :, 0, 0].argmax(1)


def folder_cfg(root, tmp_path, **more):
    return {"dataset": "folder", "data_dir": str(root), "cache_dir": str(tmp_path / "cache"), "image_size": 16,
            "crop": "none", "num_workers": 0, "seed": 0, "conditional": True,
            "classes": ["blue", "green", "red"], **more}


def test_dataset_images_gives_each_image_with_its_label(tmp_path):
    colour_folder(tmp_path / "data")
    images, labels = hd.dataset_images(folder_cfg(tmp_path / "data", tmp_path), labels=True)
    assert images.shape == (42, 3, 16, 16) and labels.dtype == torch.int64
    assert torch.equal(labels, colour_of(images.float()))
    assert torch.equal(hd.dataset_images(folder_cfg(tmp_path / "data", tmp_path)), images)
    with pytest.raises(hd.DataError, match="no class labels"):
        hd.dataset_images({**folder_cfg(tmp_path / "data", tmp_path), "dataset": "celeba"}, labels=True)


def test_the_reference_and_floor_keep_the_labels_of_their_images(tmp_path):
    colour_folder(tmp_path / "data")
    ref = helper_eval.Reference(folder_cfg(tmp_path / "data", tmp_path), num=20, seed=3)
    assert ref.conditional and len(ref.real) == len(ref.train_real) == 20
    assert torch.equal(ref.real_labels, colour_of(ref.real)) and torch.equal(ref.train_labels, colour_of(ref.train_real))
    both = torch.cat([ref.real, ref.train_real]).flatten(1)
    assert len(torch.unique(both, dim=0)) == 40                  # two disjoint sets
    other = helper_eval.Reference(folder_cfg(tmp_path / "data", tmp_path), num=20, seed=4)
    assert not torch.equal(other.real, ref.real) and torch.equal(other.real_labels, colour_of(other.real))


def test_cifar10_reference_labels_are_those_of_the_files(tmp_path):
    make_cifar10(tmp_path, n=6)                                   # 30 random images, random labels
    images, labels = hd.read_cifar10(tmp_path, labels=True)
    truth = {img.numpy().tobytes(): int(y) for img, y in zip(images, labels)}
    cfg = {"dataset": "cifar10", "data_dir": str(tmp_path), "cache_dir": None, "image_size": 32, "seed": 0,
           "conditional": True, "classes": hd.CLASS_NAMES["cifar10"]}
    ref = helper_eval.Reference(cfg, num=15, seed=1)
    for x, y in ((ref.real, ref.real_labels), (ref.train_real, ref.train_labels)):
        as_uint8 = ((x + 1) / 2 * 255).round().to(torch.uint8)
        assert [truth[img.numpy().tobytes()] for img in as_uint8] == y.tolist()


def test_the_floor_scores_real_images_by_their_true_classes(tmp_path):
    colour_folder(tmp_path / "data", per_class=(30, 30, 30))
    ref = helper_eval.Reference(folder_cfg(tmp_path / "data", tmp_path), num=45)
    floor = ref.floor()
    assert len(floor["class_swd_per_class"]) == 3 and np.isfinite(floor["class_swd_per_class"]).all()
    assert {"swd_mean", "ms_ssim"} <= set(floor)
    mixed = ref.scores(ref.train_real, (ref.train_labels + 1) % 3)   # every image under another class
    assert mixed["mean_class_swd"] > 3 * floor["mean_class_swd"]
    assert mixed["swd_mean"] == pytest.approx(floor["swd_mean"])    # the whole set's score cannot tell
    assert "mean_class_swd" not in ref.scores(ref.train_real)         # no labels: no class scores


# ---------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def rgb_cond_run(tmp_path_factory):
    """A one-epoch conditional DCGAN run on 3 class folders of 30 images each."""
    root = tmp_path_factory.mktemp("rgb_cond")
    colour_folder(root / "data", per_class=(30, 30, 30), size=20)
    out = root / "run"
    argv = dcgan_argv(root / "data", out, root / "cache", "--dataset", "folder", "--image-size", 16,
                      "--conditional", epochs=1)
    assert run_main(train_celeba_dcgan.main, argv)[0] == 0
    return out


def test_evaluate_scores_a_conditional_rgb_run_by_class(rgb_cond_run, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code, printed, _ = run_main(evaluate.main, [rgb_cond_run, "--num", 45, "--json", out], capsys)
    assert code == 0
    result = json.loads(out.read_text())
    assert result["classes"] == ["blue", "green", "red"]
    for side in ("samples", "real_floor"):
        assert len(result[side]["class_swd_per_class"]) == 3 and result[side]["mean_class_swd"] > 0
    # an untrained generator is far from each class's real images; real images are not
    assert result["real_floor"]["mean_class_swd"] < result["samples"]["mean_class_swd"]
    assert "SWD x 1e3 per class, mean (lower is better)" in printed
    lines = printed.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("per class: SWD")))
    assert [line.split()[0] for line in lines[first + 1:first + 4]] == ["blue", "green", "red"]
    # the report shows the classes' scores by name, beside the floor
    page = (rgb_cond_run / "report.html").read_text()
    table = page[page.index("By class, evaluate.py"):]
    assert "<th>SWD x 1e3</th><th>SWD x 1e3 (floor)</th>" in table
    want = f"<td>green</td><td>{result['samples']['class_swd_per_class'][1]:.4g}</td>"
    assert want in table


def test_eval_every_scores_a_conditional_rgb_run_by_class(rgb_cond_run, monkeypatch):
    monkeypatch.setitem(helper_eval.EVAL_NUM, "rgb", 45)          # 90 real images: 45 reference, 45 floor
    gen, cfg = helper_checkpoint.load_generator(rgb_cond_run)
    scores = helper_eval.make_evaluator(cfg)(gen)
    assert scores["mean_class_swd"] > 0 and all(isinstance(v, float) for v in scores.values())


def test_ablate_tables_a_conditional_rgb_run_with_its_class_swd(rgb_cond_run, tmp_path, capsys):
    out = tmp_path / "ablation"
    data = rgb_cond_run.parent / "data"
    argv = ["--dataset", "celeba", "--data-dir", data, "--out", out, "--variants", "lecture", "--seeds", 1,
            "--epochs", 1, "--max-batches", 1, "--num", 45, "--quiet", "--cache-dir", tmp_path / "cache",
            "--", "--dataset", "folder", "--image-size", 16, "--conditional", "--g-features", 8,
            "--d-features", 8, "--batch-size", 8, "--num-workers", 0, "--device", "cpu"]
    code, _, err = run_main(ablate.main, argv, capsys)
    assert code == 0, err
    table = (out / "ablation.md").read_text()
    assert "| variant | seeds | swd_mean | ms_ssim | mean_class_swd |" in table
    assert json.loads((out / "ablation.json").read_text())["rows"][0]["mean_class_swd"][0] > 0


def test_ablate_table_shows_a_dash_for_class_scores_of_unconditional_variants():
    runs = {"best": [{"swd_mean": 3.0, "epochs": 1.0, "train_seconds": 2.0, "warnings": 0.0}],
            "best_conditional": [{"swd_mean": 4.0, "mean_class_swd": 6.0, "epochs": 1.0, "train_seconds": 2.0,
                                  "warnings": 0.0}]}
    table = ablate.markdown(ablate.summarize(runs, ["swd_mean", "mean_class_swd"]), ["swd_mean", "mean_class_swd"], "h")
    assert "| best | 1 | 3.000 | - | 1.0 |" in table and "| best_conditional | 1 | 4.000 | 6.000 | 1.0 |" in table

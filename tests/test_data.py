"""helper_data: [-1, 1] conversion, the MNIST family from IDX files (plain,
.gz, damaged, downloaded), CelebA folders in the three layouts, folders of
images, CIFAR-10 pickles (and refused ones), the three crops, the decode cache
(and its damage), shuffled batches, the two input paths (tensor and per
image), and one-line errors for every bad input."""
import gzip
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
import torchvision.datasets
from torchvision import transforms

import helper_data as hd
from conftest import (N_MNIST, ROOT, face_image, image_folder, make_celeba, make_cifar10, make_faces,
                      make_idx_set, py2_batch_pickle, write_idx)


def celeba_cfg(data_dir, cache_dir, **kw):
    return {"data_dir": str(data_dir), "batch_size": 4, "seed": 3, "input_path": "tensor",
            "num_workers": 0, "image_size": 64, "cache_dir": str(cache_dir), **kw}


def tmp_files(folder):
    return [p for p in folder.rglob("*") if "tmp" in p.name]


# ---------------------------------------------------------------- to_float

def test_to_float_matches_totensor_normalize_bit_for_bit():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (33, 17, 3), dtype=np.uint8)
    arr[0, 0], arr[0, 1] = 0, 255
    ref = transforms.Compose([transforms.ToTensor(),
                              transforms.Normalize((0.5,) * 3, (0.5,) * 3)])(Image.fromarray(arr))
    ours = hd.to_float(torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0))[0]
    assert ours.dtype == torch.float32
    assert torch.equal(ours, ref)
    assert ours[:, 0, 0].tolist() == [-1.0] * 3 and ours[:, 0, 1].tolist() == [1.0] * 3
    # all 256 levels, grey images, as the MNIST per-image path does it
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ref = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])(
        Image.fromarray(grey, mode="L"))
    assert torch.equal(hd.to_float(torch.from_numpy(grey)[None, None])[0], ref)


# ---------------------------------------------------------------- MNIST

def test_read_idx_set_reads_mnist_files(mnist_root, mnist_images):
    x = hd.read_idx_set(mnist_root)
    assert x.shape == (N_MNIST, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(mnist_images.copy()))
    # pointing at the MNIST folder itself works too
    assert torch.equal(hd.read_idx_set(mnist_root / "MNIST"), x)


def test_tensor_loader_mnist_batches(mnist_root):
    loader = hd.TensorLoader(hd.read_idx_set(mnist_root), 50, "cpu", seed=1)
    batches = list(loader.batches(0))
    assert len(loader) == len(batches) == 4                       # 192 = 50 + 50 + 50 + 42
    assert [len(b) for b in batches] == [50, 50, 50, 42]
    for b in batches:
        assert b.shape[1:] == (1, 28, 28) and b.dtype == torch.float32
        assert b.min() >= -1 and b.max() <= 1
    assert torch.cat(batches).min() == -1 and torch.cat(batches).max() == 1


def test_missing_mnist_is_a_clear_data_error(tmp_path):
    with pytest.raises(hd.DataError) as e:
        hd.read_idx_set(tmp_path / "nowhere")
    msg = str(e.value)
    assert "MNIST" in msg and "train-images-idx3-ubyte" in msg and "--data-dir" in msg
    assert str(tmp_path / "nowhere") in msg and "\n" not in msg


def test_mnist_per_image_path_equals_tensor_path(mnist_root):
    fast = hd.TensorLoader(hd.read_idx_set(mnist_root), 32, "cpu", seed=7)
    slow = hd.DatasetLoader(hd.PerImage(hd.read_idx_set(mnist_root)), 32, "cpu", seed=7)
    assert len(fast) == len(slow) == 6
    for epoch, skip in [(0, 0), (1, 0), (1, 4)]:
        a, b = list(fast.batches(epoch, skip)), list(slow.batches(epoch, skip))
        assert len(a) == len(b) == 6 - skip
        for x, y in zip(a, b):
            assert x.dtype == y.dtype == torch.float32
            assert torch.equal(x, y)


def test_loaders_leave_global_rng_alone(mnist_root):
    fast = hd.TensorLoader(hd.read_idx_set(mnist_root), 64, "cpu", seed=7)
    slow = hd.DatasetLoader(hd.PerImage(hd.read_idx_set(mnist_root)), 64, "cpu", seed=7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    list(fast.batches(0)), list(slow.batches(2, skip=1))
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------- ShuffledBatches

def epoch_order(sb, epoch, skip=0):
    sb.set_epoch(epoch, skip)
    return [b.tolist() for b in sb]


def test_shuffled_batches_reproducible_and_epoch_dependent():
    a, b = hd.ShuffledBatches(100, 8, seed=5), hd.ShuffledBatches(100, 8, seed=5)
    assert epoch_order(a, 3) == epoch_order(b, 3)
    assert epoch_order(a, 3) != epoch_order(a, 4)
    assert epoch_order(a, 3) != epoch_order(hd.ShuffledBatches(100, 8, seed=6), 3)
    order = epoch_order(a, 3)
    assert len(a) == len(order) == 13 and [len(x) for x in order] == [8] * 12 + [4]
    assert sorted(i for x in order for i in x) == list(range(100))   # a permutation
    assert order != [list(range(i, min(i + 8, 100))) for i in range(0, 100, 8)]  # shuffled


@pytest.mark.parametrize("skip", [1, 2, 12, 13])
def test_shuffled_batches_skip_drops_exactly_the_first_batches(skip):
    sb = hd.ShuffledBatches(100, 8, seed=5)
    full = epoch_order(sb, 2)
    assert epoch_order(sb, 2, skip) == full[skip:]
    assert epoch_order(sb, 2) == full       # skip is per call, not sticky


def test_shuffled_batches_shards_disjoint_and_covering():
    n = 100
    shards = [epoch_order(hd.ShuffledBatches(n, 8, seed=1, rank=r, world=2), 0) for r in (0, 1)]
    flat = [sorted(i for b in s for i in b) for s in shards]
    assert len(flat[0]) == len(flat[1]) == 50
    assert not set(flat[0]) & set(flat[1])
    assert sorted(flat[0] + flat[1]) == list(range(n))
    # the shards of one epoch are a split of the single-process order's permutation
    assert len(hd.ShuffledBatches(n, 8, world=2)) == 7


def test_shuffled_batches_uneven_shards_pad_by_wrapping():
    shards = [epoch_order(hd.ShuffledBatches(11, 4, seed=1, rank=r, world=3), 0) for r in range(3)]
    flat = [i for s in shards for b in s for i in b]
    assert [sum(len(b) for b in s) for s in shards] == [4, 4, 4]
    assert set(flat) == set(range(11)) and len(flat) == 12


# ---------------------------------------------------------------- CelebA: finding files

@pytest.mark.parametrize("layout", ["torchvision", "folder", "flat"])
@pytest.mark.parametrize("size", [(178, 218), (89, 109)])
def test_celeba_layouts_give_64px_batches(tmp_path, layout, size):
    data = tmp_path / "data"
    paths = make_celeba(data, layout, n=5, size=size)
    assert hd.find_celeba(data) == sorted(paths)
    for input_path in ("tensor", "images"):
        loader = hd.make_loader("celeba", celeba_cfg(data, tmp_path / "cache", input_path=input_path),
                                "cpu")
        batches = list(loader.batches(0))
        assert [b.shape for b in batches] == [(4, 3, 64, 64), (1, 3, 64, 64)]
        for b in batches:
            assert b.dtype == torch.float32 and b.min() >= -1 and b.max() <= 1
    assert not tmp_files(tmp_path)


def test_celeba_partition_file_keeps_only_train(tmp_path):
    paths = make_celeba(tmp_path, "torchvision", n=6, partition=[0, 1, 0, 2, 0, 1])
    assert (tmp_path / "celeba" / "list_eval_partition.txt").is_file()
    assert hd.find_celeba(tmp_path) == [paths[0], paths[2], paths[4]]
    with pytest.warns(UserWarning, match="only 3 images, fewer than one batch of 10"):
        loader = hd.make_loader("celeba", celeba_cfg(tmp_path, tmp_path / "cache", batch_size=10), "cpu")
    (batch,) = list(loader.batches(0))
    assert len(batch) == 3


def test_celeba_partition_without_train_images_is_an_error(tmp_path):
    make_celeba(tmp_path, "folder", n=2, partition=[1, 2])
    with pytest.raises(hd.DataError, match="list_eval_partition.txt"):
        hd.find_celeba(tmp_path)


def test_missing_celeba_is_a_clear_data_error(tmp_path):
    with pytest.raises(hd.DataError, match="img_align_celeba"):
        hd.find_celeba(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hd.DataError) as e:
        hd.find_celeba(tmp_path / "empty")
    assert "img_align_celeba" in str(e.value) and "unzip it first" not in str(e.value)


def test_zip_only_folder_hints_to_unzip(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "img_align_celeba.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(hd.DataError) as e:
        hd.find_celeba(tmp_path)
    assert "img_align_celeba.zip" in str(e.value) and "unzip it first" in str(e.value)


# ---------------------------------------------------------------- crop and resize

def test_crop_box_sizes():
    left, top, right, bottom = hd.crop_box(178, 218)
    assert (right - left, bottom - top) == (160, 160) and (left, top) == (9, 29)
    left, top, right, bottom = hd.crop_box(89, 109)
    assert right - left == bottom - top == 80
    assert 0 <= left and right <= 89 and 0 <= top and bottom <= 109
    left, top, right, bottom = hd.crop_box(400, 100)   # never larger than the image
    assert right - left == bottom - top == 100 and top == 0


@pytest.mark.parametrize("size,crop", [((178, 218), 160), ((89, 109), 80)])
def test_load_face_equals_torchvision_center_crop_resize(tmp_path, size, crop):
    path = tmp_path / "face.jpg"
    face_image(11, size).save(path, quality=95)
    ref = transforms.Compose([transforms.CenterCrop(crop), transforms.Resize(64)])(
        Image.open(path).convert("RGB"))
    ours = hd.load_face(path, 64)
    assert ours.shape == (64, 64, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, np.asarray(ref))


def test_load_face_converts_grey_and_png(tmp_path):
    path = tmp_path / "grey.png"
    face_image(3).convert("L").save(path)
    arr = hd.load_face(path, 32)
    assert arr.shape == (32, 32, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1])


# ---------------------------------------------------------------- the decode cache

def test_faces_cache_built_once_and_equal_to_per_image(tmp_path, monkeypatch):
    files = make_faces(tmp_path / "img", 5)
    cache = tmp_path / "cache"
    first = hd.faces_uint8(files, 64, cache, workers=0, quiet=True)
    assert first.shape == (5, 3, 64, 64) and first.dtype == torch.uint8
    for i, f in enumerate(files):
        assert np.array_equal(first[i].permute(1, 2, 0).numpy(), hd.load_face(f, 64))
    (npy,) = cache.iterdir()
    assert npy.suffix == ".npy" and not tmp_files(cache)
    mtime = npy.stat().st_mtime_ns

    def no_rebuild(*a, **k):
        raise AssertionError("cache rebuilt although nothing changed")
    monkeypatch.setattr(hd, "build_cache", no_rebuild)
    again = hd.faces_uint8(files, 64, cache, workers=0, quiet=True)
    assert torch.equal(again, first) and npy.stat().st_mtime_ns == mtime


def test_faces_cache_rebuilt_when_a_file_or_the_size_changes(tmp_path, monkeypatch):
    files = make_faces(tmp_path / "img", 4)
    cache = tmp_path / "cache"
    first = hd.faces_uint8(files, 64, cache, workers=0, quiet=True)
    builds = []
    real_build = hd.build_cache
    monkeypatch.setattr(hd, "build_cache", lambda *a, **k: (builds.append(a), real_build(*a, **k)))

    face_image(999).save(files[2], quality=92)        # new content (and new size/mtime)
    st = files[2].stat()
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = hd.faces_uint8(files, 64, cache, workers=0, quiet=True)
    assert len(builds) == 1
    assert torch.equal(changed[[0, 1, 3]], first[[0, 1, 3]])
    assert not torch.equal(changed[2], first[2])
    assert np.array_equal(changed[2].permute(1, 2, 0).numpy(), hd.load_face(files[2], 64))

    small = hd.faces_uint8(files, 32, cache, workers=0, quiet=True)
    assert len(builds) == 2 and small.shape == (4, 3, 32, 32)
    hd.faces_uint8(files, 32, cache, workers=0, quiet=True)
    assert len(builds) == 2
    assert not tmp_files(cache)


def test_faces_cache_with_worker_processes_equals_serial(tmp_path):
    files = make_faces(tmp_path / "img", 4)
    serial = hd.faces_uint8(files, 32, tmp_path / "c1", workers=0, quiet=True)
    pooled = hd.faces_uint8(files, 32, tmp_path / "c2", workers=2, quiet=True)
    assert torch.equal(serial, pooled)


SKIP_CHECK = r"""
import sys, warnings
import numpy as np
sys.path.insert(0, sys.argv[1])
import helper_data as hd
def check(folder, cache, size):
  files = hd.find_celeba(folder)
  assert len(files) == 6, files
  with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      images = hd.faces_uint8(files, size, cache, workers=0, quiet=True)
  assert any("x.jpg" in str(w.message) for w in caught), [str(w.message) for w in caught]
  good = [f for f in files if f.name != "x.jpg"]
  assert tuple(images.shape) == (5, 3, size, size), images.shape
  for i, f in enumerate(good):
      assert np.array_equal(images[i].permute(1, 2, 0).numpy(), hd.load_face(f, size)), f"image {i} differs"
  again = hd.faces_uint8(files, size, cache, workers=0, quiet=True)   # from the cache file
  assert np.array_equal(again.numpy(), images.numpy())
for size in (64, 8):   # several memory pages / all within one page
    check(f"{sys.argv[2]}/img{size}", f"{sys.argv[2]}/cache{size}", size)
    print("ok", size, flush=True)
"""


def test_unreadable_image_skipped_with_warning_in_cache_path(tmp_path):
    """64 px (a cache of several memory pages) and 8 px (one page). Runs in a child
    process: the bug can kill the process with SIGBUS."""
    for size in (64, 8):
        make_faces(tmp_path / f"img{size}", 5)
        (tmp_path / f"img{size}" / "x.jpg").write_bytes(b"this is not a jpeg" * 10)
    proc = subprocess.run([sys.executable, "-c", SKIP_CHECK, str(ROOT), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["ok", "64", "ok", "8"], proc.stderr[-2000:]
    assert not tmp_files(tmp_path)


def test_no_readable_image_is_a_data_error(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"garbage")
    (folder / "b.jpg").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(hd.DataError, match="could be read"):
            hd.faces_uint8(hd.find_celeba(folder), 16, tmp_path / "cache", workers=0, quiet=True)
    assert not tmp_files(tmp_path / "cache")


def test_unreadable_image_skipped_with_warning_in_per_image_path(tmp_path):
    """The per-image path skips a bad file as the cache path does: one warning
    per file, and the next readable image takes its place."""
    folder = tmp_path / "img"
    make_faces(folder, 2)
    (folder / "x.jpg").write_bytes(b"garbage")
    ds = hd.FaceImages(hd.find_celeba(folder))
    assert ds[0].shape == (3, 64, 64)
    with pytest.warns(UserWarning, match="x.jpg"):
        assert torch.equal(ds[2], ds[0])             # 000001.jpg, 000002.jpg, x.jpg: wraps to the first
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # warned once: no second warning
        assert torch.equal(ds[2], ds[0])
        batches = list(hd.DatasetLoader(ds, 3, "cpu").batches(0))
    assert [b.shape for b in batches] == [(3, 3, 64, 64)]


def test_per_image_path_with_no_readable_image_is_a_data_error(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"garbage")
    ds = hd.FaceImages(hd.find_celeba(folder))
    with pytest.warns(UserWarning), pytest.raises(hd.DataError, match="could be read"):
        ds[0]


def test_celeba_tensor_and_per_image_paths_identical(tmp_path):
    files = make_celeba(tmp_path / "data", "flat", n=7, size=(89, 109))
    fast = hd.TensorLoader(hd.faces_uint8(files, 64, tmp_path / "cache", workers=0, quiet=True),
                           3, "cpu", seed=4)
    slow = hd.DatasetLoader(hd.FaceImages(files, 64), 3, "cpu", seed=4)
    for epoch, skip in [(0, 0), (5, 1)]:
        a, b = list(fast.batches(epoch, skip)), list(slow.batches(epoch, skip))
        assert len(a) == len(b) == 3 - skip
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_default_cache_goes_beside_the_image_folder(tmp_path):
    files = make_celeba(tmp_path, "folder", n=2)
    hd.faces_uint8(files, 16, workers=0, quiet=True)
    assert len(list((tmp_path / ".gan_cache").glob("faces_16px_2_*.npy"))) == 1
    assert not (image_folder(tmp_path, "folder") / ".gan_cache").exists()


# ---------------------------------------------------------------- one-line errors, no side effects

def one_line_error(fn, *needles):
    """fn() raises a DataError with a one-line message holding every needle; returns the message."""
    with pytest.raises(hd.DataError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def tree(folder):
    """Every path under folder, or None when it does not exist (to see that nothing was created)."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*")) if folder.exists() else None


# ---------------------------------------------------------------- the MNIST family: reading

@pytest.mark.parametrize("name,folder", list(hd.IDX_SETS.items()))
def test_idx_sets_read_from_root_set_folder_or_raw_folder(tmp_path, name, folder):
    images, labels = make_idx_set(tmp_path, folder, n_train=40, n_test=8, seed=len(name))
    x = hd.read_idx_set(tmp_path, name)
    assert x.shape == (40, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    for where in (tmp_path / folder, tmp_path / folder / "raw"):
        assert torch.equal(hd.read_idx_set(where, name), x)
    x2, y = hd.read_idx_set(tmp_path, name, labels=True)
    assert torch.equal(x2, x) and y.dtype == torch.int64 and y.tolist() == labels.tolist()
    assert hd.read_idx_set(tmp_path, name, train=False).shape == (8, 1, 28, 28)


def test_idx_gz_files_read_like_plain_ones(tmp_path):
    images, labels = make_idx_set(tmp_path, "KMNIST", gz=True)
    assert all(p.suffix == ".gz" for p in (tmp_path / "KMNIST" / "raw").iterdir())
    x, y = hd.read_idx_set(tmp_path, "kmnist", labels=True)
    assert torch.equal(x[:, 0], torch.from_numpy(images)) and y.tolist() == labels.tolist()


def test_labels_file_needed_only_for_labels(tmp_path):
    images, _ = make_idx_set(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()
    assert torch.equal(hd.read_idx_set(tmp_path)[:, 0], torch.from_numpy(images))
    one_line_error(lambda: hd.read_idx_set(tmp_path, labels=True), "train-labels-idx1-ubyte",
                   tmp_path / "MNIST" / "raw")


def test_one_idx_set_is_never_read_as_another(tmp_path):
    """The three sets share file names: only the folder name tells them apart."""
    make_idx_set(tmp_path, "FashionMNIST")
    one_line_error(lambda: hd.read_idx_set(tmp_path, "mnist"), f"{tmp_path / 'MNIST' / 'raw'}/")
    one_line_error(lambda: hd.read_idx_set(tmp_path / "FashionMNIST", "kmnist"), "KMNIST")
    assert len(hd.read_idx_set(tmp_path / "FashionMNIST" / "raw", "fashion-mnist")) == 40


@pytest.mark.parametrize("name,folder", list(hd.IDX_SETS.items()))
def test_missing_idx_set_says_where_and_creates_nothing(tmp_path, name, folder):
    nowhere, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    for root in (nowhere, empty):
        one_line_error(lambda: hd.read_idx_set(root, name),
                       f"{folder} train files not found: put train-images-idx3-ubyte and "
                       f"train-labels-idx1-ubyte (or their .gz) in {root / folder / 'raw'}/ "
                       f"(torchvision's layout)", "--data-dir")
    assert not nowhere.exists() and tree(empty) == []


def idx_bytes(n=40, rows=28, cols=28):
    path_array = np.arange(n * rows * cols, dtype=np.int64).astype(np.uint8).reshape(n, rows, cols)
    header = np.array([2051, n, rows, cols], dtype=">u4").tobytes()
    return header + path_array.tobytes()


BAD_IMAGE_FILES = {   # how the train images file is damaged -> what the error says
    "empty": (lambda b: b"", "is truncated inside its header (0 bytes, the header alone is 16)"),
    "cut in header": (lambda b: b[:10], "is truncated inside its header (10 bytes"),
    "cut in body": (lambda b: b[:2373], "is truncated: header says 40 images of 28x28 (31376 bytes), "
                                        "file holds 2373 bytes; download it again"),
    "longer": (lambda b: b + b"\0", "is longer than its header says"),
    "labels magic": (lambda b: b"\0\0\x08\x01" + b[4:], "not an IDX images file (magic number 2049, "
                                                          "expected 2051)"),
    "html page": (lambda b: b"<!DOCTYPE html><html>not found</html>", "not an IDX images file"),
    "gzip bytes, plain name": (gzip.compress, "looks gzip-compressed"),
    "no images": (lambda b: idx_bytes(n=0), "holds no images"),
}


@pytest.mark.parametrize("damage", BAD_IMAGE_FILES)
def test_damaged_idx_file_is_one_line_naming_it(tmp_path, damage):
    make_idx_set(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    change, needle = BAD_IMAGE_FILES[damage]
    path.write_bytes(change(idx_bytes()))
    before = tree(tmp_path)
    one_line_error(lambda: hd.read_idx_set(tmp_path, download=True), path, needle)  # no download either
    assert tree(tmp_path) == before


def test_damaged_gz_and_count_mismatch_are_one_line(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    make_idx_set(tmp_path, "MNIST", gz=True)
    gz = raw / "train-images-idx3-ubyte.gz"
    good = gz.read_bytes()
    gz.write_bytes(good[:len(good) // 2])
    one_line_error(lambda: hd.read_idx_set(tmp_path), gz, "truncated (the gzip stream ends early)")
    gz.write_bytes(b"not gzip at all")
    one_line_error(lambda: hd.read_idx_set(tmp_path), gz, "not a valid gzip file")
    gz.write_bytes(good)
    labels = raw / "train-labels-idx1-ubyte.gz"
    labels.unlink()
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))   # plain beats .gz
    one_line_error(lambda: hd.read_idx_set(tmp_path), "holds 40 images but", "holds 39 labels",
                   "download both again")


def test_unreadable_idx_file_is_one_line(tmp_path, monkeypatch):
    make_idx_set(tmp_path, "MNIST")

    def denied(self):   # chmod cannot stop root, who runs these tests in some setups
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(type(tmp_path), "read_bytes", denied)
    one_line_error(lambda: hd.read_idx_set(tmp_path), "cannot read",
                   tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", "Permission denied")


# ---------------------------------------------------------------- the MNIST family: download

class FakeFashionMNIST:
    """Stands in for torchvision's FashionMNIST(root, train, download=True):
    writes what its download writes (the .gz files and the unpacked ones) into
    ROOT/FashionMNIST/raw/, or fails half way like an interrupted download."""
    fail, roots = False, []

    def __init__(self, root, train=True, download=False):
        assert download
        FakeFashionMNIST.roots.append(root)
        make_idx_set(root, "FashionMNIST", n_train=12, n_test=4, seed=9)
        raw = root / "FashionMNIST" / "raw"
        for f in list(raw.iterdir()):
            (raw / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        if self.fail:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got:\n"
                               "<urlopen error [Errno -3] Temporary failure in name resolution>")


@pytest.fixture
def fake_download(monkeypatch):
    FakeFashionMNIST.fail, FakeFashionMNIST.roots = False, []
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    return FakeFashionMNIST


def test_download_moves_only_the_raw_files_into_place(tmp_path, fake_download):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))  # the user's own files
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    x = hd.read_idx_set(tmp_path, "fashion-mnist", download=True)
    assert x.shape == (12, 1, 28, 28)
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        f"{s}-{k}" for s in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    assert len(hd.read_idx_set(tmp_path, "fashion-mnist", train=False)) == 3  # not replaced
    (temp,) = fake_download.roots
    assert temp.parent == tmp_path and not temp.exists()      # beside the data, then removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FashionMNIST"]
    hd.read_idx_set(tmp_path, "fashion-mnist", download=True)  # present: no second download
    assert len(fake_download.roots) == 1


def test_failed_download_is_one_line_and_creates_nothing(tmp_path, fake_download):
    fake_download.fail = True
    nowhere = tmp_path / "nowhere"
    one_line_error(lambda: hd.read_idx_set(nowhere, "fashion-mnist", download=True),
                   "FashionMNIST not found in", "the download failed (RuntimeError: Error downloading",
                   f"in {nowhere / 'FashionMNIST' / 'raw'}/ (torchvision's layout)")
    assert not nowhere.exists() and not fake_download.roots[0].exists()
    (tmp_path / "data").mkdir()
    one_line_error(lambda: hd.read_idx_set(tmp_path / "data", "fashion-mnist", download=True),
                   "download failed")
    assert tree(tmp_path / "data") == []


# ---------------------------------------------------------------- the MNIST family: loaders

@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_make_loader_takes_the_dataset_from_cfg(tmp_path, name, folder):
    images, _ = make_idx_set(tmp_path, folder, n_train=40)
    cfg = {"dataset": name, "data_dir": str(tmp_path), "batch_size": 16, "seed": 1,
           "num_workers": 0, "download": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = hd.make_loader("mnist", {**cfg, "input_path": "tensor"}, "cpu")  # cfg beats "mnist"
        slow = hd.make_loader("mnist", {**cfg, "input_path": "images"}, "cpu")
        a, b = list(fast.batches(0)), list(slow.batches(0))
    assert [x.shape for x in a] == [(16, 1, 28, 28), (16, 1, 28, 28), (8, 1, 28, 28)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    everything = torch.cat(a)
    assert everything.min() >= -1 and everything.max() <= 1
    expected = hd.to_float(torch.from_numpy(images).unsqueeze(1))
    assert torch.equal(everything.sort(0).values, expected.sort(0).values)  # a permutation of the set


def test_unknown_dataset_or_crop_is_one_line(tmp_path):
    one_line_error(lambda: hd.make_loader("mnist", {"dataset": "svhn"}, "cpu"),
                   "unknown dataset 'svhn'", "fashion-mnist", "cifar10")
    one_line_error(lambda: hd.make_loader("celeba", celeba_cfg(tmp_path, tmp_path, crop="square"), "cpu"),
                   "unknown crop 'square'", "center")


# ---------------------------------------------------------------- crops

def test_crop_boxes_of_the_three_crops():
    assert hd.crop_box(178, 218, "celeba") == (9, 29, 169, 189)
    assert hd.crop_box(40, 20, "center") == (10, 0, 30, 20)
    assert hd.crop_box(20, 40, "center") == (0, 10, 20, 30)
    assert hd.crop_box(40, 20, "none") == (0, 0, 40, 20)


@pytest.mark.parametrize("size", [(40, 20), (20, 40), (89, 109)])
def test_center_and_none_crops_equal_torchvision(tmp_path, size):
    path = tmp_path / "img.png"   # lossless, so the reference sees the same pixels
    face_image(5, size).save(path)
    img = Image.open(path).convert("RGB")
    center = transforms.Compose([transforms.CenterCrop(min(size)), transforms.Resize(16)])(img)
    assert np.array_equal(hd.load_face(path, 16, "center"), np.asarray(center))
    assert np.array_equal(hd.load_face(path, 16, "none"), np.asarray(transforms.Resize((16, 16))(img)))
    assert not np.array_equal(hd.load_face(path, 16, "none"), hd.load_face(path, 16, "center"))


def test_cache_key_covers_crop_and_dataset(tmp_path):
    files = make_faces(tmp_path / "img", 2, size=(89, 109))
    keys = {hd.cache_path(files, 16, tmp_path, crop, ds) for crop in hd.CROPS for ds in ("celeba", "folder")}
    assert len(keys) == 6
    for crop in hd.CROPS:
        images = hd.faces_uint8(files, 16, tmp_path / "cache", workers=0, quiet=True, crop=crop)
        assert np.array_equal(images[1].permute(1, 2, 0).numpy(), hd.load_face(files[1], 16, crop))
    assert len(list((tmp_path / "cache").iterdir())) == 3


# ---------------------------------------------------------------- folders of images

def make_tree(root):
    """Class subfolders at two depths, a top-level image, and what must be
    skipped: hidden folders (.gan_cache among them), a hidden file, a text file."""
    files = make_faces(root / "cats", 3, size=(40, 30), seed=1)
    files += make_faces(root / "dogs" / "small", 2, size=(30, 40), seed=2)
    face_image(7, (30, 30)).save(root / "top.png")
    make_faces(root / ".hidden", 2, seed=3)
    make_faces(root / ".gan_cache", 1, seed=4)
    face_image(8).save(root / "cats" / "._000001.jpg")
    (root / "notes.txt").write_text("not an image")
    return sorted(files + [root / "top.png"])


def test_folder_dataset_finds_images_recursively_and_skips_hidden(tmp_path):
    data = tmp_path / "data"
    files = make_tree(data)
    assert hd.find_images(data) == files
    cfg = {**celeba_cfg(data, tmp_path / "unused", image_size=16), "dataset": "folder", "cache_dir": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # 6 images of about 30 px for 16 px: nothing to warn about
        fast = hd.make_loader("celeba", cfg, "cpu")
        slow = hd.make_loader("celeba", {**cfg, "input_path": "images"}, "cpu")
    a, b = list(fast.batches(0)), list(slow.batches(0))
    assert [x.shape for x in a] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(list((data / ".gan_cache").glob("faces_16px_6_*.npy"))) == 1   # at the data root
    assert hd.find_images(data) == files   # the cache is never taken for data


def test_folder_without_images_is_one_line(tmp_path):
    one_line_error(lambda: hd.find_images(tmp_path / "nowhere"), "does not exist")
    make_faces(tmp_path / "data" / ".hidden", 1)
    (tmp_path / "data" / "notes.txt").write_text("x")
    one_line_error(lambda: hd.find_images(tmp_path / "data"), "no images (.bmp, .jpeg, .jpg, .png, .webp)")


def test_unlistable_folder_is_one_line(tmp_path, monkeypatch):
    make_faces(tmp_path / "a" / "locked", 2)
    real_iterdir = type(tmp_path).iterdir

    def iterdir(self):   # chmod cannot stop root, who runs these tests in some setups
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)
    monkeypatch.setattr(type(tmp_path), "iterdir", iterdir)
    for find, where in [(hd.find_images, tmp_path), (hd.find_celeba, tmp_path / "a" / "locked")]:
        one_line_error(lambda: find(where), "cannot list", tmp_path / "a" / "locked", "Permission denied")


def test_tiny_images_and_tiny_data_train_with_one_warning_each(tmp_path):
    make_faces(tmp_path / "data", 3, size=(10, 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = hd.make_loader("celeba", celeba_cfg(tmp_path / "data", tmp_path / "cache"), "cpu")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("\n" not in m for m in messages), messages
    assert "only 3 images, fewer than one batch of 4" in messages[0]
    assert "about 9x9 pixels after cropping" in messages[1] and "64x64 output" in messages[1]
    (batch,) = list(loader.batches(0))
    assert batch.shape == (3, 3, 64, 64)


# ---------------------------------------------------------------- CIFAR-10

def test_cifar10_reads_the_official_format(tmp_path):
    train = make_cifar10(tmp_path, n=3)
    x = hd.read_cifar10(tmp_path)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8
    assert np.array_equal(x.numpy(), train)
    assert torch.equal(hd.read_cifar10(tmp_path / "cifar-10-batches-py"), x)   # the folder itself
    assert hd.read_cifar10(tmp_path, train=False).shape == (3, 3, 32, 32)
    big = hd.read_cifar10(tmp_path, 64)
    assert big.shape == (15, 3, 64, 64)
    ref = hd.crop_resize(Image.fromarray(train[4].transpose(1, 2, 0)), 64, "none")
    assert np.array_equal(big[4].permute(1, 2, 0).numpy(), ref)


def test_cifar10_written_by_python3_pickle_reads_too(tmp_path):
    make_cifar10(tmp_path, n=3)
    data = np.full((2, 3072), 7, np.uint8)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        pickle.dumps({b"data": data, b"labels": [1, 2], b"filenames": [b"a.png", b"b.png"]}))
    assert hd.read_cifar10(tmp_path).shape == (14, 3, 32, 32)


def test_cifar10_loader_both_paths_identical(tmp_path):
    make_cifar10(tmp_path, n=3)
    cfg = {**celeba_cfg(tmp_path, tmp_path / "cache", image_size=32), "dataset": "cifar10"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = hd.make_loader("celeba", cfg, "cpu")
        slow = hd.make_loader("celeba", {**cfg, "input_path": "images"}, "cpu")
    a, b = list(fast.batches(2)), list(slow.batches(2))
    assert [x.shape for x in a] == [(4, 3, 32, 32)] * 3 + [(3, 3, 32, 32)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.cat(a).min() >= -1 and torch.cat(a).max() <= 1
    assert not (tmp_path / "cache").exists()   # nothing to cache


class Evil:
    """Pickles as a call to os.mkdir: a stand-in for a pickle that runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(tmp_path, n=2)
    marker = tmp_path / "code_ran"
    for payload in (Evil(str(marker)), {b"data": np.zeros((2, 3072), np.uint8), b"labels": Evil(str(marker))}):
        (folder / "data_batch_2").write_bytes(pickle.dumps(payload))
        one_line_error(lambda: hd.read_cifar10(tmp_path), folder / "data_batch_2", "mkdir",
                       "refused", "use only the official files")
        assert not marker.exists()


BAD_CIFAR = {   # what data_batch_1 holds -> what the error says
    "cut": (lambda good: good[:len(good) // 2], "is damaged"),
    "not a dict": (lambda good: pickle.dumps([1, 2, 3]), "is not a CIFAR-10 batch"),
    "float data": (lambda good: pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}),
                   "is not a CIFAR-10 batch"),
    "no labels": (lambda good: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "b'labels'"),
    "count mismatch": (lambda good: py2_batch_pickle(np.zeros((2, 3072), np.uint8), [1]),
                       "holds 2 images but 1 labels"),
    # declares 100,000 images and leaves out the bytes that would fill them: refused before allocating
    "array bomb": (lambda good: pickle.dumps({b"data": _ArrayBomb(), b"labels": [0] * 100_000}),
                   "is damaged"),
}


class _ArrayBomb:
    def __reduce__(self):
        return np.zeros(0).__reduce__()[0], (np.ndarray, (100_000, 3072), np.dtype(np.uint8))


@pytest.mark.parametrize("damage", BAD_CIFAR)
def test_damaged_cifar10_is_one_line(tmp_path, damage):
    make_cifar10(tmp_path, n=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    change, needle = BAD_CIFAR[damage]
    path.write_bytes(change(path.read_bytes()))
    one_line_error(lambda: hd.read_cifar10(tmp_path), path, needle)


def test_missing_cifar10_says_where(tmp_path):
    one_line_error(lambda: hd.read_cifar10(tmp_path / "nowhere"), "data_batch_1 not found in",
                   tmp_path / "nowhere" / "cifar-10-batches-py", "cs.toronto.edu")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    one_line_error(lambda: hd.read_cifar10(tmp_path), "unpack it first")
    assert not (tmp_path / "cifar-10-batches-py").exists() and not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- cache robustness

def test_damaged_cache_is_rebuilt(tmp_path):
    files = make_faces(tmp_path / "img", 3)
    cache = tmp_path / "cache"
    good = hd.faces_uint8(files, 16, cache, workers=0, quiet=True)
    (npy,) = cache.iterdir()
    for damage in (b"garbage", npy.read_bytes()[:200]):
        npy.write_bytes(damage)
        with pytest.warns(UserWarning, match="rebuilding it"):
            assert torch.equal(hd.faces_uint8(files, 16, cache, workers=0, quiet=True), good)
    np.save(npy, np.zeros((3, 3, 8, 8), np.uint8))   # another size under this name
    with pytest.warns(UserWarning, match="wrong shape"):
        assert torch.equal(hd.faces_uint8(files, 16, cache, workers=0, quiet=True), good)
    assert sorted(cache.iterdir()) == [npy]


def test_stale_temp_files_of_dead_builds_are_removed(tmp_path):
    files = make_faces(tmp_path / "img", 2)
    cache = tmp_path / "cache"
    cache.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    stale = cache / f"faces_16px_9_0123456789ab.tmp{gone.pid}.npy"
    alive = cache / "faces_16px_9_0123456789ab.tmp1.npy"          # PID 1 always runs
    other = cache / f"notes.tmp{gone.pid}.npy"                     # not ours
    for f in (stale, alive, other):
        f.write_bytes(b"half written")
    hd.faces_uint8(files, 16, cache, workers=0, quiet=True)
    assert not stale.exists() and alive.exists() and other.exists()


def test_read_only_cache_dir_is_one_line(tmp_path, monkeypatch):
    files = make_faces(tmp_path / "img", 2)
    cache = tmp_path / "cache"
    cache.mkdir()

    def read_only(path, *a, **k):   # chmod cannot stop root, who runs these tests in some setups
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(np.lib.format, "open_memmap", read_only)
    one_line_error(lambda: hd.faces_uint8(files, 16, cache, workers=0, quiet=True),
                   "cannot write the cache file", cache, "Permission denied", "--cache-dir")
    assert tree(cache) == []


def test_ctrl_c_during_cache_build_leaves_no_temp_file(tmp_path, monkeypatch):
    files = make_faces(tmp_path / "img", 2)
    cache = tmp_path / "cache"

    def interrupted(files, size, tmp, *a, **k):
        tmp.write_bytes(b"half written")
        raise KeyboardInterrupt
    monkeypatch.setattr(hd, "_decode_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hd.faces_uint8(files, 16, cache, workers=0, quiet=True)
    assert tree(cache) == []


# ---------------------------------------------------------------- full-size data

def test_cache_is_written_in_chunks_with_a_bad_image_among_them(tmp_path, monkeypatch):
    """Chunks of 2 images (the real size: 1024) across a skipped file: the cache
    holds every readable image, in order, and nothing after them."""
    monkeypatch.setattr(hd, "CHUNK_IMAGES", 2)
    files = make_faces(tmp_path / "img", 6)
    files[2].write_bytes(b"this is not a jpeg" * 10)
    with pytest.warns(UserWarning, match="skipping"):
        images = hd.faces_uint8(files, 16, tmp_path / "cache", workers=0, quiet=True)
    good = [f for i, f in enumerate(files) if i != 2]
    assert torch.equal(images, torch.stack([torch.from_numpy(hd.load_face(f, 16)).permute(2, 0, 1) for f in good]))
    (npy,) = (tmp_path / "cache").iterdir()
    assert npy.stat().st_size == np.load(npy, mmap_mode="r").offset + images.numel()


@pytest.mark.parametrize("free, kept", [(301_056, True), (301_055, False)])
def test_images_that_do_not_fit_the_device_stay_in_host_memory(mnist_root, capsys, free, kept):
    """The choice comes from the bytes needed against the device's free memory
    (here given; on CUDA asked for): 150,528 bytes of MNIST fit in half of 301,056.
    Both ways give the same batches, and the host way says so."""
    images = hd.read_idx_set(mnist_root)
    plain = hd.TensorLoader(images, 32, "cpu", seed=4)
    limited = hd.TensorLoader(images, 32, "cpu", seed=4, free_bytes=free)
    assert limited.on_device == kept
    out = capsys.readouterr().out
    assert ("kept in host memory" in out) == (not kept)
    for a, b in zip(plain.batches(1, skip=1), limited.batches(1, skip=1), strict=True):
        assert torch.equal(a, b)

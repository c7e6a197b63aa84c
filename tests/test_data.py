"""helper_data: [-1, 1] conversion, MNIST from IDX files, CelebA folders in the
three layouts, crop/resize, the decode cache, shuffled batches and the two
input paths (tensor and per image)."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import helper_data as hd
from conftest import N_MNIST, ROOT, face_image, image_folder, make_celeba, make_faces


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

def test_mnist_uint8_reads_idx_files(mnist_root, mnist_images):
    x = hd.mnist_uint8(mnist_root, download=False)
    assert x.shape == (N_MNIST, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(mnist_images.copy()))
    # pointing at the MNIST folder itself works too
    assert torch.equal(hd.mnist_uint8(mnist_root / "MNIST", download=False), x)


def test_tensor_loader_mnist_batches(mnist_root):
    loader = hd.TensorLoader(hd.mnist_uint8(mnist_root, download=False), 50, "cpu", seed=1)
    batches = list(loader.batches(0))
    assert len(loader) == len(batches) == 4                       # 192 = 50 + 50 + 50 + 42
    assert [len(b) for b in batches] == [50, 50, 50, 42]
    for b in batches:
        assert b.shape[1:] == (1, 28, 28) and b.dtype == torch.float32
        assert b.min() >= -1 and b.max() <= 1
    assert torch.cat(batches).min() == -1 and torch.cat(batches).max() == 1


def test_missing_mnist_is_a_clear_data_error(tmp_path):
    with pytest.raises(hd.DataError) as e:
        hd.mnist_uint8(tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert "MNIST" in msg and "train-images-idx3-ubyte" in msg and "--data-dir" in msg
    assert str(tmp_path / "nowhere") in msg and "\n" not in msg


def test_mnist_per_image_path_equals_tensor_path(mnist_root):
    fast = hd.TensorLoader(hd.mnist_uint8(mnist_root, download=False), 32, "cpu", seed=7)
    slow = hd.DatasetLoader(hd.MnistImages(mnist_root, download=False), 32, "cpu", seed=7)
    assert len(fast) == len(slow) == 6
    for epoch, skip in [(0, 0), (1, 0), (1, 4)]:
        a, b = list(fast.batches(epoch, skip)), list(slow.batches(epoch, skip))
        assert len(a) == len(b) == 6 - skip
        for x, y in zip(a, b):
            assert x.dtype == y.dtype == torch.float32
            assert torch.equal(x, y)


def test_loaders_leave_global_rng_alone(mnist_root):
    fast = hd.TensorLoader(hd.mnist_uint8(mnist_root, download=False), 64, "cpu", seed=7)
    slow = hd.DatasetLoader(hd.MnistImages(mnist_root, download=False), 64, "cpu", seed=7)
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
    monkeypatch.setattr(hd, "_build_cache", no_rebuild)
    again = hd.faces_uint8(files, 64, cache, workers=0, quiet=True)
    assert torch.equal(again, first) and npy.stat().st_mtime_ns == mtime


def test_faces_cache_rebuilt_when_a_file_or_the_size_changes(tmp_path, monkeypatch):
    files = make_faces(tmp_path / "img", 4)
    cache = tmp_path / "cache"
    first = hd.faces_uint8(files, 64, cache, workers=0, quiet=True)
    builds = []
    real_build = hd._build_cache
    monkeypatch.setattr(hd, "_build_cache", lambda *a, **k: (builds.append(a), real_build(*a, **k)))

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


def test_unreadable_image_named_in_per_image_path(tmp_path):
    folder = tmp_path / "img"
    make_faces(folder, 2)
    (folder / "x.jpg").write_bytes(b"garbage")
    ds = hd.FaceImages(hd.find_celeba(folder))
    assert ds[0].shape == (3, 64, 64)
    with pytest.raises(hd.DataError, match="x.jpg"):
        ds[2]
    loader = hd.DatasetLoader(ds, 3, "cpu")
    with pytest.raises(hd.DataError, match="x.jpg"):
        list(loader.batches(0))


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

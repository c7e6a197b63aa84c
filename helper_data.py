"""Data for the two GANs: MNIST and CelebA faces, as [-1, 1] float batches.

Two input paths give the same batches for the same seed:
- fast (default): the whole data set lives as one uint8 tensor on the training
  device (MNIST straight from its IDX files, CelebA decoded once into a .npy
  cache); each batch is an index into it plus a cheap uint8 -> float step.
- per image (`--input-path images`): a Dataset that opens and converts every
  image every epoch, as the lecture does; kept for custom folders and to
  compare against.
Shuffling comes from a generator seeded with (seed, epoch), never from the
global RNG, so the order is reproducible, resumable mid-epoch and shardable
across distributed ranks.
"""
import hashlib
import os
import sys
import time
import warnings
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CACHE_VERSION = 1  # bump when the decode/crop/resize code changes, to invalidate caches
CELEBA_HELP = (
    "get CelebA's aligned faces (img_align_celeba.zip) from the CelebA page "
    "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive or Baidu), unzip it and pass "
    "--data-dir to a folder laid out as DIR/celeba/img_align_celeba/*.jpg "
    "(torchvision's layout, with list_eval_partition.txt beside img_align_celeba/ to use the "
    "train split), DIR/img_align_celeba/*.jpg, or DIR/*.jpg")


class DataError(Exception):
    """A data set that is missing or unusable; the message says how to fix it."""


class Progress:
    """A one-line progress report: done/total, rate, elapsed and time left."""

    def __init__(self, total, label, every_s=2.0, stream=sys.stdout, deadline=None):
        self.total, self.label, self.every_s, self.stream = total, label, every_s, stream
        self.start = self.last = time.time()
        self.deadline = deadline  # a time budget's end (time.time()), if any

    def update(self, done, extra="", force=False):
        now = time.time()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / done * (self.total - done) if done else float("nan")
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - now))
        print(f"{self.label} {done}/{self.total} {extra} elapsed {_hms(elapsed)} "
              f"left {_hms(left)}", file=self.stream, flush=True)


def _hms(seconds):
    if seconds != seconds:  # NaN: nothing done yet
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def to_float(batch_uint8):
    """uint8 N x C x H x W -> float in [-1, 1], with exactly the operations of
    torchvision's ToTensor + Normalize(0.5, 0.5), so both paths agree bit for bit."""
    return batch_uint8.float().div_(255).sub_(0.5).div_(0.5)


# ---------------------------------------------------------------- MNIST

def mnist_uint8(data_dir, download=True, train=True):
    """MNIST images as a uint8 tensor N x 1 x 28 x 28 (labels are not needed).
    Reads DIR/MNIST/raw/ as torchvision lays it out; downloads when absent."""
    from torchvision.datasets import MNIST
    root = Path(data_dir)
    if root.name == "MNIST" and (root / "raw").is_dir():  # user pointed at the MNIST folder itself
        root = root.parent
    try:
        ds = MNIST(root, train=train, download=False)
    except RuntimeError:
        if not download:
            raise DataError(f"MNIST not found in {root / 'MNIST' / 'raw'}: {_mnist_help(root)}")
        try:
            ds = MNIST(root, train=train, download=True)
        except Exception as e:  # no network, read-only folder, ...
            raise DataError(f"MNIST not found in {root / 'MNIST' / 'raw'} and the download "
                            f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                            f"{_mnist_help(root)}") from None
    return ds.data.unsqueeze(1).contiguous()  # N x 1 x 28 x 28 uint8


def _mnist_help(root):
    return (f"put train-images-idx3-ubyte and train-labels-idx1-ubyte (and the t10k files) "
            f"in {root / 'MNIST' / 'raw'}, or pass --data-dir to the folder that holds MNIST/")


class MnistImages(torch.utils.data.Dataset):
    """The lecture's per-image MNIST path: PIL image -> ToTensor -> Normalize."""

    def __init__(self, data_dir, download=True):
        from torchvision import transforms
        self.images = mnist_uint8(data_dir, download)
        self.transform = transforms.Compose([transforms.ToTensor(),
                                             transforms.Normalize((0.5,), (0.5,))])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i, 0].numpy(), mode="L"))


# ---------------------------------------------------------------- CelebA

def find_celeba(data_dir):
    """Image files of CelebA (or any folder of faces), sorted. Accepts
    DIR/celeba/img_align_celeba/, DIR/img_align_celeba/ or DIR itself; with
    list_eval_partition.txt beside the image folder only the train split is used."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: {CELEBA_HELP}")
    for folder in (root / "celeba" / "img_align_celeba", root / "img_align_celeba", root):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if files:
                return _train_split(files, folder.parent / "list_eval_partition.txt")
    zips = list(root.glob("**/img_align_celeba.zip"))
    hint = f"found {zips[0]}: unzip it first; " if zips else ""
    raise DataError(f"no face images found in {root}, {root / 'img_align_celeba'} or "
                    f"{root / 'celeba' / 'img_align_celeba'}: {hint}{CELEBA_HELP}")


def _train_split(files, partition_file):
    """CelebA's official partition: 0 = train, 1 = valid, 2 = test (the lecture trains on train)."""
    if not partition_file.is_file():
        return files
    train = {line.split()[0] for line in partition_file.read_text().splitlines()
             if len(line.split()) == 2 and line.split()[1] == "0"}
    kept = [f for f in files if f.name in train]
    if not kept:
        raise DataError(f"{partition_file} names no train images found in {files[0].parent}: "
                        f"delete or fix it")
    return kept


def crop_box(width, height):
    """Center square crop: 160 of CelebA's 178 x 218, scaled with the width
    (80 x 80 for the 89 x 109 half-size copy), never larger than the image.
    Same rounding as torchvision's CenterCrop."""
    c = min(round(width * 160 / 178), width, height)
    top, left = int(round((height - c) / 2.0)), int(round((width - c) / 2.0))
    return left, top, left + c, top + c


def load_face(path, size=64):
    """One image -> uint8 array size x size x 3 (crop, then bilinear resize as
    torchvision's Resize does on PIL images). Raises DataError naming the file."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img = img.crop(crop_box(*img.size)).resize((size, size), Image.BILINEAR)
            return np.array(img, dtype=np.uint8)  # a writable copy
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


class FaceImages(torch.utils.data.Dataset):
    """The per-image path: decode, crop, resize and normalize each image on every access."""

    def __init__(self, files, size=64):
        self.files, self.size = list(files), size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        arr = load_face(self.files[i], self.size)
        return to_float(torch.from_numpy(arr).permute(2, 0, 1))  # 3 x size x size in [-1, 1]


def default_cache_dir(folder):
    """FOLDER/.gan_cache when FOLDER is writable, else the user's cache folder.
    The mode bits are checked too: os.access says yes to root even for folders
    marked read-only, such as shared data sets."""
    folder = Path(folder)
    if folder.is_dir() and os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:
        return folder / ".gan_cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan-lecture"


def cache_path(files, size, cache_dir):
    """Cache file named by a hash of what it depends on: the files (name, size,
    mtime), the output size and the code version. Any change means a rebuild."""
    h = hashlib.sha1(f"v{CACHE_VERSION} size={size} crop=160/178".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"faces_{size}px_{len(files)}_{h.hexdigest()[:12]}.npy"


def _load_or_none(args):
    path, size = args
    try:
        return load_face(path, size)
    except DataError as e:
        return str(e)


def faces_uint8(files, size=64, cache_dir=None, workers=2, quiet=False):
    """All faces as a uint8 tensor N x 3 x size x size, decoded once into a
    .npy cache and read back on later runs. Unreadable files are skipped with
    a warning. The cache is written to a temporary file, then renamed."""
    folder = files[0].parent   # beside img_align_celeba/, or inside a plain folder of images
    root = folder.parent if folder.name == "img_align_celeba" else folder
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(root)
    path = cache_path(files, size, cache_dir)
    if not path.exists():
        _build_cache(files, size, path, workers, quiet)
    try:
        return torch.from_numpy(np.load(path))
    except (OSError, ValueError) as e:
        raise DataError(f"cache file {path} is unreadable ({e}): delete it to rebuild") from None


def _build_cache(files, size, path, workers, quiet):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create cache folder {path.parent} ({e}): pass --cache-dir "
                        f"to a writable folder") from None
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    try:
        _decode_into(files, size, tmp, workers, quiet, path.name)
        os.replace(tmp, path)
    finally:   # an error or Ctrl-C leaves no half-written file behind
        tmp.unlink(missing_ok=True)


def _decode_into(files, size, tmp, workers, quiet, name):
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(files), 3, size, size))
    progress = Progress(len(files), f"caching faces into {name}:", stream=sys.stderr)
    kept, bad = 0, []
    jobs = ((f, size) for f in files)
    with Pool(max(1, workers)) if workers > 0 else _Serial() as pool:
        for i, arr in enumerate(pool.imap(_load_or_none, jobs, chunksize=64)):
            if isinstance(arr, str):
                bad.append(arr)
                warnings.warn(f"skipping {arr}", stacklevel=2)
            else:
                out[kept] = arr.transpose(2, 0, 1)
                kept += 1
            if not quiet:
                progress.update(i + 1)
    if kept == 0:
        del out
        raise DataError(f"none of the {len(files)} images in {files[0].parent} could be read "
                        f"(first error: {bad[0]})")
    out.flush()
    del out
    if bad:  # rewrite without the unused tail (read it all first: np.save truncates the file)
        np.save(tmp, np.load(tmp)[:kept])
    if not quiet:
        progress.update(len(files), force=True)


class _Serial:
    """Pool stand-in for workers=0 (tests, debugging)."""
    imap = staticmethod(lambda fn, it, chunksize=1: map(fn, it))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- batching

class ShuffledBatches:
    """Batch indices for one epoch: a permutation seeded by (seed, epoch),
    split over `world` ranks (padded by wrapping, like DistributedSampler),
    cut into batches; `skip` drops the first batches when resuming mid-epoch."""

    def __init__(self, n, batch_size, seed=0, rank=0, world=1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.skip = 0, 0
        self.per_rank = -(-n // world)

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def __len__(self):
        return -(-self.per_rank // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        perm = torch.cat([perm, perm[: self.per_rank * self.world - self.n]])[self.rank::self.world]
        for start in range(self.skip * self.batch_size, len(perm), self.batch_size):
            yield perm[start:start + self.batch_size]


class TensorLoader:
    """Fast path: the whole data set as uint8 on `device`; batches are index + to_float."""

    def __init__(self, images_uint8, batch_size, device, seed=0, rank=0, world=1):
        self.images = images_uint8.to(device)
        self.sampler = ShuffledBatches(len(images_uint8), batch_size, seed, rank, world)

    def __len__(self):
        return len(self.sampler)

    def batches(self, epoch, skip=0):
        self.sampler.set_epoch(epoch, skip)
        for idx in self.sampler:
            # index_select: same result as images[idx], several times cheaper on the CPU
            yield to_float(self.images.index_select(0, idx.to(self.images.device)))


class DatasetLoader:
    """Per-image path: a DataLoader over a Dataset, same batch order as TensorLoader."""

    def __init__(self, dataset, batch_size, device, seed=0, rank=0, world=1, num_workers=0):
        self.device = torch.device(device)
        self.sampler = ShuffledBatches(len(dataset), batch_size, seed, rank, world)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
            generator=torch.Generator())  # keeps the global RNG (noise, dropout) untouched

    def __len__(self):
        return len(self.sampler)

    def batches(self, epoch, skip=0):
        self.sampler.set_epoch(epoch, skip)
        for x in self.loader:
            yield x.to(self.device, non_blocking=True)


def make_loader(dataset, cfg, device, rank=0, world=1):
    """The loader a script trains on. dataset: 'mnist' or 'celeba'; cfg has
    data_dir, batch_size (per rank), seed, input_path, num_workers, image_size, cache_dir."""
    common = dict(batch_size=cfg["batch_size"], device=device, seed=cfg["seed"], rank=rank, world=world)
    fast = cfg.get("input_path", "tensor") == "tensor"
    if dataset == "mnist":
        if fast:
            return TensorLoader(mnist_uint8(cfg["data_dir"]), **common)
        return DatasetLoader(MnistImages(cfg["data_dir"]), num_workers=cfg["num_workers"], **common)
    files = find_celeba(cfg["data_dir"])
    if fast:
        images = faces_uint8(files, cfg["image_size"], cfg.get("cache_dir"),
                             workers=max(1, cfg["num_workers"]), quiet=rank != 0)
        return TensorLoader(images, **common)
    return DatasetLoader(FaceImages(files, cfg["image_size"]), num_workers=cfg["num_workers"], **common)

"""Data for the GANs as [-1, 1] float batches: the MNIST family from IDX files
(MNIST, Fashion-MNIST, KMNIST; 1 x 28 x 28) and RGB images (CelebA faces, any
folder of images, CIFAR-10, StackedMNIST; 3 x size x size).

Two input paths give the same batches for the same seed:
- fast (default): the whole data set lives as one uint8 tensor on the training
  device (IDX and CIFAR-10 files read straight into memory, image folders
  decoded once into a .npy cache); each batch is an index into it plus a cheap
  uint8 -> float step.
- per image (`--input-path images`): a Dataset that converts every image on
  every access, as the lecture does; kept for custom folders and to compare
  against.
Shuffling comes from a generator seeded with (seed, epoch), never from the
global RNG, so the order is reproducible, resumable mid-epoch and shardable
across distributed ranks.

Read top to bottom: the entry points (make_loader, dataset_images), the two
loaders, then the readers of each format, the crop and resize, and the cache.

With cfg["conditional"] the loaders yield (images, int64 labels) pairs instead
of images: the labels are indexed by the same shuffled indices, so they travel
with their images through both paths, sharding and a mid-epoch resume. Labels
come from the IDX label files, CIFAR-10's batches and the first folder level
of a `--dataset folder` tree; the loader's `classes` names them.

Every unusable input ends in a DataError whose one-line message says what is
wrong and where to put which files. Reading never creates folders; only the
opt-in download and the cache build write.
"""
import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import warnings
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from helper_files import Progress, atomic_write, remove_stale_temps
from helper_flags import CROPS, DATASETS, DEFAULT_CROP, IDX_SETS

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CACHE_VERSION = 2  # bump when the decode/crop/resize code or the cache key changes
CELEBA_HELP = (
    "get CelebA's aligned faces (img_align_celeba.zip) from the CelebA page "
    "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive or Baidu), unzip it and pass "
    "--data-dir to a folder laid out as DIR/celeba/img_align_celeba/*.jpg "
    "(torchvision's layout, with list_eval_partition.txt beside img_align_celeba/ to use the "
    "train split), DIR/img_align_celeba/*.jpg, or DIR/*.jpg")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_HELP = (
    f"get the 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
    f"www.cs.toronto.edu/~kriz/cifar.html, unpack it and pass --data-dir to the folder that "
    f"holds {CIFAR_FOLDER}/ (torchvision's layout)")


class DataError(Exception):
    """A data set that is missing or unusable; the message says how to fix it."""



# ---------------------------------------------------------------- entry points

def make_loader(dataset, cfg, device, rank=0, world=1):
    """The loader a script trains on. The data set is cfg["dataset"] (one of
    DATASETS), else the `dataset` argument. cfg keys: data_dir, batch_size (per
    rank), seed, input_path (tensor | images), num_workers; IDX sets: download
    (default True: fetch missing files); RGB sets: image_size, crop (default
    DEFAULT_CROP[dataset]), cache_dir (celeba, folder)."""
    name = cfg.get("dataset") or dataset
    _check_choice("dataset", name, DATASETS)
    crop = cfg.get("crop") or DEFAULT_CROP.get(name)
    if crop is not None:
        _check_choice("crop", crop, CROPS)
    fast = cfg.get("input_path", "tensor") == "tensor"
    labels, classes = None, None
    if cfg.get("conditional"):
        source, side, (labels, classes) = _labelled_source(name, cfg, crop, fast, quiet=rank != 0)
    else:
        source, side = _source(name, cfg, crop, fast, quiet=rank != 0)
    if rank == 0:
        _warn_if_small(len(source), cfg["batch_size"] * world, side, cfg.get("image_size"))
    common = dict(batch_size=cfg["batch_size"], device=device, seed=cfg["seed"], rank=rank, world=world)
    if fast:
        loader = TensorLoader(source, labels=labels, **common)
    else:
        loader = DatasetLoader(source, num_workers=cfg["num_workers"], **common)
    loader.classes = classes   # None: unconditional batches (images only)
    return loader


def dataset_images(cfg, train=True, labels=False):
    """All images of cfg's data set as uint8 N x C x H x W, as training sees them
    (same crop, size and cache); `train=False`: the IDX sets' test split.
    labels=True: (images, int64 labels N), the labels a --conditional run trains
    on, in the images' order; a DataError for data without labels."""
    name = cfg["dataset"]
    if name in IDX_SETS:
        return read_idx_set(cfg["data_dir"], name, train=train, labels=labels)
    crop = cfg.get("crop") or DEFAULT_CROP[name]
    cfg = {**cfg, "num_workers": cfg.get("num_workers", 2)}
    if labels:
        images, _, (found, _) = _labelled_source(name, cfg, crop, True, quiet=False)
        return images, found
    return _source(name, cfg, crop, True, quiet=False)[0]


def _source(name, cfg, crop, fast, quiet):
    """(uint8 images N x C x H x W, or a per-image Dataset; the side of the
    cropped source images, None for the IDX sets, which are never resized)."""
    if name in IDX_SETS:
        images = read_idx_set(cfg["data_dir"], name, download=cfg.get("download", True))
        return (images if fast else PerImage(images)), None
    size = cfg["image_size"]
    if name == "stacked-mnist":   # built from MNIST, whose 28 x 28 side is known
        images = stacked_mnist(cfg["data_dir"], size, cfg["seed"], download=cfg.get("download", False))
        return (images if fast else PerImage(images)), 28
    if name == "cifar10":
        images = read_cifar10(cfg["data_dir"], size, crop)
        return (images if fast else PerImage(images)), _side(32, 32, crop)
    files = find_celeba(cfg["data_dir"]) if name == "celeba" else find_images(cfg["data_dir"])
    side = _first_image_side(files, crop)
    if not fast:
        return FaceImages(files, size, crop), side
    cache_dir = cfg.get("cache_dir") or (default_cache_dir(cfg["data_dir"]) if name == "folder" else None)
    return faces_uint8(files, size, cache_dir, workers=max(1, cfg["num_workers"]), quiet=quiet,
                       crop=crop, dataset=name), side


# Class names of the labelled sets, in label order.
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
LABELLED_HELP = ("--conditional needs class labels: use mnist, fashion-mnist, kmnist, cifar10, or "
                 "--dataset folder with one subfolder per class (DIR/class_a/*.jpg, DIR/class_b/*.jpg)")


def _labelled_source(name, cfg, crop, fast, quiet):
    """_source's (images or Dataset, side) and (int64 labels N, class names),
    for --conditional; a DataError where the data has no labels or one class."""
    if name in IDX_SETS:
        images, labels = read_idx_set(cfg["data_dir"], name, labels=True, download=cfg.get("download", True))
        found = (images if fast else PerImage(images, labels)), None
    elif name == "cifar10":
        images, labels = read_cifar10(cfg["data_dir"], cfg["image_size"], crop, labels=True)
        found = (images if fast else PerImage(images, labels)), _side(32, 32, crop)
    elif name == "folder":
        files = find_images(cfg["data_dir"])
        labels, classes = folder_classes(cfg["data_dir"], files)
        if not fast:
            return (FaceImages(files, cfg["image_size"], crop, labels), _first_image_side(files, crop),
                    _checked(labels, classes, cfg["data_dir"]))
        images, side = _source(name, cfg, crop, fast, quiet)
        if len(images) != len(files):   # the cache skipped unreadable files: labels would shift
            raise DataError(f"{len(files) - len(images)} of the {len(files)} images in {cfg['data_dir']} "
                            f"could not be read, and --conditional needs every image with its label: "
                            f"remove the unreadable files (named when the cache was built)")
        return images, side, _checked(labels, classes, cfg["data_dir"])
    else:
        raise DataError(f"{name} has no class labels: {LABELLED_HELP}")
    return (*found, _checked(labels, CLASS_NAMES[name], cfg["data_dir"]))


def _checked(labels, classes, where):
    """(labels, classes) when every label names a class and there are two classes at least."""
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"the labels in {where} run from {int(labels.min())} to {int(labels.max())}, "
                        f"outside the {len(classes)} classes: download the files again")
    present = torch.unique(labels).tolist()
    if len(present) < 2:
        raise DataError(f"the images in {where} all have one class ({classes[present[0]]!r}), and a "
                        f"conditional GAN needs two at least: {LABELLED_HELP}")
    return labels, classes


def folder_classes(data_dir, files):
    """(int64 labels, class names) of image files under data_dir: the class of a
    file is its first folder level (DIR/cat/a.jpg and DIR/cat/x/b.jpg: cat),
    classes sorted by name. Files directly in data_dir have none: a DataError."""
    root = Path(data_dir)
    first = [f.relative_to(root).parts for f in files]
    loose = [f for f, parts in zip(files, first) if len(parts) == 1]
    if loose:
        raise DataError(f"{len(loose)} images lie directly in {root} (e.g. {loose[0].name}), outside "
                        f"any class subfolder: {LABELLED_HELP}")
    classes = sorted({parts[0] for parts in first})
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[parts[0]] for parts in first], dtype=torch.int64), classes


def _side(width, height, crop):
    left, top, right, bottom = crop_box(width, height, crop)
    return min(right - left, bottom - top)


def _first_image_side(files, crop):
    """The cropped side of the first image, from its header alone (None if unreadable)."""
    try:
        with Image.open(files[0]) as img:
            return _side(*img.size, crop)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _warn_if_small(n, batch_size, side, size):
    """Tiny data trains, but rarely on purpose: say so once."""
    if n < batch_size:
        warnings.warn(f"only {n} images, fewer than one batch of {batch_size}: every epoch is "
                      f"one smaller batch", stacklevel=3)
    if side is not None and size and side * 2 < size:
        warnings.warn(f"the images are about {side}x{side} pixels after cropping, much smaller "
                      f"than the {size}x{size} output: they are upscaled and will look blurry",
                      stacklevel=3)



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
    """Fast path: the whole data set as uint8, batches are index + to_float.
    The images live on `device` when they fit (images_fit), else in host memory,
    each batch gathered into pinned memory (on CUDA) and copied without waiting.
    free_bytes: the device's free memory (None: ask CUDA; on a CPU, they fit).
    With labels (int64 N): (images, labels) pairs, the same index."""

    def __init__(self, images_uint8, batch_size, device, seed=0, rank=0, world=1, free_bytes=None,
                 labels=None):
        self.device = torch.device(device)
        if free_bytes is None and self.device.type == "cuda":
            free_bytes = torch.cuda.mem_get_info(self.device)[0]
        needed = images_uint8.numel()
        self.on_device = free_bytes is None or images_fit(needed, free_bytes)
        self.images = images_uint8.to(self.device) if self.on_device else images_uint8
        self.labels = labels.to(self.device) if labels is not None else None
        if rank == 0 and (self.device.type != "cpu" or not self.on_device):
            print(placement_line(needed, free_bytes, self.device, self.on_device), flush=True)
        self.sampler = ShuffledBatches(len(images_uint8), batch_size, seed, rank, world)

    def __len__(self):
        return len(self.sampler)

    def batches(self, epoch, skip=0):
        self.sampler.set_epoch(epoch, skip)
        for idx in self.sampler:
            idx = idx.to(self.images.device)
            # index_select: same result as images[idx], several times cheaper on the CPU
            if self.on_device:
                images = to_float(self.images.index_select(0, idx))
            else:   # the caching host allocator reuses a pinned buffer only once its copy has finished
                batch = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8,
                                    pin_memory=self.device.type == "cuda")
                torch.index_select(self.images, 0, idx, out=batch)
                images = to_float(batch.to(self.device, non_blocking=True))
            yield images if self.labels is None else (images, self.labels.index_select(0, idx.to(self.device)))


# The images stay on the training device if they take at most this share of its
# free memory; the rest is for the networks, their activations and optimizers.
DEVICE_SHARE = 0.5


def images_fit(needed_bytes, free_bytes):
    return needed_bytes <= DEVICE_SHARE * free_bytes


def placement_line(needed, free, device, on_device):
    gb = lambda n: f"{n / 1e9:.2f} GB"   # noqa: E731
    if on_device:
        return f"data: {gb(needed)} of images kept on {device} ({gb(free)} free)"
    return (f"data: {gb(needed)} of images is more than half of the {gb(free)} free on {device}: "
            f"kept in host memory, each batch copied over from {'pinned ' * (device.type == 'cuda')}memory")


class DatasetLoader:
    """Per-image path: a DataLoader over a Dataset, same batch order as TensorLoader;
    a Dataset of (image, label) items gives (images, labels) batches."""

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
            if isinstance(x, list):   # collated (images, labels)
                yield tuple(t.to(self.device, non_blocking=True) for t in x)
            else:
                yield x.to(self.device, non_blocking=True)



def to_float(batch_uint8):
    """uint8 N x C x H x W -> float in [-1, 1], with exactly the operations of
    torchvision's ToTensor + Normalize(0.5, 0.5), so both paths agree bit for bit."""
    return batch_uint8.float().div_(255).sub_(0.5).div_(0.5)


class PerImage(torch.utils.data.Dataset):
    """The lecture's per-image path over images already in memory (IDX sets,
    CIFAR-10): each access makes a PIL image and converts it back, as
    ToTensor + Normalize would (to_float: the same numbers).
    images_uint8: N x C x H x W with C = 1 or 3; items are C x H x W in [-1, 1],
    or (image, label) with labels (int64 N)."""

    def __init__(self, images_uint8, labels=None):
        self.images, self.labels = images_uint8, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i].permute(1, 2, 0).squeeze(2).numpy()  # H x W (grey) or H x W x 3
        arr = np.array(Image.fromarray(img), dtype=np.uint8)      # a writable copy
        x = torch.from_numpy(arr)
        x = to_float(x[None] if x.dim() == 2 else x.permute(2, 0, 1))
        return x if self.labels is None else (x, self.labels[i])



# ---------------------------------------------------------------- reading: shared checks

def _why(error):
    """An exception as a short phrase for a one-line message: its first line,
    and its last one too when it has several (where the cause usually is)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
    return f"{type(error).__name__}: {text}"


def _check_choice(kind, value, choices):
    if value not in choices:
        raise DataError(f"unknown {kind} {value!r}: choose one of {', '.join(choices)}")


def _list_dir(folder):
    """The entries of a folder, sorted; an unreadable folder is a DataError.
    (os.path.isdir/isfile are used elsewhere: they answer False instead of raising.)"""
    try:
        return sorted(Path(folder).iterdir())
    except OSError as e:
        raise DataError(f"cannot list {folder} ({_why(e)}): make it readable (chmod a+rx) or "
                        f"pass --data-dir to a readable copy") from None



# ---------------------------------------------------------------- the MNIST family (IDX files)

IDX_MAGIC = {3: 2051, 1: 2049}  # unsigned bytes (0x08) in 3 dims (images) or 1 dim (labels)


def idx_raw_folder(data_dir, name="mnist"):
    """The raw/ folder of an IDX set. data_dir may be the root holding
    MNIST/raw/, the MNIST folder itself or its raw folder. The folder names
    are checked on purpose: the three sets use the same file names, so a bare
    folder of IDX files could be any of them. Returns the first candidate
    that exists, else the one the files should go to."""
    root, folder = Path(data_dir), IDX_SETS[name]
    candidates = [root / folder / "raw"]
    if root.name == folder:
        candidates.append(root / "raw")
    if root.name == "raw" and root.parent.name == folder:
        candidates.append(root)
    return next((c for c in candidates if os.path.isdir(c)), candidates[-1])


def read_idx_set(data_dir, name="mnist", train=True, labels=False, download=False):
    """An IDX data set as a uint8 tensor N x 1 x 28 x 28 (rows x cols as the
    file says), or (images, int64 labels N) with labels=True. name: mnist,
    fashion-mnist or kmnist; files as torchvision lays them out, plain or .gz.
    The labels file is only required with labels=True, but when present its
    count must match. download=True fetches missing files (see _download_idx)."""
    _check_choice("IDX data set", name, IDX_SETS)
    raw, split = idx_raw_folder(data_dir, name), "train" if train else "t10k"
    image_file = _idx_file(raw, f"{split}-images-idx3-ubyte")
    label_file = _idx_file(raw, f"{split}-labels-idx1-ubyte")
    if image_file is None or (labels and label_file is None):
        if not download:
            raise DataError(f"{IDX_SETS[name]} {split} files not found: {_idx_help(raw, name, split)}")
        _download_idx(raw, name, train)
        return read_idx_set(data_dir, name, train, labels, download=False)
    images = _read_idx(image_file, 3)
    targets = _read_idx(label_file, 1) if label_file else None
    if targets is not None and len(targets) != len(images):
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds "
                        f"{len(targets)} labels: they come from different downloads; "
                        f"download both again")
    images = torch.from_numpy(images.copy()).unsqueeze(1)  # copy: the bytes are read-only
    return (images, torch.from_numpy(targets.astype(np.int64))) if labels else images


def _idx_file(raw, base):
    """raw/base, else raw/base.gz, else None."""
    for path in (raw / base, raw / f"{base}.gz"):
        if os.path.isfile(path):
            return path
    return None


def _idx_help(raw, name, split):
    folder = IDX_SETS[name]
    return (f"put {split}-images-idx3-ubyte and {split}-labels-idx1-ubyte (or their .gz) in "
            f"{raw}/ (torchvision's layout), or pass --data-dir to the folder that holds {folder}/")


def _read_idx(path, ndim):
    """One IDX file -> uint8 array N x rows x cols (ndim 3) or N (ndim 1),
    checked against its header; anything else is a DataError naming the file."""
    data = _file_bytes(path)
    what, header = "images" if ndim == 3 else "labels", 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header ({len(data)} bytes, the header "
                        f"alone is {header}): download it again")
    magic, *dims = struct.unpack(f">{1 + ndim}I", data[:header])
    if magic != IDX_MAGIC[ndim]:
        gz = "; it looks gzip-compressed: give it a .gz name" if data[:2] == b"\x1f\x8b" else ""
        raise DataError(f"{path} is not an IDX {what} file (magic number {magic}, expected "
                        f"{IDX_MAGIC[ndim]}{gz}): download it again")
    count, says = math.prod(dims), f"{dims[0]} {what}" + (f" of {dims[1]}x{dims[2]}" if ndim == 3 else "")
    if len(data) != header + count:
        state = "is truncated" if len(data) < header + count else "is longer than its header says"
        raise DataError(f"{path} {state}: header says {says} ({header + count} bytes), file "
                        f"holds {len(data)} bytes; download it again")
    if count == 0:
        raise DataError(f"{path} holds no {what} (header says {says}): download it again")
    return np.frombuffer(data, np.uint8, count, header).reshape(dims)


def _file_bytes(path):
    """A file's bytes, decompressed when its name ends in .gz."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path) as f:
                return f.read()
        return path.read_bytes()
    except EOFError:
        raise DataError(f"{path} is truncated (the gzip stream ends early): download it again") from None
    except (gzip.BadGzipFile, zlib.error) as e:  # BadGzipFile is an OSError: caught first
        raise DataError(f"{path} is not a valid gzip file ({_why(e)}): download it again") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({_why(e)}): make it readable (chmod a+r) or pass "
                        f"--data-dir to a readable copy") from None


def _download_idx(raw, name, train):
    """torchvision's downloader (mirrors, checksums, gunzip) into a fresh
    temporary folder; on success only the decompressed files move to raw/.
    The temporary folder always goes; a failure leaves nothing behind."""
    folder, split = IDX_SETS[name], "train" if train else "t10k"
    home = raw.parent.parent  # the folder that holds MNIST/ (a temp there makes the move a rename)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=home if os.path.isdir(home) else None))
    except OSError as e:
        raise DataError(f"{folder} not found and {home} is not writable for a download "
                        f"({_why(e)}): {_idx_help(raw, name, split)}") from None
    try:
        try:
            # Imported here, not at the top: torchvision costs over a second of
            # start-up, and only this rare path (files missing) needs it.
            from torchvision import datasets
            getattr(datasets, folder)(tmp, train=train, download=True)
        except Exception as e:  # no network, a checksum mismatch, ...: torchvision raises many types
            raise DataError(f"{folder} not found in {raw} and the download failed ({_why(e)}): "
                            f"{_idx_help(raw, name, split)}") from None
        got = sorted((tmp / folder / "raw").glob("*-ubyte"))  # the .gz copies stay behind
        raw.mkdir(parents=True, exist_ok=True)
        for src in got:
            if _idx_file(raw, src.name) is None:  # never replace the user's own files
                shutil.move(src, raw / src.name)
    except OSError as e:
        raise DataError(f"{folder} was downloaded but cannot be moved into {raw} ({_why(e)}): "
                        f"{_idx_help(raw, name, split)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- image files: CelebA and folders

def find_celeba(data_dir):
    """Image files of CelebA (or any folder of faces), sorted. Accepts
    DIR/celeba/img_align_celeba/, DIR/img_align_celeba/ or DIR itself; with
    list_eval_partition.txt beside the image folder only the train split is used."""
    root = Path(data_dir)
    if not os.path.isdir(root):
        raise DataError(f"data folder {root} does not exist: {CELEBA_HELP}")
    for folder in (root / "celeba" / "img_align_celeba", root / "img_align_celeba", root):
        if os.path.isdir(folder):
            files = [p for p in _list_dir(folder) if _is_image_file(p)]
            if files:
                return _train_split(files, folder.parent / "list_eval_partition.txt")
    zips = list(root.glob("**/img_align_celeba.zip"))
    hint = f"found {zips[0]}: unzip it first; " if zips else ""
    raise DataError(f"no face images found in {root}, {root / 'img_align_celeba'} or "
                    f"{root / 'celeba' / 'img_align_celeba'}: {hint}{CELEBA_HELP}")


def _train_split(files, partition_file):
    """CelebA's official partition: 0 = train, 1 = valid, 2 = test (the lecture trains on train)."""
    if not os.path.isfile(partition_file):
        return files
    try:
        lines = partition_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {partition_file} ({_why(e)}): delete or fix it") from None
    train = {line.split()[0] for line in lines
             if len(line.split()) == 2 and line.split()[1] == "0"}
    kept = [f for f in files if f.name in train]
    if not kept:
        raise DataError(f"{partition_file} names no train images found in {files[0].parent}: "
                        f"delete or fix it")
    return kept


def find_images(data_dir):
    """Every image file under data_dir at any depth, sorted: a flat folder or
    ImageFolder-style class subfolders (their classes: folder_classes). Hidden
    files and folders are skipped, the .gan_cache folder among them."""
    root = Path(data_dir)
    if not os.path.isdir(root):
        raise DataError(f"data folder {root} does not exist: put your images in it, "
                        f"directly or in subfolders (DIR/class_a/*.jpg)")
    files = sorted(_walk_images(root, set()))
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found in {root} or its "
                        f"subfolders: put your images there or pass --data-dir to their folder")
    return files


def _walk_images(folder, seen):
    real = os.path.realpath(folder)
    if real in seen:  # a symlink loop
        return
    seen.add(real)
    for path in _list_dir(folder):
        if path.name.startswith("."):
            continue
        if os.path.isdir(path):
            yield from _walk_images(path, seen)
        elif _is_image_file(path):
            yield path


def _is_image_file(path):
    """An image's name on a regular file (links followed). Anything else under
    such a name is skipped with a warning, as an unreadable image is: a broken
    link, or a named pipe, which would block its reader forever."""
    if path.suffix.lower() not in IMAGE_EXTS:
        return False
    if os.path.isfile(path):
        return True
    warnings.warn(f"skipping {path}: not a regular file (a broken link, a pipe, ...)", stacklevel=2)
    return False


# ---------------------------------------------------------------- crop and resize

def crop_box(width, height, crop="celeba"):
    """(left, top, right, bottom) of the crop, with torchvision CenterCrop's rounding.
    celeba: a centred square 160/178 of the width (160 of CelebA's 178 x 218,
    80 of the 89 x 109 half-size copy), never larger than the image;
    center: the largest centred square; none: the whole image."""
    if crop == "none":
        return 0, 0, width, height
    c = min(width, height) if crop == "center" else min(round(width * 160 / 178), width, height)
    top, left = int(round((height - c) / 2.0)), int(round((width - c) / 2.0))
    return left, top, left + c, top + c


def crop_resize(img, size=64, crop="celeba"):
    """PIL image -> uint8 array size x size x 3: RGB, crop_box, then a bilinear
    resize as torchvision's Resize does on PIL images (with crop none the
    aspect ratio is not kept)."""
    img = img.convert("RGB")
    img = img.crop(crop_box(*img.size, crop)).resize((size, size), Image.BILINEAR)
    return np.array(img, dtype=np.uint8)  # a writable copy


def load_face(path, size=64, crop="celeba"):
    """One image file -> uint8 array size x size x 3 (crop_resize). Raises DataError naming the file."""
    try:
        with Image.open(path) as img:
            return crop_resize(img, size, crop)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def resize_images(images, size, crop="none"):
    """uint8 N x 3 x H x W -> N x 3 x size x size through crop_resize; the
    input itself when there is nothing to do."""
    h, w = images.shape[2:]
    if crop_box(w, h, crop) == (0, 0, w, h) and (h, w) == (size, size):
        return images
    out = np.stack([crop_resize(Image.fromarray(img.permute(1, 2, 0).numpy()), size, crop)
                    for img in images])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class FaceImages(torch.utils.data.Dataset):
    """The per-image path for image files: decode, crop, resize and normalize
    each image on every access; items are 3 x size x size in [-1, 1].
    An unreadable file is skipped as the cache path skips it: a warning (once
    per file and process) and the next readable file takes its place, so an
    epoch keeps its length. On clean data nothing changes. With labels (int64
    N), items are (image, label), the label of the file actually read."""

    def __init__(self, files, size=64, crop="celeba", labels=None):
        self.files, self.size, self.crop, self.labels = list(files), size, crop, labels
        self.bad = set()

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        n, i = len(self.files), int(i)  # the sampler hands out 0-dim tensors, which hash by identity
        for j in ((i + k) % n for k in range(n)):
            if j in self.bad:
                continue
            try:
                arr = load_face(self.files[j], self.size, self.crop)
            except DataError as e:
                self.bad.add(j)
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            x = to_float(torch.from_numpy(arr).permute(2, 0, 1))
            return x if self.labels is None else (x, self.labels[j])
        raise DataError(f"none of the {n} images in {self.files[0].parent} could be read "
                        f"(see the warnings above)")


# ---------------------------------------------------------------- StackedMNIST

STACKED_IMAGES = 60000   # one per MNIST training digit; each channel drawn independently


def stacked_mnist(data_dir, size=32, seed=0, n=STACKED_IMAGES, download=False):
    """StackedMNIST (Metz et al. 2017), the 1000-mode benchmark: each image is
    three MNIST training digits drawn at random (seeded) as its R, G and B
    channels, resized from 28 x 28 to size x size. uint8 n x 3 x size x size;
    the mode of an image is 100 * digit(R) + 10 * digit(G) + digit(B)."""
    digits = read_idx_set(data_dir, "mnist", download=download)[:, 0]   # N x 28 x 28
    pick = torch.randint(0, len(digits), (n, 3), generator=torch.Generator().manual_seed(seed))
    return resize_images(digits[pick], size)


# ---------------------------------------------------------------- CIFAR-10 (python pickles)

def read_cifar10(data_dir, size=32, crop="none", train=True, labels=False):
    """CIFAR-10 as uint8 N x 3 x size x size (50,000 train or 10,000 test
    images, 32 x 32 resized through crop_resize when size differs), or (images,
    int64 labels N) with labels=True. Reads
    torchvision's layout, DIR/cifar-10-batches-py/data_batch_1..5 (test_batch),
    or that folder itself."""
    root = Path(data_dir)
    folder = root if os.path.isfile(root / "data_batch_1") else root / CIFAR_FOLDER
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not os.path.isfile(folder / n)]
    if missing:
        tars = list(root.glob("cifar-10-python.tar.gz")) if os.path.isdir(root) else []
        hint = f"found {tars[0]}: unpack it first (tar xzf); " if tars else ""
        raise DataError(f"CIFAR-10 file {missing[0]} not found in {folder}/ ({len(missing)} of "
                        f"{len(names)} missing): {hint}{CIFAR_HELP}")
    batches = [_cifar_batch(folder / n) for n in names]
    data = np.concatenate([d for d, _ in batches])
    images = resize_images(torch.from_numpy(data.reshape(-1, 3, 32, 32)), size, crop)
    if not labels:
        return images
    return images, torch.from_numpy(np.concatenate([np.asarray(t, dtype=np.int64) for _, t in batches]))


class _Refused(pickle.UnpicklingError):
    pass


# What a CIFAR-10 batch needs to rebuild its numpy arrays, and nothing else:
# unpickling may call any function a file names, so every other name is refused.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it


def _empty_array(subtype, shape, dtype):
    """numpy's _reconstruct for the empty array that a pickle then fills from the
    file's own bytes (BUILD, which checks their count). Any other shape would be
    allocated on the file's word alone: a 155-byte file could ask for gigabytes."""
    if subtype is not np.ndarray or tuple(np.atleast_1d(shape)) != (0,):
        raise ValueError(f"an array rebuilt with shape {shape!r}, not (0,)")
    return _RECONSTRUCT(subtype, shape, dtype)


_SAFE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                 ("numpy.core.multiarray", "_reconstruct"): _empty_array,   # numpy 1 (the official files)
                 ("numpy._core.multiarray", "_reconstruct"): _empty_array}  # numpy 2


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _cifar_batch(path):
    """One batch file -> (uint8 N x 3072 b"data", its b"labels", checked for their count)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{path} asks to load {e}, which a CIFAR-10 batch never does: refused, as "
                        f"loading it could run code; use only the official files") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({_why(e)}): make it readable (chmod a+r)") from None
    except Exception as e:  # a damaged pickle fails in many ways
        raise DataError(f"{path} is damaged ({_why(e)}): {CIFAR_HELP}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072 and len(data) > 0 and isinstance(labels, (list, np.ndarray))):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a dict with b'data', "
                        f"N x 3072 uint8, and b'labels'): {CIFAR_HELP}")
    if len(labels) != len(data):
        raise DataError(f"{path} holds {len(data)} images but {len(labels)} labels: {CIFAR_HELP}")
    return data, labels


# ---------------------------------------------------------------- the decode cache

def default_cache_dir(folder):
    """FOLDER/.gan_cache when FOLDER is writable, else the user's cache folder.
    The mode bits are checked too: os.access says yes to root even for folders
    marked read-only, such as shared data sets."""
    folder = Path(folder)
    if folder.is_dir() and os.access(folder, os.W_OK) and folder.stat().st_mode & 0o222:
        return folder / ".gan_cache"
    return user_cache_dir()


def user_cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan-lecture"


def data_of_run(cfg, data_dir=None, cache_dir=None):
    """A trained run's config for a tool that reads its data (evaluate.py,
    generate.py --nearest). The checkpoint may come from someone else, so the
    folders it names are not trusted blindly: the data folder read is said on
    screen, and caches go only to the typed --cache-dir or the user's cache
    folder, never to a folder the file chose."""
    data_dir, cache_dir = data_dir or cfg["data_dir"], cache_dir or user_cache_dir()
    whose = "" if data_dir != cfg["data_dir"] else " (the run's own; --data-dir to read another)"
    print(f"reading the {cfg['dataset']} images from {data_dir}{whose}; cache in {cache_dir}", flush=True)
    return {**cfg, "data_dir": str(data_dir), "cache_dir": str(cache_dir)}


def cache_path(files, size, cache_dir, crop="celeba", dataset="celeba"):
    """Cache file named by a hash of what it depends on: the files (name, size,
    mtime), the data set, the crop, the output size and the code version. Any
    change means a rebuild."""
    h = hashlib.sha1(f"v{CACHE_VERSION} size={size} crop={crop} dataset={dataset}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"faces_{size}px_{len(files)}_{h.hexdigest()[:12]}.npy"


def _load_or_none(args):
    path, size, crop = args
    try:
        return load_face(path, size, crop)
    except DataError as e:
        return str(e)


def faces_uint8(files, size=64, cache_dir=None, workers=2, quiet=False, crop="celeba",
                dataset="celeba"):
    """All images as a uint8 tensor N x 3 x size x size, decoded once into a
    .npy cache and read back on later runs. Unreadable files are skipped with
    a warning; a damaged cache file is rebuilt. The cache is written to a
    temporary file, then renamed."""
    folder = files[0].parent   # beside img_align_celeba/, or inside a plain folder of images
    root = folder.parent if folder.name == "img_align_celeba" else folder
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(root)
    path = cache_path(files, size, cache_dir, crop, dataset)
    images = _read_cache(path, len(files), size)
    if images is None:
        build_cache(files, size, path, workers, quiet, crop)
        images = _read_cache(path, len(files), size)
    if images is None:
        raise DataError(f"cache file {path} is unreadable right after building it: "
                        f"pass --cache-dir to another folder")
    return images


def _read_cache(path, n_files, size):
    """The cached images, or None when there is no cache file or it is damaged
    or of the wrong shape (a killed copy, a disk error): then it is rebuilt."""
    if not os.path.isfile(path):
        return None
    try:
        images = np.load(path)  # allow_pickle=False: a .npy holding objects fails here
    except (OSError, ValueError, EOFError) as e:
        problem = f"unreadable ({_why(e)})"
    else:
        if (images.dtype == np.uint8 and images.shape[1:] == (3, size, size)
                and 0 < len(images) <= n_files):
            return torch.from_numpy(images)
        problem = f"of the wrong shape ({images.dtype} {tuple(images.shape)})"
    warnings.warn(f"cache file {path} is {problem}: rebuilding it", stacklevel=3)
    return None


def build_cache(files, size, path, workers, quiet, crop="celeba"):
    """Decode `files` into the cache file `path` (atomically; memory stays bounded)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, "faces_")   # left by builds that were killed; only ours
    except OSError as e:
        raise DataError(f"cannot create cache folder {path.parent} ({_why(e)}): pass --cache-dir "
                        f"to a writable folder") from None
    try:
        with atomic_write(path) as tmp:   # an error or Ctrl-C leaves no half-written file behind
            _decode_into(files, size, tmp, workers, quiet, path.name, crop)
    except OSError as e:  # a read-only --cache-dir, a full disk, ...
        raise DataError(f"cannot write the cache file {path} ({_why(e)}): pass --cache-dir to a "
                        f"writable folder") from None


# Decoded images held in memory at once while the cache is written (12 MB at 64 px).
CHUNK_IMAGES = 1024


def _decode_into(files, size, tmp, workers, quiet, name, crop="celeba"):
    """Decode `files` into the .npy file `tmp`, streamed: a chunk of images at a
    time is written, so memory stays bounded however many images there are."""
    header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
    offset = header.offset   # the file now has its header and full size; nothing is mapped in
    del header
    progress = Progress(len(files), stream=sys.stderr)
    kept, bad, chunk = 0, [], []
    jobs = ((f, size, crop) for f in files)
    with open(tmp, "r+b") as out, (Pool(max(1, workers), _quiet_worker) if workers > 0 else _Serial()) as pool:
        out.seek(offset)
        for i, arr in enumerate(pool.imap(_load_or_none, jobs, chunksize=64)):
            if isinstance(arr, str):
                bad.append(arr)
                warnings.warn(f"skipping {arr}", stacklevel=2)
            else:
                chunk.append(arr.transpose(2, 0, 1))
                kept += 1
            if len(chunk) == CHUNK_IMAGES or i + 1 == len(files):
                out.write(np.ascontiguousarray(np.stack(chunk)).tobytes() if chunk else b"")
                chunk.clear()
            if not quiet:
                progress.update(i + 1, f"caching images into {name}: {i + 1}/{len(files)}")
    if kept == 0:
        raise DataError(f"none of the {len(files)} images in {files[0].parent} could be read "
                        f"(first error: {bad[0]})")
    if bad:
        _cut_rows(tmp, kept)
    if not quiet:
        progress.update(len(files), f"cached {len(files)} images into {name}", force=True)


def _cut_rows(path, rows):
    """Cut a .npy file down to its first `rows` rows in place: a new header of
    the same length (numpy pads headers to 64 bytes), then truncate."""
    arr = np.load(path, mmap_mode="r")
    shape, offset, row_bytes, descr = (rows, *arr.shape[1:]), arr.offset, arr[0].nbytes, arr.dtype.str
    del arr
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    if header.tell() != offset:   # the number of rows got shorter by a padding block: copy instead
        np.save(path, np.load(path)[:rows])
        return
    with open(path, "r+b") as f:
        f.write(header.getvalue())
        f.truncate(offset + rows * row_bytes)


def _quiet_worker():
    """A pool worker leaves Ctrl-C to the main process, which stops the pool: a
    terminal sends SIGINT to every process of the job, and a worker that died of
    it mid-task printed a traceback and could leave the pool's result thread
    waiting forever. SIGTERM, with which the pool ends its workers, ends them at
    once (not through a handler inherited from the main process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Serial:
    """Pool stand-in for workers=0 (tests, debugging)."""
    imap = staticmethod(lambda fn, it, chunksize=1: map(fn, it))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

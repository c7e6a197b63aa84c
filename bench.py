"""Speed of the lecture's training loop (a) against this project's (b), side by
side in one process, on the real data.

    python bench.py                               # everything, 3 repeats -> bench_results.json
    python bench.py --quick                       # about a minute on a 2-core CPU (1 repeat, few batches)
    python bench.py --only mnist --repeats 1      # one full MNIST epoch per loop
    python bench.py --device cuda --num-workers 8 --json runs/bench_gpu.json
    python bench.py --only pipeline --rebuild-cache   # input paths only, and time a fresh CelebA cache
    OMP_WAIT_POLICY=PASSIVE python bench.py --quick   # on a CPU shared with other jobs (see below)

(a) the lecture as written: torchvision MNIST / a per-image folder dataset with
    PIL transforms, a torch DataLoader (shuffle=True, --num-workers), plain Adam,
    and `lecture_step` below, which calls .item() on the losses and accuracies
    after every batch.
(b) this project: helper_data.make_loader (the whole data set as one uint8
    tensor; CelebA from its decoded cache) and helper_train.GANState +
    gan_step (fused Adam, autocast where the project turns it on), with the
    per-batch metrics kept on the device and copied to the host every 50
    batches as train_gan does.
Both use the same networks from models.py with the lecture's settings, the same
initial weights and the same batch size.

Measured, each --repeats times (median and all values reported), a and b
interleaved so that a change in machine load hits both alike:
- MNIST GAN: seconds per epoch (a full epoch; with --quick or --batches N, N
  batches scaled to an epoch), after a few warm-up batches.
- DCGAN on CelebA: training images per second over N batches after warm-up.
- input pipelines alone (no training): images per second each loader delivers,
  for both data sets, plus one-time setup (reading MNIST, the CelebA cache build).
- peak memory of each measurement: on CUDA torch.cuda.max_memory_allocated
  (reset before each); on CPU the process's peak resident set size (VmHWM,
  reset before each through /proc/self/clear_refs; where that is not allowed,
  getrusage's peak since the process started). DataLoader worker processes are
  not included. The increase over the resident set at the start is reported too.
The table is printed at the end; everything, with the machine, goes to --json
(with the CPU time of the main process beside each wall time).

On a CPU that other jobs are using, OpenMP threads that spin while waiting for
each other make small-tensor work (the MNIST GAN, the tensor input path) many
times slower and very noisy; OMP_WAIT_POLICY=PASSIVE or --threads 1 avoids that.
Timings to report come from an otherwise idle machine.
"""
import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import helper_data
import helper_train
import train_celeba_dcgan
import train_mnist_gan
from helper_cli import pick_device
from models import build_models

MB = 2 ** 20
# Settings that change CPU timings a lot (OMP_WAIT_POLICY=PASSIVE matters on a shared machine).
THREAD_ENV = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
              "KMP_BLOCKTIME", "OMP_PROC_BIND", "CUDA_VISIBLE_DEVICES"]
LOG_EVERY = 50  # train_gan's default --log-every: batches between copies of the metrics to the host


# ---------------------------------------------------------------- machine, clocks, memory

def cpu_cores():
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the whole host
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device):
    import torchvision
    info = {"cpu": cpu_model(), "cores": cpu_cores(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "load_average_start": _loadavg(),
            "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]  # > cores: the machine was shared, numbers are noisy
    except OSError:
        return None


def clock(device):
    """(wall time, CPU time of this process) once the GPU has finished what was
    queued (else we would time the queueing). The CPU time counts this process's
    threads only, not DataLoader workers; on a busy machine it is the steadier
    of the two for single-threaded work (waiting for a core does not count)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def since(start, device):
    wall, cpu = clock(device)
    return wall - start[0], cpu - start[1]


def _proc_status_kb(field):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _ru_maxrss_mb():
    import resource  # Unix only, and only needed where /proc is missing
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory over a `with` block, in MiB: `peak_mb` and `increase_mb`
    (peak minus what was in use at the start). See the module docstring."""

    def __init__(self, device):
        self.device, self.kind = device, None

    def __enter__(self):
        gc.collect()  # what the previous measurement left behind should not count here
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb, self.kind = torch.cuda.memory_allocated(self.device) / MB, "cuda_max_allocated"
        else:
            self.kind = "cpu_peak_rss_reset" if _reset_peak_rss() else "cpu_peak_rss_since_start"
            rss = _proc_status_kb("VmRSS")
            self.start_mb = rss / 1024 if rss is not None else _ru_maxrss_mb()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / MB
        else:
            hwm = _proc_status_kb("VmHWM") if self.kind == "cpu_peak_rss_reset" else None
            self.peak_mb = hwm / 1024 if hwm is not None else _ru_maxrss_mb()
        self.increase_mb = max(0.0, self.peak_mb - self.start_mb)
        return False


def _reset_peak_rss():
    """Linux >= 4.0 resets VmHWM to the current RSS when 5 is written to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- (a) the lecture's loop

class FolderImages(torch.utils.data.Dataset):
    """ImageFolder as the lecture uses it, over a plain folder (ImageFolder itself
    wants class subfolders): open with PIL, convert to RGB, transform; label 0."""

    def __init__(self, files, transform):
        self.files, self.transform = list(files), transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), 0


def lecture_dataset(dataset, data_dir, image_size=64):
    from torchvision import datasets, transforms
    if dataset == "mnist":
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        return datasets.MNIST(_mnist_root(data_dir), train=True, transform=tf, download=False)
    files = helper_data.find_celeba(data_dir)  # the same files the project trains on
    with Image.open(files[0]) as img:
        width, height = img.size
    crop = min(round(width * 160 / 178), width, height)  # the lecture's 160 of 178, scaled to this copy
    tf = transforms.Compose([transforms.CenterCrop((crop, crop)),
                             transforms.Resize((image_size, image_size)),
                             transforms.ToTensor(),
                             transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    return FolderImages(files, tf)


def _mnist_root(data_dir):
    root = Path(data_dir)
    return root.parent if root.name == "MNIST" else root


def lecture_loader(dataset, data_dir, batch_size, num_workers):
    return torch.utils.data.DataLoader(lecture_dataset(dataset, data_dir), batch_size=batch_size,
                                       shuffle=True, num_workers=num_workers)


def lecture_step(gen, disc, opt_g, opt_d, real, latent_dim, log):
    """One batch exactly as the lecture's loop does it (float32, no fusing, a
    host synchronisation per logged number)."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    n, device = real.size(0), real.device
    real_labels = torch.ones(n, device=device)
    fake_labels = torch.zeros(n, device=device)
    flipped_labels = torch.ones(n, device=device)   # G wants D to call its fakes real

    noise = torch.randn(n, latent_dim, 1, 1, device=device)
    fake = gen(noise)

    # --- D step: real -> 1, fake -> 0; detach keeps G out of this backward.
    opt_d.zero_grad()
    pred_real = disc(real).view(-1)
    pred_fake = disc(fake.detach()).view(-1)
    d_loss = 0.5 * (loss_fn(pred_real, real_labels) + loss_fn(pred_fake, fake_labels))
    d_loss.backward()
    opt_d.step()

    # --- G step: fool the updated D.
    opt_g.zero_grad()
    g_loss = loss_fn(disc(fake).view(-1), flipped_labels)
    g_loss.backward()
    opt_g.step()

    # --- logging as the lecture's helper: .item() per batch (each one waits for the device).
    log["g_loss"].append(g_loss.item())
    log["d_loss"].append(d_loss.item())
    acc_real = ((pred_real.detach() > 0).float() == real_labels).float().mean() * 100
    acc_fake = ((pred_fake.detach() > 0).float() == fake_labels).float().mean() * 100
    log["acc_real"].append(acc_real.item())
    log["acc_fake"].append(acc_fake.item())


class LectureTrainer:
    """Loader, models and optimizers of the lecture's loop; `step` trains on one batch."""

    def __init__(self, loader, cfg, device):
        self.loader, self.device, self.latent_dim = loader, device, cfg["latent_dim"]
        torch.manual_seed(cfg["seed"])  # same initial weights as the project side (build_state)
        gen, disc = build_models(cfg)
        self.gen, self.disc = gen.to(device), disc.to(device)
        betas = (cfg["beta1"], 0.999)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg["lr_gen"], betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg["lr_disc"], betas=betas)
        self.log = {"g_loss": [], "d_loss": [], "acc_real": [], "acc_fake": []}
        self.options = {"input": f"DataLoader, {loader.num_workers} workers", "precision": "float32",
                        "adam": "default (foreach on CUDA, per-tensor on CPU)", "sync": "4 x .item() per batch"}
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False  # the lecture does not turn it on

    def epoch(self, e):
        return (images for images, _ in self.loader)  # the DataLoader reshuffles on every pass

    def step(self, batch):
        lecture_step(self.gen, self.disc, self.opt_g, self.opt_d, batch.to(self.device),
                     self.latent_dim, self.log)

    def finish(self):
        pass  # every step already waited for its .item()


# ---------------------------------------------------------------- (b) the project's loop

def project_config(dataset, args):
    """The training script's lecture preset plus what its command line would add."""
    presets = train_mnist_gan.PRESETS if dataset == "mnist" else train_celeba_dcgan.PRESETS
    return {**presets["lecture"], "data_dir": args.data_dir, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "cache_dir": args.cache_dir}


class ProjectTrainer:
    """make_loader's TensorLoader + GANState + gan_step, metrics flushed every LOG_EVERY batches."""

    def __init__(self, loader, cfg, device):
        self.loader, self.cfg = loader, cfg
        self.state = helper_train.build_state(cfg, device)   # seeds, builds, moves, wraps
        dtype = helper_train.amp_dtype(cfg, device)
        self.autocast = helper_train.autocast_for(cfg, device)
        self.options = {"input": type(loader).__name__,
                        "precision": str(dtype).replace("torch.", "") if dtype is not None else "float32",
                        "adam": "fused", "channels_last": cfg["channels_last"],
                        "sync": f"one host copy per {LOG_EVERY} batches"}
        self.pending = []

    def epoch(self, e):
        return self.loader.batches(e)

    def step(self, batch):
        batch = helper_train.prepare_batch(batch, self.cfg)
        self.pending.append(helper_train.gan_step(self.state, batch, self.cfg, self.autocast))
        if len(self.pending) == LOG_EVERY:
            self.finish()

    def finish(self):
        """What train_gan's flush costs: one copy to the host, a finiteness check, rows as lists."""
        if not self.pending:
            return
        values = torch.stack(self.pending).cpu()
        if not torch.isfinite(values).all():
            raise RuntimeError("a loss became NaN or infinite during the benchmark")
        values.tolist()   # train_gan turns them into CSV rows
        self.pending = []


def project_loader(dataset, cfg, device):
    return helper_data.make_loader(dataset, cfg, device)


# ---------------------------------------------------------------- timing

def endless(trainer):
    """Batches epoch after epoch, so that warm-up + timed batches may exceed one epoch."""
    e = 0
    while True:
        yield from trainer.epoch(e)
        e += 1


def time_batches(trainer, n_warmup, n_timed, device):
    """(wall, CPU) seconds for n_timed steps, after n_warmup untimed ones from the same stream."""
    batches = endless(trainer)
    for _ in range(n_warmup):
        trainer.step(next(batches))
    trainer.finish()
    t0 = clock(device)
    for _ in range(n_timed):
        trainer.step(next(batches))
    trainer.finish()
    seconds = since(t0, device)
    batches.close()  # stops DataLoader workers now rather than at garbage collection
    return seconds


def time_epoch(trainer, device, n_warmup):
    """(wall, CPU) seconds for one whole epoch, starting the loader's iteration inside the
    clock (a real epoch pays for starting its DataLoader workers)."""
    time_batches(trainer, n_warmup, 0, device)
    t0 = clock(device)
    for batch in trainer.epoch(1):
        trainer.step(batch)
    trainer.finish()
    return since(t0, device)


class Pipe:
    """A loader seen as a trainer whose step only moves the batch to the device."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, device
        self.options = {"input": type(loader).__name__}

    def epoch(self, e):
        if isinstance(self.loader, helper_data.TensorLoader):
            return self.loader.batches(e)
        return (images for images, _ in self.loader)

    def step(self, batch):
        batch.to(self.device)

    def finish(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------- measurements

def build(side, dataset, args, device):
    """A fresh trainer for one repeat (loader and models built inside the memory window)."""
    cfg = project_config(dataset, args)
    if side == "lecture":
        loader = lecture_loader(dataset, args.data_dir, args.batch_size, args.num_workers)
        return LectureTrainer(loader, cfg, device)
    return ProjectTrainer(project_loader(dataset, cfg, device), cfg, device)


def one_run(side, dataset, kind, args, device, plan):
    """One timed measurement of one side: {value, wall_s, cpu_s} and the PeakMemory."""
    with PeakMemory(device) as mem:
        if kind == "pipeline":
            cfg = project_config(dataset, args)
            loader = (lecture_loader(dataset, args.data_dir, args.batch_size, args.num_workers)
                      if side == "lecture" else project_loader(dataset, cfg, device))
            trainer = Pipe(loader, device)
        else:
            trainer = build(side, dataset, args, device)
        if plan["full_epoch"]:
            wall, cpu = time_epoch(trainer, device, plan["warmup"])
        else:
            wall, cpu = time_batches(trainer, plan["warmup"], plan["batches"], device)
        options = trainer.options
        del trainer
    return {"value": rate(kind, wall, plan, args.batch_size), "options": options,
            "cpu_value": rate(kind, cpu, plan, args.batch_size), "wall_s": wall, "cpu_s": cpu}, mem


def rate(kind, seconds, plan, batch_size):
    """MNIST training: s/epoch (exact for a full epoch, else scaled); the rest: images/s."""
    if kind == "mnist":
        return seconds / plan["batches"] * plan["epoch_batches"]
    return plan["batches"] * batch_size / max(seconds, 1e-9)


def measure(kind, dataset, args, device, plan, results):
    """Repeat lecture then project, interleaved; store medians and all values."""
    key = f"{dataset}_pipeline" if kind == "pipeline" else f"{dataset}_train"
    unit = "s/epoch" if kind == "mnist" else "images/s"
    entry = {"unit": unit, "plan": plan, "lecture": _empty(), "project": _empty()}
    for r in range(args.repeats):
        for side in ("lecture", "project"):
            got, mem = one_run(side, dataset, kind, args, device, plan)
            _record(entry[side], got, mem)
            print(f"  {key:16s} {side:8s} repeat {r + 1}/{args.repeats}: {got['value']:10.2f} {unit} "
                  f"({got['wall_s']:.2f} s timed, CPU {got['cpu_s']:.2f} s; peak {mem.peak_mb:.0f} MiB, "
                  f"+{mem.increase_mb:.0f} MiB)", flush=True)
    for side in ("lecture", "project"):
        entry[side]["median"] = statistics.median(entry[side]["values"])
        entry[side]["cpu_median"] = statistics.median(entry[side]["cpu_values"])
    a, b = entry["lecture"]["median"], entry["project"]["median"]
    entry["ratio_b_over_a"] = b / a
    entry["speedup"] = a / b if unit == "s/epoch" else b / a   # how many times faster b is
    results[key] = entry


def _empty():
    return {"values": [], "cpu_values": [], "wall_s": [], "cpu_s": [],
            "peak_mem_mb": [], "mem_increase_mb": []}


def _record(e, got, mem):
    e["values"].append(round(got["value"], 4))
    e["cpu_values"].append(round(got["cpu_value"], 4))   # the same rate from main-process CPU time
    e["wall_s"].append(round(got["wall_s"], 4))
    e["cpu_s"].append(round(got["cpu_s"], 4))
    e["peak_mem_mb"].append(round(mem.peak_mb, 1))
    e["mem_increase_mb"].append(round(mem.increase_mb, 1))
    e["memory_kind"] = mem.kind
    e["options"] = got["options"]


def celeba_cache(args, results):
    """Build (and time) the decoded CelebA cache once, or time loading it if it exists."""
    files = helper_data.find_celeba(args.data_dir)
    cache_dir = Path(args.cache_dir)
    temp = Path(tempfile.mkdtemp(dir=_mkdir(cache_dir))) if args.rebuild_cache else None
    where = temp or cache_dir
    path = helper_data.cache_path(files, 64, where)
    built = not path.exists()
    workers = max(1, args.num_workers)  # as make_loader: the build uses the worker count
    t0 = time.perf_counter()
    helper_data.faces_uint8(files, 64, where, workers=workers, quiet=True)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    helper_data.faces_uint8(files, 64, where, workers=workers, quiet=True)
    load = time.perf_counter() - t0
    if temp is not None:
        shutil.rmtree(temp)
    results["celeba_cache"] = {"images": len(files), "cache_dir": str(cache_dir),
                               "build_s": round(first, 3) if built else None,
                               "load_s": round(load, 3), "build_workers": workers,
                               "note": "built in this run" if built else
                               "cache already present: build not timed (use --rebuild-cache)"}
    msg = f"built in {first:.1f} s" if built else "already built"
    print(f"  celeba cache     {len(files)} images, {msg}; loads in {load:.2f} s", flush=True)


def _mkdir(path):
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def mnist_setup(args, results):
    """One-time cost of reading MNIST for each side (the project reads the IDX file once)."""
    t0 = time.perf_counter()
    lecture_dataset("mnist", args.data_dir)
    a = time.perf_counter() - t0
    t0 = time.perf_counter()
    helper_data.mnist_uint8(args.data_dir, download=False)
    b = time.perf_counter() - t0
    results["mnist_setup"] = {"lecture_s": round(a, 3), "project_s": round(b, 3)}


# ---------------------------------------------------------------- plans (how many batches)

def plans(args, device, mnist_epoch_batches):
    """Warm-up and timed batch counts for each measurement."""
    cuda = device.type == "cuda"
    warm = 1 if args.quick and not cuda else 2   # a DCGAN step on CPU takes seconds
    n_mnist = args.batches or (50 if args.quick else mnist_epoch_batches)
    n_dcgan = args.batches or ({True: 10, False: 2}[cuda] if args.quick else {True: 50, False: 5}[cuda])
    pipe = args.pipeline_batches
    return {
        "mnist": dict(warmup=3, batches=n_mnist, epoch_batches=mnist_epoch_batches,
                      full_epoch=n_mnist == mnist_epoch_batches),
        "celeba": dict(warmup=warm, batches=n_dcgan, full_epoch=False),
        "mnist_pipeline": dict(warmup=2, batches=pipe or (30 if args.quick else 200), full_epoch=False),
        "celeba_pipeline": dict(warmup=2, batches=pipe or (8 if args.quick else 40), full_epoch=False),
    }


# ---------------------------------------------------------------- report

ROWS = [("mnist_train", "MNIST GAN epoch"), ("celeba_train", "DCGAN training"),
        ("mnist_pipeline", "MNIST input only"), ("celeba_pipeline", "CelebA input only")]


def print_table(results):
    head = (f"{'measurement':18s} {'unit':9s} {'lecture (a)':>12s} {'project (b)':>12s} "
            f"{'b/a':>7s} {'b faster':>9s} {'peak MiB a':>11s} {'peak MiB b':>11s}")
    print("\n" + head + "\n" + "-" * len(head))
    for key, label in ROWS:
        if key not in results:
            continue
        e = results[key]
        a, b = e["lecture"], e["project"]
        print(f"{label:18s} {e['unit']:9s} {a['median']:12.2f} {b['median']:12.2f} "
              f"{e['ratio_b_over_a']:7.3f} {e['speedup']:8.1f}x "
              f"{max(a['peak_mem_mb']):11.0f} {max(b['peak_mem_mb']):11.0f}")
    if "celeba_cache" in results:
        c = results["celeba_cache"]
        built = f"{c['build_s']:.1f} s" if c["build_s"] is not None else "not timed (cache present)"
        print(f"CelebA cache: one-time build {built}, load {c['load_s']:.2f} s ({c['images']} images)")
    if "mnist_setup" in results:
        s = results["mnist_setup"]
        print(f"MNIST setup: lecture dataset {s['lecture_s']:.2f} s, project tensor {s['project_s']:.2f} s")
    kind = next((results[k]["lecture"].get("memory_kind") for k, _ in ROWS if k in results), None)
    print(f"medians of {results.get('repeats')} repeat(s); memory: {MEMORY_NOTES.get(kind, kind)}")


MEMORY_NOTES = {
    "cuda_max_allocated": "torch.cuda.max_memory_allocated, reset before each measurement",
    "cpu_peak_rss_reset": "peak RSS of this process (VmHWM reset before each measurement; "
                          "DataLoader workers not included)",
    "cpu_peak_rss_since_start": "peak RSS of this process since it started (getrusage; "
                                "DataLoader workers not included)",
}


# ---------------------------------------------------------------- main

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan-lecture"
    a = p.add_argument
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    a("--quick", action="store_true", help="few batches, 1 repeat: about a minute on a 2-core CPU")
    a("--only", choices=["mnist", "celeba", "pipeline"], help="one group of measurements")
    a("--data-dir", default=str(Path(__file__).resolve().parent.parent / "shared" / "data"),
      help="folder holding MNIST/raw and celeba/img_align_celeba (default: ../shared/data)")
    a("--batches", type=int, help="timed training batches (default: a full MNIST epoch / "
                                  "5 DCGAN batches on CPU, 50 on CUDA; fewer with --quick)")
    a("--pipeline-batches", type=int, help="batches read in the input-only measurements")
    a("--repeats", type=int, help="repeats of each measurement (default 3, 1 with --quick)")
    a("--num-workers", type=int, default=2, help="DataLoader workers of the lecture's loop (and cache build)")
    a("--cache-dir", default=str(default_cache), help="decoded CelebA cache (default: %(default)s)")
    a("--rebuild-cache", action="store_true", help="time a fresh CelebA cache build (temporary copy)")
    a("--batch-size", type=int, default=128, help="the lecture's 128; smaller only for tests")
    a("--threads", type=int, help="torch threads (default: the cores this process may use)")
    a("--json", default="bench_results.json", help="where the results go")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if min(args.repeats, args.batch_size, args.batches or 1, args.pipeline_batches or 1) < 1 \
            or args.num_workers < 0:
        sys.exit("error: --repeats, --batches, --pipeline-batches and --batch-size must be >= 1, "
                 "--num-workers >= 0")
    torch.set_num_threads(args.threads or cpu_cores())
    try:
        device = pick_device(args.device)
        results = run_all(args, device)
    except (helper_data.DataError, helper_train.RunError) as e:
        sys.exit(f"error: {e}")
    print_table(results)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.json}")


def run_all(args, device):
    results = {"machine": machine_info(device), "repeats": args.repeats,
               "settings": {k: v for k, v in vars(args).items()}, "batch_size": args.batch_size}
    epoch_batches = math.ceil(len(helper_data.mnist_uint8(args.data_dir, download=False))
                              / args.batch_size) if args.only != "celeba" else 0
    plan = plans(args, device, epoch_batches)
    print(f"device {device}, {torch.get_num_threads()} threads, {cpu_model()}, "
          f"load average {_loadavg()}", flush=True)
    load = _loadavg()
    if load and load[0] > cpu_cores() - 0.5:
        print(f"warning: load average {load[0]} with {cpu_cores()} cores: other work is running, "
              f"CPU timings will be noisy (the CPU-time columns in the JSON are steadier)", flush=True)
    t0 = time.perf_counter()
    if args.only in (None, "pipeline"):
        mnist_setup(args, results)
        measure("pipeline", "mnist", args, device, plan["mnist_pipeline"], results)
    if args.only in (None, "pipeline", "celeba"):
        celeba_cache(args, results)   # before any CelebA measurement, so none pays for the build
    if args.only in (None, "pipeline"):
        measure("pipeline", "celeba", args, device, plan["celeba_pipeline"], results)
    if args.only in (None, "mnist"):
        measure("mnist", "mnist", args, device, plan["mnist"], results)
    if args.only in (None, "celeba"):
        measure("celeba", "celeba", args, device, plan["celeba"], results)
    results["machine"]["load_average_end"] = _loadavg()
    results["total_s"] = round(time.perf_counter() - t0, 1)
    return results


if __name__ == "__main__":
    main()

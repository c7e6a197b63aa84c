"""Speed of the lecture's training loop (a) against this project's (b), side by
side in one process, on the real data.

    python bench.py                           # everything, 3 repeats -> runs/bench.json
    python bench.py --quick                   # about a minute on a 2-core CPU (1 repeat, few batches)
    python bench.py --only mnist --repeats 1  # one full MNIST epoch per loop
    python bench.py --device cuda --num-workers 8 --json runs/bench_gpu.json
    python bench.py --only pipeline --rebuild-cache  # input paths only; time a fresh CelebA cache
    python bench.py --only cache --cache-sizes 2500,5000,10000 --cache-dir /tmp/c  # cache build growth
    python bench.py --gpu                     # the GPU check (bench_gpu.py) -> runs/gpu_check.json

(a) the lecture as written: torchvision MNIST / a per-image folder dataset with
    PIL transforms, a DataLoader (shuffle=True, --num-workers), plain Adam, and
    `lecture_step` below, which calls .item() on four numbers after every batch.
(b) this project: helper_data.make_loader (the whole data set as one uint8
    tensor; CelebA from the decoded cache training uses), build_state + gan_step
    (fused Adam, autocast where the project turns it on), metrics copied to the
    host every log_every batches as train_gan does.
Both start from the scripts' "lecture" preset: the same networks, initial weights
and batch size. Measured, a then b, --repeats times interleaved (a change in load
hits both alike; median and all values kept): MNIST s/epoch (a full epoch, or N
batches scaled to one), DCGAN images/s, the input pipelines alone (images/s),
one-time setup (reading MNIST, the CelebA cache),
and the peak memory of each (CUDA max_memory_allocated, or this process's peak RSS;
DataLoader workers not included). A table is printed; all, with the machine, goes to --json.

On a CPU that other jobs are using, OpenMP threads that spin while waiting for
each other make small-tensor work (the MNIST GAN, the tensor input path) many
times slower and very noisy: run with OMP_WAIT_POLICY=PASSIVE (or --threads 1).
Timings to report come from an otherwise idle machine.
"""
import argparse
import contextlib
import gc
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision import datasets, transforms

import bench_gpu
import helper_data
import helper_train
import train_celeba_dcgan
import train_mnist_gan
from helper_checkpoint import pick_device
from helper_files import RunError, write_json
from models import build_models

MB = 2 ** 20
ROWS = {"mnist_pipeline": "MNIST input only", "celeba_pipeline": "CelebA input only",
        "mnist_train": "MNIST GAN epoch", "celeba_train": "DCGAN training"}   # in the order they run


# ---------------------------------------------------------------- (a) the lecture's loop

class FolderImages(torch.utils.data.Dataset):
    """ImageFolder as the lecture uses it, over a plain list of files (ImageFolder
    itself wants class subfolders): open with PIL, convert to RGB, transform; label 0."""

    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), 0


def lecture_dataset(dataset, data_dir, image_size=64):
    if dataset == "mnist":
        root = Path(data_dir)
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        return datasets.MNIST(root.parent if root.name == "MNIST" else root, transform=tf)
    files = helper_data.find_celeba(data_dir)  # the same files the project trains on
    with Image.open(files[0]) as img:
        crop = min(round(img.width * 160 / 178), *img.size)  # the lecture's 160 of 178, scaled
    return FolderImages(files, transforms.Compose([
        transforms.CenterCrop((crop, crop)), transforms.Resize((image_size, image_size)),
        transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))


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


# ---------------------------------------------------------------- the two sides
# Each has epoch(e) -> batches on the device, step(batch) and finish() (wait for
# what is pending). Without `train`, step does nothing: the input pipeline alone.

class Lecture:
    """(a): the lecture's DataLoader; with `train`, its networks, plain Adam and lecture_step."""

    def __init__(self, dataset, cfg, device, train):
        images = lecture_dataset(dataset, cfg["data_dir"])
        self.loader = torch.utils.data.DataLoader(images, batch_size=cfg["batch_size"], shuffle=True,
                                                  num_workers=cfg["num_workers"])
        self.device, self.train, self.latent_dim = device, train, cfg["latent_dim"]
        if train:
            torch.manual_seed(cfg["seed"])  # the same initial weights as build_state's
            self.gen, self.disc = (m.to(device) for m in build_models(cfg))
            betas = (cfg["beta1"], 0.999)
            self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg["lr_gen"], betas=betas)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg["lr_disc"], betas=betas)
            self.log = {"g_loss": [], "d_loss": [], "acc_real": [], "acc_fake": []}
            torch.backends.cudnn.benchmark = False  # the lecture does not turn it on

    def epoch(self, e):
        return (x.to(self.device) for x, _ in self.loader)   # the DataLoader reshuffles on every pass

    def step(self, real):
        if self.train:
            lecture_step(self.gen, self.disc, self.opt_g, self.opt_d, real, self.latent_dim, self.log)

    def finish(self):
        pass   # every step already waited for its .item()


class Project:
    """(b): make_loader's batches; with `train`, build_state, gan_step and train_gan's flushes."""

    def __init__(self, dataset, cfg, device, train):
        self.loader = helper_data.make_loader(dataset, cfg, device)
        self.train, self.cfg, self.pending = train, cfg, []
        if train:
            self.state = helper_train.build_state(cfg, device)   # seeded as the lecture side
            self.autocast = helper_train.autocast_for(cfg, device)
            torch.backends.cudnn.benchmark = cfg["cudnn_benchmark"]   # as training sets it

    def epoch(self, e):
        return self.loader.batches(e)

    def step(self, real):
        if self.train:
            real = helper_train.prepare_batch(real, self.cfg)
            self.pending.append(helper_train.gan_step(self.state, real, self.cfg, self.autocast))
            if len(self.pending) == self.cfg["log_every"]:
                self.finish()

    def finish(self):
        """What train_gan's flush costs: one copy to the host, a finiteness check, rows as lists."""
        if self.pending:
            values, self.pending = torch.stack(self.pending).cpu(), []
            if not torch.isfinite(values).all():
                raise RunError("a loss became NaN or infinite during the benchmark")
            values.tolist()


def config(dataset, args):
    """The training script's lecture preset plus what its command line would add."""
    presets = train_mnist_gan.PRESETS if dataset == "mnist" else train_celeba_dcgan.PRESETS
    return {**presets["lecture"], "data_dir": args.data_dir, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "cache_dir": args.cache_dir}


# ---------------------------------------------------------------- measuring

def clock(device):
    """(wall, CPU time of this process) once the GPU has finished what was queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def timed(side, plan, device):
    """(wall, CPU) seconds of plan["batches"] steps after plan["warmup"] untimed ones. A
    full epoch starts its iteration inside the clock: it pays for starting DataLoader workers."""
    stream = itertools.chain.from_iterable(map(side.epoch, itertools.count()))
    for _ in range(plan["warmup"]):
        side.step(next(stream))
    side.finish()
    if plan["full_epoch"]:
        stream = side.epoch(1)
    t0 = clock(device)
    for batch in itertools.islice(stream, plan["batches"]):
        side.step(batch)
    side.finish()
    t1 = clock(device)
    return t1[0] - t0[0], t1[1] - t0[1]


def peak_mb(device, reset=False):
    """Peak memory in MiB (what it is: memory_kind); with `reset`, a new peak starts now."""
    if reset:
        gc.collect()   # what the previous measurement left behind should not count
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            with contextlib.suppress(OSError):   # Linux >= 4.0: VmHWM becomes the current RSS
                Path("/proc/self/clear_refs").write_text("5")
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB
    for line in _lines("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource   # Unix only, and only needed where /proc is missing
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024   # bytes on macOS, KiB on Linux


def memory_kind(device):
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated, reset before each measurement"
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "peak RSS of this process, reset before each measurement; DataLoader workers not included"
    except OSError:
        return "peak RSS of this process since it started; DataLoader workers not included"


def measure(key, plan, args, device, results):
    """Lecture then project, --repeats times interleaved; medians and all values into results."""
    dataset, train = key.split("_")[0], key.endswith("_train")
    unit = "s/epoch" if key == "mnist_train" else "images/s"
    fields = ("values", "wall_s", "cpu_s", "peak_mem_mb", "mem_increase_mb")
    entry = {"unit": unit, "plan": plan, **{name: {f: [] for f in fields} for name in ("lecture", "project")}}
    for r in range(args.repeats):
        for name, side_class in (("lecture", Lecture), ("project", Project)):
            start = peak_mb(device, reset=True)   # loader and models are built inside the window
            side = side_class(dataset, config(dataset, args), device, train)
            wall, cpu = timed(side, plan, device)
            peak = peak_mb(device)
            grew = max(0.0, peak - start)   # the kernel updates VmHWM lazily: a later read can be a page lower
            del side   # frees its loader and networks before the next measurement
            value = (wall / plan["batches"] * plan["epoch_batches"] if unit == "s/epoch"
                     else plan["batches"] * args.batch_size / max(wall, 1e-9))
            for f, v in zip(fields, (value, wall, cpu, peak, grew)):
                entry[name][f].append(round(v, 4))
            print(f"  {key:16s} {name:8s} repeat {r + 1}/{args.repeats}: {value:10.2f} {unit} "
                  f"({wall:.2f} s timed, CPU {cpu:.2f} s; peak {peak:.0f} MiB, +{grew:.0f} MiB)",
                  flush=True)
    a, b = (statistics.median(entry[name]["values"]) for name in ("lecture", "project"))
    entry["lecture"]["median"], entry["project"]["median"] = a, b
    entry["ratio_b_over_a"] = b / a
    entry["speedup"] = a / b if unit == "s/epoch" else b / a   # how many times faster b is
    results[key] = entry


# One cache build in a fresh process, so that its peak memory is its own.
# Peak RSS from VmHWM: ru_maxrss would also count the parent's size at fork.
GROWTH_CHILD = """
import sys, time
from pathlib import Path
import helper_data
def peak_kib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
data_dir, n, cache_dir, workers = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
files = helper_data.find_celeba(data_dir)[:n]
before, t0 = peak_kib(), time.perf_counter()
helper_data.build_cache(files, 64, helper_data.cache_path(files, 64, cache_dir), workers, quiet=True)
print(len(files), time.perf_counter() - t0, before, peak_kib())
"""


def cache_growth(args):
    """Build time and peak memory of the decode cache at growing sizes (the
    first N images of the folder, by name), each in a new process and a new
    temporary folder inside --cache-dir, then a line fit extrapolated to
    the full CelebA (202,599 images). --num-workers 0 decodes in the measured
    process itself, so that its peak RSS is the whole build's (Linux only)."""
    rows = []
    for n in args.cache_sizes:
        with tempfile.TemporaryDirectory(dir=args.cache_dir) as where:
            done = subprocess.run([sys.executable, "-c", GROWTH_CHILD, args.data_dir, str(n), where,
                                   str(args.num_workers)], capture_output=True, text=True,
                                  cwd=Path(__file__).parent)
            if done.returncode:
                raise RunError(f"the cache build of {n} images failed: {done.stderr.strip().splitlines()[-1:]}")
            size = sum(p.stat().st_size for p in Path(where).iterdir())
        images, build, before, peak = map(float, done.stdout.split())
        rows.append({"images": int(images), "build_s": round(build, 2), "file_mb": round(size / MB, 1),
                     "rss_before_mb": round(before / 1024), "peak_rss_mb": round(peak / 1024)})
        print(f"  cache of {rows[-1]['images']} images: built in {build:.1f} s, peak RSS "
              f"{rows[-1]['peak_rss_mb']} MiB ({rows[-1]['rss_before_mb']} MiB before the build), "
              f"file {rows[-1]['file_mb']} MiB", flush=True)
    return {"rows": rows, "full_celeba": extrapolate(rows, CELEBA_IMAGES)}


CELEBA_IMAGES = 202_599


def extrapolate(rows, n):
    """Least-squares lines through (images, build s) and (images, peak RSS), at n images."""
    x = torch.tensor([float(r["images"]) for r in rows], dtype=torch.float64)
    out = {"images": n}
    for key in ("build_s", "peak_rss_mb", "file_mb"):
        y = torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)
        slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum() if len(rows) > 1 else y[0] / x[0]
        out[key] = round(float(y.mean() + slope * (n - x.mean())), 1)
        out[key + "_per_1000"] = round(float(slope) * 1000, 3)
    return out


def seconds(fn, *args, **kw):
    t0 = time.perf_counter()
    fn(*args, **kw)
    return round(time.perf_counter() - t0, 3)


def setup(args, results):
    """One-time costs, before any measurement so that none pays for them: reading MNIST
    for each side; building the decoded CelebA cache (where it is missing, or a fresh one
    in a temporary folder with --rebuild-cache), then loading it."""
    if args.only in (None, "pipeline"):
        results["mnist_setup"] = {"lecture_s": seconds(lecture_dataset, "mnist", args.data_dir),
                                  "project_s": seconds(helper_data.read_idx_set, args.data_dir, "mnist")}
    if args.only == "mnist":
        return
    files = helper_data.find_celeba(args.data_dir)
    folder = files[0].parent   # without --cache-dir: where faces_uint8 puts it for training
    cache_dir = Path(args.cache_dir or helper_data.default_cache_dir(
        folder.parent if folder.name == "img_align_celeba" else folder))
    cache_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, args.num_workers)  # as make_loader: the build uses the worker count
    with (tempfile.TemporaryDirectory(dir=cache_dir) if args.rebuild_cache   # same disk as the cache
          else contextlib.nullcontext(cache_dir)) as where:
        built = not helper_data.cache_path(files, 64, where).exists()
        build, load = (seconds(helper_data.faces_uint8, files, 64, where, workers, quiet=True)
                       for _ in range(2))
    results["celeba_cache"] = {"images": len(files), "cache_dir": str(cache_dir), "build_workers": workers,
                               "build_s": build if built else None, "load_s": load}
    print(f"  celeba cache     {len(files)} images, {f'built in {build:.1f} s' if built else 'present'}; "
          f"loads in {load:.2f} s", flush=True)


# ---------------------------------------------------------------- machine and report

def _lines(path):
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]  # > cores: the machine was shared, numbers are noisy
    except (AttributeError, OSError):
        return None


def machine_info(device, cores):
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or platform.machine())
    info = {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
            "memory": memory_kind(device), "load_average_start": load_average(),
            "env": {k: v for k, v in os.environ.items()   # thread settings change CPU timings a lot
                    if k.startswith(("OMP_", "MKL_", "KMP_", "GOMP_")) or k == "CUDA_VISIBLE_DEVICES"}}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return info


def print_table(results):
    if "cache_growth" in results:
        print_growth(results["cache_growth"])
        return
    head = (f"{'measurement':18s} {'unit':9s} {'lecture (a)':>12s} {'project (b)':>12s} "
            f"{'b/a':>7s} {'b faster':>9s} {'peak MiB a':>11s} {'peak MiB b':>11s}")
    print("\n" + head + "\n" + "-" * len(head))
    for key in (k for k in ROWS if k in results):
        e = results[key]
        a, b = e["lecture"], e["project"]
        print(f"{ROWS[key]:18s} {e['unit']:9s} {a['median']:12.2f} {b['median']:12.2f} "
              f"{e['ratio_b_over_a']:7.3f} {e['speedup']:8.1f}x "
              f"{max(a['peak_mem_mb']):11.0f} {max(b['peak_mem_mb']):11.0f}")
    if "celeba_cache" in results:
        c = results["celeba_cache"]
        built = f"{c['build_s']:.1f} s" if c["build_s"] is not None else "not timed (cache present)"
        print(f"CelebA cache: one-time build {built}, load {c['load_s']:.2f} s ({c['images']} images)")
    if "mnist_setup" in results:
        s = results["mnist_setup"]
        print(f"MNIST setup: lecture dataset {s['lecture_s']:.2f} s, project tensor {s['project_s']:.2f} s")
    print(f"medians of {results['repeats']} repeat(s); memory: {results['machine']['memory']}")


def print_growth(growth):
    print(f"\n{'images':>8s} {'build s':>8s} {'peak RSS MiB':>13s} {'file MiB':>9s}")
    for r in growth["rows"]:
        print(f"{r['images']:8d} {r['build_s']:8.1f} {r['peak_rss_mb']:13d} {r['file_mb']:9.1f}")
    f = growth["full_celeba"]
    print(f"{f['images']:8d} {f['build_s']:8.0f} {f['peak_rss_mb']:13.0f} {f['file_mb']:9.0f}   "
          f"(line fit; per 1000 images: {f['build_s_per_1000']:.2f} s, {f['peak_rss_mb_per_1000']:.1f} MiB RSS)")


# ---------------------------------------------------------------- the GPU check

GPU_EPOCHS = 2   # of each preset at each precision (the first PRECISION_BATCHES compared)
PRECISION_BATCHES = 100


def gpu_check(args, device, cores):
    """bench_gpu's checks on both lecture presets, and the lecture's loop against
    ours; on a CPU, a tiny version of each (a few batches, no compiling)."""
    tiny = device.type != "cuda"
    args.repeats = 1
    results = {"machine": machine_info(device, cores), "tiny": tiny, "settings": vars(args), "repeats": 1,
               "tolerance": bench_gpu.PRECISION_TOLERANCE, "compared_batches": PRECISION_BATCHES}
    for dataset in ("mnist", "celeba"):
        cfg = config(dataset, args)
        loader = helper_data.make_loader(dataset, cfg, device)   # says where the images are kept
        batches = 2 if tiny else max(PRECISION_BATCHES, GPU_EPOCHS * len(loader))
        # A CPU's bf16 and fp16 convolutions take minutes: there only the MNIST GAN's.
        amps = ("off",) if tiny and dataset == "celeba" else ("off", "bf16", "fp16")
        results[dataset] = {"batches": batches, "precision": bench_gpu.precision(cfg, device, loader, batches, amps)}
        print(f"  {dataset} precision: {results[dataset]['precision']}", flush=True)
    # cfg and loader: the DCGAN's, the last of the loop
    results["celeba"]["variants"] = bench_gpu.variants(cfg, device, loader, 2 if tiny else 50, compile_too=not tiny)
    del loader   # its images leave the GPU before the input paths load them again
    results["input"] = bench_gpu.input_paths(helper_data.dataset_images(cfg), cfg, device, 2 if tiny else 200)
    n_mnist = len(helper_data.read_idx_set(args.data_dir, "mnist"))
    epoch_batches = -(-n_mnist // args.batch_size)
    for key, plan in (("mnist_train", dict(warmup=1 if tiny else 3, batches=2 if tiny else epoch_batches,
                                           epoch_batches=epoch_batches)),
                      ("celeba_train", dict(warmup=1 if tiny else 2, batches=1 if tiny else 50))):
        measure(key, {**plan, "full_epoch": plan["batches"] == plan.get("epoch_batches")}, args, device, results)
    results["passed"] = all(e["ok"] for d in ("mnist", "celeba") for e in results[d]["precision"].values()) \
        and all(e["finite"] for e in results["celeba"]["variants"].values())
    return results


def print_gpu_table(results):
    m = results["machine"]
    where = (f"{m['gpu']} (CUDA {m['cuda']}, torch {m['torch']})" if "gpu" in m
             else f"{m['cpu']}: the tiny CPU version, not a measurement")
    tol = results["tolerance"]
    print(f"\nGPU check on {where}")
    print(f"{'preset':8s} {'autocast':8s} {'batches':>7s} {'finite':>6s} {'images/s':>9s} {'peak MiB':>9s} "
          f"{'mean|dL|':>9s} {'max|dL|':>8s} {'ok':>3s}")
    for dataset in ("mnist", "celeba"):
        for amp, e in results[dataset]["precision"].items():
            diffs = (f"{e['mean_abs_diff']:9.4f} {e['max_abs_diff']:8.4f}" if "max_abs_diff" in e
                     else f"{'-':>9s} {'-':>8s}")
            print(f"{dataset:8s} {amp:8s} {results[dataset]['batches']:7d} {str(e['finite']):>6s} "
                  f"{e['images_per_s']:9.1f} {_mib(e['peak_mib'])} {diffs} {'yes' if e['ok'] else 'NO':>3s}")
    print(f"|dL|: |loss - float32's loss| per batch (G and D) over the first {results['compared_batches']} "
          f"batches from the same weights, batches and noise; ok: finite, mean <= {tol['mean']}, max <= {tol['max']}")
    for name, e in results["celeba"]["variants"].items():
        print(f"DCGAN {name:34s} {e['images_per_s']:9.1f} images/s, peak {_mib(e['peak_mib'])} MiB, "
              f"finite {e['finite']}" + (f", FAILED: {e['error']}" if "error" in e else ""))
    for name, e in results["input"].items():
        print(f"CelebA input, images {name:12s} {e['images_per_s']:12.1f} images/s")
    for key in ("mnist_train", "celeba_train"):
        e = results[key]
        print(f"{ROWS[key]:18s} lecture's loop {e['lecture']['median']:10.2f}, ours {e['project']['median']:10.2f} "
              f"{e['unit']} ({e['speedup']:.1f}x), peak MiB {max(e['lecture']['peak_mem_mb']):.0f} / "
              f"{max(e['project']['peak_mem_mb']):.0f}")
    print("all checks passed" if results["passed"] else "a check FAILED (see the rows marked NO)")


def _mib(value):
    return f"{value:9.0f}" if value == value else f"{'-':>9s}"   # NaN: not measured (a CPU)


# ---------------------------------------------------------------- main

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    a("--quick", action="store_true", help="few batches, 1 repeat: about a minute on a 2-core CPU")
    a("--only", choices=["mnist", "celeba", "pipeline", "cache"], help="one group of measurements")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    a("--repeats", type=int, help="repeats of each measurement (default 3, 1 with --quick)")
    a("--batches", type=int, help="timed training batches (default: a full MNIST epoch / "
                                  "5 DCGAN batches on CPU, 50 on CUDA; fewer with --quick)")
    a("--data-dir", default="./data", help="folder holding MNIST/raw and celeba/img_align_celeba")
    a("--cache-dir", help="decoded CelebA cache (default: the one training uses)")
    a("--rebuild-cache", action="store_true", help="time a fresh CelebA cache build (temporary copy)")
    a("--cache-sizes", type=lambda t: [int(v) for v in t.split(",")], default=[2500, 5000, 10000],
      help="with --only cache: the numbers of images to build caches of (in --cache-dir)")
    a("--num-workers", type=int, default=2, help="DataLoader workers of the lecture's loop (and cache build)")
    a("--batch-size", type=int, default=128, help="the lecture's 128; smaller only for tests")
    a("--threads", type=int, help="torch threads (default: the cores this process may use)")
    a("--gpu", action="store_true", help="the GPU check (bench_gpu.py): both lecture presets at each "
                                         "autocast, channels_last and --compile, input paths, the loops "
                                         "(under 8 minutes on one GPU); on a CPU a tiny version")
    a("--json", help="where the results go (default: runs/bench.json, with --gpu runs/gpu_check.json)")
    return p


def plans(args, device, epoch_batches):
    """Warm-up and timed batches of each measurement (a DCGAN step on a CPU takes seconds)."""
    cpu, quick = device.type == "cpu", args.quick
    n_mnist = args.batches or (50 if quick else epoch_batches)
    return {"mnist_pipeline": dict(warmup=2, batches=30 if quick else 200),
            "celeba_pipeline": dict(warmup=2, batches=8 if quick else 40),
            "mnist_train": dict(warmup=3, batches=n_mnist, epoch_batches=epoch_batches),
            "celeba_train": dict(warmup=1 if quick and cpu else 2,
                                 batches=args.batches or [[50, 5], [10, 2]][quick][cpu])}


def run_all(args, device, cores):
    results = {"machine": machine_info(device, cores), "repeats": args.repeats, "settings": vars(args),
               "precision": {"lecture": "float32", "project": str(helper_train.amp_dtype(
                   config("mnist", args), device) or torch.float32).replace("torch.", "")}}
    if args.only == "cache":
        results["cache_growth"] = cache_growth(args)
        return results
    n_mnist = len(helper_data.read_idx_set(args.data_dir, "mnist")) if args.only != "celeba" else 0
    print(f"device {device}, {torch.get_num_threads()} threads, {results['machine']['cpu']}, "
          f"load average {load_average()}", flush=True)
    if (load_average() or [0])[0] > cores - 0.5:
        print(f"warning: load average above {cores - 0.5} with {cores} cores: other work is running, "
              f"timings will be noisy (cpu_s in the JSON is steadier)", flush=True)
    t0 = time.perf_counter()
    setup(args, results)
    for key, plan in plans(args, device, -(-n_mnist // args.batch_size)).items():
        if args.only in (None, "pipeline" if key.endswith("pipeline") else key.split("_")[0]):
            plan["full_epoch"] = plan["batches"] == plan.get("epoch_batches")
            measure(key, plan, args, device, results)
    results["machine"]["load_average_end"] = load_average()
    results["total_s"] = round(time.perf_counter() - t0, 1)
    return results


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    batches = 1 if args.batches is None else args.batches
    if min(args.repeats, args.batch_size, batches) < 1 or args.num_workers < 0:
        sys.exit("error: --repeats, --batches and --batch-size must be >= 1, --num-workers >= 0")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.threads or cores)
    args.json = args.json or ("runs/gpu_check.json" if args.gpu else "runs/bench.json")
    try:
        results = (gpu_check if args.gpu else run_all)(args, pick_device(args.device), cores)
    except (helper_data.DataError, RunError) as e:
        sys.exit(f"error: {e}")
    (print_gpu_table if args.gpu else print_table)(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, results)
    print(f"results written to {args.json}")
    if args.gpu and not results["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

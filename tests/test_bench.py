"""Smoke test of bench.py: the whole --quick run on a tiny fake MNIST and face folder."""
import json
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench  # noqa: E402


def fake_data(root, n_digits=48, n_faces=16):
    """MNIST IDX files (torchvision's raw layout) and 89 x 109 JPEG faces."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_digits), ("t10k", 8)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">4i", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">2i", 2049, n) + bytes(n))
    faces = root / "celeba" / "img_align_celeba"
    faces.mkdir(parents=True)
    for i in range(n_faces):
        Image.fromarray(rng.integers(0, 256, (109, 89, 3), dtype=np.uint8)).save(faces / f"{i:06d}.jpg")


def test_quick_run_writes_every_measurement(tmp_path):
    fake_data(tmp_path / "data")
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
                "--batch-size", "8", "--batches", "2", "--pipeline-batches", "3", "--num-workers", "0",
                "--device", "cpu", "--threads", "1", "--json", str(out)])
    results = json.loads(out.read_text())
    for key in ("mnist_pipeline", "celeba_pipeline", "mnist_train", "celeba_train"):
        for side in ("lecture", "project"):
            assert results[key][side]["median"] > 0 and len(results[key][side]["values"]) == 1
            assert results[key][side]["peak_mem_mb"][0] > 0
        assert results[key]["ratio_b_over_a"] > 0
    assert results["mnist_train"]["plan"]["epoch_batches"] == 6          # 48 images / batch 8
    assert results["celeba_cache"]["build_s"] is not None                 # built in this run
    assert results["machine"]["cores"] >= 1 and results["machine"]["torch"]


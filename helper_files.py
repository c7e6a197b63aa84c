"""The files of a run folder: written atomically, read back for plots and reports.

Every file the project writes (checkpoints, plots, caches, JSON) goes through
`atomic_write`: the data lands in a temporary file beside the target, which is
renamed over it only once complete. A crash, a full disk or Ctrl-C therefore
leaves either the old file or the new one, never half of one.
"""
import contextlib
import csv
import json
import math
import os
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_write(path):
    """`with atomic_write(p) as tmp:` write to `tmp` (same folder and suffix, so
    writers that infer the format from the name still work); on success `tmp`
    replaces `p`, on any error it is removed and the old `p` stays."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    """Pretty JSON, atomically. NaN and infinities become null: they are not JSON."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2) + "\n")


def json_safe(obj):
    """obj with non-finite floats replaced by None, so json.dumps writes valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def read_metrics(run_dir):
    """metrics.csv as a dict of numpy columns ({} when there is no row yet)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return {}
    data = np.array(rows[1:], dtype=float)
    return {name: data[:, i] for i, name in enumerate(rows[0])}


def read_events(run_dir, kind=None):
    """events.jsonl as a list of dicts, only those whose "event" is `kind` if given.
    A line that is not a JSON object (cut short when a process was killed while
    writing it) is skipped."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists():
        return []
    events = [e for e in map(_json_or_none, path.read_text().splitlines()) if isinstance(e, dict)]
    return [e for e in events if kind is None or e.get("event") == kind]


def _json_or_none(line):
    try:
        return json.loads(line)
    except ValueError:
        return None

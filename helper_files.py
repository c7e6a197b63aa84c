"""The files of a run folder: written atomically, guarded by a lock, read back
for plots and reports.

Every file the project writes (checkpoints, plots, caches, JSON) goes through
`atomic_write`: the data lands in a temporary file beside the target, which is
renamed over it only once complete. A crash, a full disk or Ctrl-C therefore
leaves either the old file or the new one, never half of one. `RunLock` makes
one process at a time the writer of a run folder.
"""
import contextlib
import csv
import json
import math
import os
import re
import socket
import sys
import time
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:   # Windows: no flock, RunLock falls back to a pid file
    fcntl = None


class RunError(Exception):
    """A run folder, checkpoint, output path or flag that cannot be used; the message says why."""


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
    except OSError as e:
        if e.filename is None:   # a failed write names no file (a full disk): name the one written
            e.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def temp_pid(path):
    """The writer's pid in a name made by atomic_write (x.tmp123.png -> 123), else None."""
    m = re.fullmatch(r".+\.tmp(\d+)(\.[^.]*)?", Path(path).name)
    return int(m[1]) if m else None


def pid_alive(pid):
    """False only when no process `pid` exists on this machine. Windows cannot
    tell without extra packages (os.kill would kill it): True there."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        pass
    return True


def remove_stale_temps(folder, prefix=""):
    """Delete atomic_write's temporary files (those whose names start with
    `prefix`) whose writer is dead: a run killed with kill -9 or by the OOM
    killer mid-save. Returns their names."""
    stale = []
    for p in Path(folder).glob(f"{prefix}*.tmp*"):
        pid = temp_pid(p)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            p.unlink(missing_ok=True)
            stale.append(p.name)
    return stale


class RunLock:
    """`with RunLock(run_dir):` this process is the one writer of the run folder.

    An flock on RUN/.lock, which the OS releases however the process ends (even
    kill -9), so a lock left by a dead run is simply taken over. The file names
    its holder (pid, host, start) for the refusal. Without fcntl the file itself
    is the lock, stale once its pid is gone. Entering creates the folder and
    deletes temporary files of killed writers; leaving removes the lock file,
    and the folders it created if nothing else was written there."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.path = self.dir / ".lock"

    def __enter__(self):
        self.created = make_folder(self.dir, "run folder")
        try:
            self.fd = self._take_flock() if fcntl else self._take_pid_file()
        except OSError as e:
            self._remove_created()
            raise RunError(f"cannot write to run folder {self.dir}: {e.strerror}") from None
        except BaseException:
            self._remove_created()
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        with contextlib.suppress(OSError):   # only for the message to a refused second run
            os.write(self.fd, json.dumps(holder).encode())
        remove_stale_temps(self.dir)
        return self

    def _take_flock(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunError(self._held()) from None
            if _same_file(fd, self.path):   # else its holder removed it as we opened it: again
                os.ftruncate(fd, 0)
                return fd
            os.close(fd)

    def _take_pid_file(self):
        while True:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = self._holder().get("pid")
                if not isinstance(pid, int) or pid_alive(pid):
                    raise RunError(self._held() + f" (if it is not running, delete {self.path})") from None
                self.path.unlink(missing_ok=True)   # its holder died: stale

    def _holder(self):
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _held(self):
        h = self._holder()
        who = (f"pid {h.get('pid')} on {h.get('host')}, since {h.get('started')}"
               if "pid" in h else "a process that is just starting")
        return (f"{self.dir} is in use by another run ({who}): wait for it to end or stop it, "
                f"or choose another --out")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)   # while still held: no one else is inside
        os.close(self.fd)
        self._remove_created()
        return False

    def _remove_created(self):
        for folder in self.created:   # deepest first; stops at the first one that holds files
            try:
                folder.rmdir()
            except OSError:
                break


def _same_file(fd, path):
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def make_folder(folder, what):
    """Create `folder` and its missing parents; returns those created, deepest
    first. One that cannot be created (a file in the way, read-only) is a RunError."""
    folder = Path(folder)
    try:   # exists() too raises for a name longer than the file system allows
        if folder.exists() and not folder.is_dir():
            raise RunError(f"{what} {folder} is a file, not a folder")
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {what} {folder}: {e.strerror}") from None
    return missing


def check_output_file(path, flag):
    """Before any work: refuse an output file that could not be written (a
    folder in its place, a folder that cannot be created or written to).
    Creates the missing folders."""
    path = Path(path)
    try:
        is_folder = path.is_dir()
    except OSError as e:   # a name longer than the file system allows
        raise RunError(f"{flag} {path}: {e.strerror}") from None
    if is_folder:
        raise RunError(f"{flag} {path} is a folder, not a file")
    try:
        make_folder(path.parent, "folder")
    except RunError as e:
        raise RunError(f"{flag} {path}: {e}") from None
    if not os.access(path.parent, os.W_OK):
        raise RunError(f"{flag} {path}: cannot write to {path.parent.resolve()}")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text):
    """A message quoted from elsewhere without terminal colour codes."""
    return ANSI.sub("", str(text))


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


def append_event(run_dir, **fields):
    """One JSON line appended to events.jsonl (NaN and infinities become null)."""
    with open(Path(run_dir) / "events.jsonl", "a") as f:
        f.write(json.dumps(json_safe(fields)) + "\n")


def read_metrics(run_dir):
    """metrics.csv as a dict of numpy columns ({} when there is no row yet)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return {}
    header, rows = metric_rows(path)
    if not rows:
        return {}
    data = np.array(rows, dtype=float)
    return {name: data[:, i] for i, name in enumerate(header)}


def metric_rows(path):
    """(header, rows as lists of strings) of a metrics.csv. A row cut short (by
    a kill or a full disk mid-write: the file does not end in a newline) or that
    is not a row of numbers is skipped, as read_events skips such lines."""
    lines = Path(path).read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    rows = list(csv.reader(lines))
    if not rows:
        return [], []
    header = rows[0]
    return header, [r for r in rows[1:] if len(r) == len(header) and all(map(_is_number, r))]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


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


# ---------------------------------------------------------------- progress lines

class Progress:
    """Progress lines for a long job: a text, the time elapsed and the time
    left (from the rate so far), at most one line every `every_s` seconds."""

    def __init__(self, total, every_s=2.0, stream=sys.stdout, deadline=None):
        self.total, self.every_s, self.stream = total, every_s, stream
        self.start = self.last = time.time()
        self.deadline = deadline  # a time budget's end (time.time()), if any

    def update(self, done, text, force=False):
        """done: units finished of `total`; force: print even if a line was printed recently."""
        now = time.time()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        print(f"{text} | {self.times(done)}", file=self.stream, flush=True)

    def times(self, done):
        elapsed = time.time() - self.start
        left = elapsed / done * (self.total - done) if done else float("nan")
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - time.time()))
        return f"{hms(elapsed)} elapsed, {hms(left)} left"


def hms(seconds):
    if seconds != seconds:  # NaN: nothing done yet
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

"""helper_report: the progress GIF, the run report page and the comparison of runs,
on tiny run folders written here (config.json, metrics.csv, events.jsonl, grids)."""
import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import helper_plot  # noqa: E402
import helper_report  # noqa: E402

SECTIONS = ["Samples", "Losses", "Sample quality", "Progress", "Health", "Settings"]   # in this order


# ---------------------------------------------------------------- tiny run folders

def digit_grid(epoch, side=242):
    """An MNIST-like 8 x 8 grid: smooth white strokes on black, different every epoch."""
    rng = np.random.default_rng(epoch)
    low = Image.fromarray((rng.random((side // 4, side // 4)) * 255).astype(np.uint8))
    x = np.asarray(low.resize((side, side), Image.BILINEAR), dtype=float) / 255
    gray = (np.clip((x - 0.55) * 4, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))


def write_events(run, events):
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def make_run(run, epochs=3, batches=4, config=None, events=None, grid_side=242):
    """A run folder as training leaves it (before plotting): config, metrics, events, grids."""
    run.mkdir(parents=True)
    cfg = {"model": "fc", "epochs": epochs, "batch_size": 16, "preset": "lecture", "seed": 1,
           "lr_gen": 2e-4, "lr_disc": 2e-4, "out": str(run), "world_size": 1,
           "device_used": "cpu", "torch": "2.14.1", "batch_per_process": 16, **(config or {})}
    (run / "config.json").write_text(json.dumps(cfg))
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "batch", "g_loss", "d_loss", "d_acc_real", "d_acc_fake"])
        for s in range(epochs * batches):
            w.writerow([s + 1, s // batches + 1, s % batches + 1, 1 + 0.1 * np.sin(s), 1.2, 0.6, 0.5])
    if events is None:
        events = [{"event": "start", "step": 0, "epoch": 0, "resumed": False, "host": "testhost",
                   "torch": "2.14.1", "device": "cpu"}]
        for e in range(1, epochs + 1):
            if e == 2:
                events.append({"event": "warning", "step": 2 * batches, "epoch": 2,
                               "message": "D wins: <b>accuracy</b> near 1"})
                events.append({"event": "eval", "epoch": 2, "step": 2 * batches, "fid": 50.5,
                               "inception_score": 2.25, "class_shares": [0.5, 0.5]})
            events.append({"event": "epoch", "epoch": e, "step": e * batches, "seconds": 1.5 + e})
    write_events(run, events)
    (run / "grids").mkdir()
    for e in range(1, epochs + 1):
        digit_grid(e, grid_side).save(run / "grids" / f"epoch_{e:03d}.png")
    digit_grid(999, grid_side).save(run / "reals.png")
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 3-epoch run with every plot, progress.gif and report.html."""
    run = make_run(tmp_path_factory.mktemp("report") / "run",
                   config={"note": "<script>alert(1)</script>"})
    helper_plot.plot_run(run)
    helper_report.write_progress_gif(run)
    helper_report.write_report(run)
    return run


class Links(HTMLParser):
    """Every src/href of a page, and the number of <img> tags."""
    def __init__(self, text):
        super().__init__()
        self.urls, self.images = [], 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.images += tag == "img"
        self.urls += [v for k, v in attrs if k in ("src", "href")]


def gif_frames(path):
    """(frames as RGB arrays, durations in ms, loop) of a GIF."""
    with Image.open(path) as im:
        frames, ms = [], []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
            ms.append(im.info["duration"])
        return frames, ms, im.info.get("loop")


# ---------------------------------------------------------------- the GIF

def test_save_gif_loops_and_pauses_on_the_last_frame(tmp_path):
    frames = [np.full((8, 10, 3), 60 * i, np.uint8) for i in range(4)]
    path = helper_report.save_gif(frames, tmp_path / "a.gif", seconds_per_frame=0.1, last_pause=1.5)
    got, ms, loop = gif_frames(path)
    assert len(got) == 4 and got[0].shape == (8, 10, 3)
    assert ms == [100, 100, 100, 1500] and loop == 0


def test_save_gif_leaves_no_temp_file_and_keeps_the_old_gif_on_error(tmp_path, monkeypatch):
    path = helper_report.save_gif([np.zeros((4, 4, 3), np.uint8)], tmp_path / "a.gif")
    before = path.read_bytes()

    def broken(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half a gif")
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", broken)
    with pytest.raises(OSError):
        helper_report.save_gif([np.ones((4, 4, 3), np.uint8)], path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.gif"]
    with pytest.raises(ValueError):
        helper_report.save_gif([], tmp_path / "b.gif")


def closest_epoch(frame, run, candidates, size):
    """Which epoch's grid (scaled to size) the grid part of a GIF frame shows."""
    def distance(e):
        with Image.open(run / "grids" / f"epoch_{e:03d}.png") as im:
            want = np.asarray(im.convert("RGB").resize(size, Image.LANCZOS), dtype=float)
        return np.abs(frame[helper_report.strip_height(size[0]):] - want).mean()
    return min(candidates, key=distance)


def test_progress_gif_of_100_epochs_is_capped_labelled_and_small(tmp_path):
    run = make_run(tmp_path / "run", epochs=100, batches=1, events=[])
    path = helper_report.write_progress_gif(run, max_frames=40)
    frames, ms, loop = gif_frames(path)
    assert len(frames) == 40 and loop == 0
    assert ms[-1] > ms[0] and len(set(ms[:-1])) == 1
    assert path.stat().st_size < 2e6, path.stat().st_size   # fit for a README
    h, w, _ = frames[0].shape
    assert (w, h) == (242, 242 + helper_report.strip_height(242))   # the label strip sits above the grid
    strip = frames[0][:helper_report.strip_height(242)]
    assert (strip < 100).any() and (strip > 200).mean() > 0.8  # dark text on white
    assert closest_epoch(frames[0], run, [1, 2, 3], (242, 242)) == 1
    assert closest_epoch(frames[-1], run, [98, 99, 100], (242, 242)) == 100


def test_progress_gif_scales_big_grids_down_and_needs_grids(tmp_path):
    run = make_run(tmp_path / "run", epochs=3, batches=1, events=[], grid_side=530)
    frames, _, _ = gif_frames(helper_report.write_progress_gif(run, max_side=400))
    strip = helper_report.strip_height(400)
    assert len(frames) == 3 and frames[0].shape == (400 + strip, 400, 3)
    text_rows = np.flatnonzero((frames[0][:strip] < 100).any(axis=(1, 2)))
    assert text_rows.max() - text_rows.min() + 1 >= 400 / 25   # the label grows with the frame
    shutil.rmtree(run / "grids")
    assert helper_report.write_progress_gif(run) is None
    with pytest.raises(ValueError):
        helper_report.write_progress_gif(run, max_frames=1)


def test_shortened_epochs_say_so_where_epochs_are_labelled(tmp_path, monkeypatch):
    """With --max-batches "epoch 3" is 3 short epochs: the labels say how short."""
    full = make_run(tmp_path / "full", epochs=3, batches=4)
    short = make_run(tmp_path / "short", epochs=3, batches=4, config={"max_batches": 4})
    assert helper_report.epoch_labels(full) == {1: "epoch 1", 2: "epoch 2", 3: "epoch 3"}
    assert helper_report.epoch_labels(short) == {e: f"epoch {e} (of 4 batches)" for e in (1, 2, 3)}
    titles = []
    monkeypatch.setattr(helper_plot, "side_by_side", lambda paths, names, out, **kw: titles.extend(names))
    helper_plot.plot_run(short)                               # progress.png, real_vs_fake.png
    assert "epoch 3 (of 4 batches)" in titles and "generated (epoch 3 (of 4 batches))" in titles
    strips = []
    for run in (full, short):                                 # the GIF's label is longer, not cut
        frame = gif_frames(helper_report.write_progress_gif(run))[0][-1]
        dark = np.flatnonzero((frame[:helper_report.strip_height(242)] < 100).any(axis=(0, 2)))
        strips.append(dark.max())
    assert strips[1] > strips[0] * 2 and strips[1] < 242


# ---------------------------------------------------------------- the report page

def test_report_has_every_section_and_the_run_facts(run):
    page = (run / "report.html").read_text()
    where = [page.index(f"<h2>{title}</h2>") for title in SECTIONS]
    assert where == sorted(where)
    assert page.index("real_vs_fake.png") < page.index("loss.png") < page.index("<h2>Settings</h2>")
    for fact in ("testhost", "3 / 3", "finished", "3.5", "classifier FID (lower is better)", "50.5", "2.25", "lr_gen"):
        assert fact in page, fact
    assert "warning at step 8, epoch 2" in page


def test_report_shows_typed_settings_evaluate_scores_and_recoveries_apart(tmp_path):
    events = [{"event": "start", "step": 0, "epoch": 0, "host": "h", "device": "cpu"},
              {"event": "epoch", "epoch": 1, "step": 4, "seconds": 2.0},
              {"event": "warning", "epoch": 1, "step": 4, "message": "mode collapse: spread 0.1"},
              {"event": "warning", "epoch": 1, "step": 4, "message": "sample diversity recovered after epoch 1"},
              {"event": "evaluate", "epoch": 1, "num": 64, "fid": 12.5, "inception_fid": 80.25,
               "real_floor": {"fid": 1.5, "inception_fid": 6.75}}]
    run = make_run(tmp_path / "run", epochs=1, events=events,
                   config={"typed": ["lr_gen"], "threads": 0, "threads_used": 2})
    page = (helper_report.write_report(run) or run / "report.html").read_text()
    settings = page[page.index("<h2>Settings</h2>"):]
    shown, folded = settings.split("<details>")
    assert "lr_gen" in shown and "batch_size" not in shown and "batch_size" in folded
    assert "Inception FID (lower is better)" in page and "80.25" in page and "6.75" in page
    health = page[page.index("<h2>Health</h2>"):page.index("<h2>Settings</h2>")]
    problems, recoveries = health.split("<h3>Recoveries</h3>")
    assert "mode collapse" in problems and "recovered" not in problems and "recovered" in recoveries
    assert "<td>CPU threads</td><td>2</td>" in page


def test_report_escapes_text_and_holds_no_script(run):
    page = (run / "report.html").read_text()
    assert "<script" not in page.lower() and "<b>accuracy" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;accuracy" in page


def test_report_links_are_relative_and_work_from_a_copy(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "elsewhere" / "copied")
    links = Links((copy / "report.html").read_text())
    assert {"loss.png", "accuracy.png", "eval.png", "progress.gif", "progress.png",
            "real_vs_fake.png"} <= set(links.urls)
    for url in links.urls:
        assert not url.startswith(("/", "http", "file:")) and ":" not in url, url
        assert (copy / url).is_file(), url


def test_report_shows_only_images_that_exist(tmp_path):
    run = make_run(tmp_path / "run", epochs=2)       # no plots drawn: grids and reals only
    (run / "final_grid.png").write_bytes((run / "reals.png").read_bytes())
    assert Links(helper_report.write_report(run).read_text()).urls == ["final_grid.png", "reals.png"]
    (run / "reals.png").unlink()
    (run / "final_grid.png").unlink()
    page = helper_report.write_report(run).read_text()
    assert Links(page).urls == [] and "No grids yet." in page


START = {"event": "start", "step": 0, "epoch": 0, "resumed": False}


@pytest.mark.parametrize("events, ended, resumed", [
    ([START, {"event": "epoch", "epoch": 1, "step": 4},
      {"event": "interrupted", "epoch": 2, "batch": 3, "step": 7}], "interrupted at epoch 2, batch 3", "no"),
    ([START, {"event": "epoch", "epoch": 1, "step": 4},
      {"event": "interrupted", "epoch": 2, "batch": 3, "step": 7}, {**START, "resumed": True},
      {"event": "epoch", "epoch": 2, "step": 8}, {"event": "epoch", "epoch": 3, "step": 12}],
     "finished", "yes"),
    ([{"event": "epoch", "epoch": 1, "step": 4}, {"event": "time_budget", "epoch": 1, "step": 4},
      {"event": "epoch", "epoch": 2, "step": 8}], "not finished", "yes"),     # older runs: no start
    ([START, {"event": "diverged", "step": 3, "message": "G loss is nan"}],
     "diverged at step 3: G loss is nan", "no"),
    ([START, {"event": "epoch", "epoch": 1, "step": 4}, {"event": "time_budget", "epoch": 1, "step": 4}],
     "stopped by the time budget after epoch 1", "no"),
    ([START, {"event": "epoch", "epoch": 1, "step": 4},
      {"event": "time_budget", "epoch": 2, "batch": 3, "step": 7}],
     "stopped by the time budget at epoch 2, batch 3", "no"),
])
def test_report_says_how_the_run_ended(tmp_path, events, ended, resumed):
    run = make_run(tmp_path / "run", events=events)
    page = helper_report.write_report(run).read_text()
    assert ended in page
    assert f"<td>resumed</td><td>{resumed}</td>" in page


# ---------------------------------------------------------------- comparing runs

def test_compare_labels_runs_by_the_settings_that_differ(tmp_path):
    a = make_run(tmp_path / "a", config={"loss": "hinge", "lr_gen": 1e-4})
    b = make_run(tmp_path / "b", config={"loss": "bce"})
    png, page = helper_plot.compare([a, b], tmp_path / "cmp")
    configs = [json.loads((r / "config.json").read_text()) for r in (a, b)]
    assert helper_report.run_labels([a, b], configs) == ["loss=hinge, lr_gen=0.0001",
                                                          "loss=bce, lr_gen=0.0002"]
    text = page.read_text()
    assert "loss=hinge, lr_gen=0.0001" in text and "<td>batch_size</td>" not in text
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 600
    assert Links(text).urls == ["compare.png"]
    same = [make_run(tmp_path / name) for name in ("c", "d")]   # only "out" differs
    assert helper_report.run_labels(same, [json.loads((r / "config.json").read_text())
                                           for r in same]) == ["c", "d"]


def test_compare_links_each_report_relative_to_the_out_folder(run, tmp_path):
    other = make_run(tmp_path / "runs" / "other", config={"preset": "best"})
    _, page = helper_plot.compare([run, other], tmp_path / "out" / "cmp", labels=["one", "two"])
    urls = Links(page.read_text()).urls
    assert urls[0] == "compare.png" and len(urls) == 2       # `other` has no report yet
    assert not urls[1].startswith("/") and (page.parent / urls[1]).resolve() == run / "report.html"


# ---------------------------------------------------------------- command line

def test_compare_refuses_an_earlier_comparison_without_overwrite(tmp_path, capsys):
    run = make_run(tmp_path / "r", epochs=1)
    assert helper_plot.main(["compare", run, "--out", tmp_path / "cmp"]) is None
    (tmp_path / "cmp" / "compare.html").write_text("kept")
    with pytest.raises(SystemExit) as e:
        helper_plot.main(["compare", run, "--out", tmp_path / "cmp"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and "--overwrite" in lines[0], lines
    assert (tmp_path / "cmp" / "compare.html").read_text() == "kept"
    helper_plot.main(["compare", run, "--out", tmp_path / "cmp", "--overwrite"])
    assert "<html" in (tmp_path / "cmp" / "compare.html").read_text()


def test_main_writes_gif_and_report_and_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    run = make_run(tmp_path / "runs" / "r", epochs=2)
    helper_plot.main([run])
    assert (run / "progress.gif").exists() and (run / "report.html").exists()
    assert (run / "loss.png").exists()                       # plots drawn first
    helper_plot.main(["compare", run, run])
    assert (tmp_path / "runs" / "compare" / "compare.html").exists()
    def refused(argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            helper_plot.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1, lines
        return lines[0]
    for argv in ([tmp_path], ["compare"], ["compare", run, "--out"], []):
        refused(argv)
    assert "not a run folder" in refused([tmp_path])
    with open(run / "events.jsonl", "a") as f:
        f.write('{"event": "epo')                            # a run killed mid-line
    helper_plot.main(["compare", run, "--out", tmp_path / "cmp"])   # the cut line is skipped
    assert (tmp_path / "cmp" / "compare.html").exists()


# ---------------------------------------------------------------- in a real browser

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
# Added to a copy of the page only (the shipped page holds no script): counts loaded images.
COUNTER = ("<script>addEventListener('load', () => document.body.dataset.loaded ="
           " [...document.images].filter(i => i.complete && i.naturalWidth > 0).length)</script>")


def chromium(*args, cwd):
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={cwd / 'profile'}", "--virtual-time-budget=5000",
                           "--run-all-compositor-stages-before-draw", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_report_renders_with_every_image_in_chromium(run, tmp_path):
    if not BROWSER:
        pytest.skip("chromium not installed: apt-get install chromium")
    copy = shutil.copytree(run, tmp_path / "copy")
    page = (copy / "report.html").read_text()
    (copy / "report.html").write_text(page.replace("</body>", COUNTER + "</body>"))
    dom = chromium("--dump-dom", (copy / "report.html").as_uri(), cwd=tmp_path).stdout
    loaded = re.search(r'data-loaded="(\d+)"', dom)
    assert loaded, dom[-500:]
    assert int(loaded[1]) == Links(page).images == 6
    shot = tmp_path / "report.png"          # kept in tmp for a look, never committed
    chromium(f"--screenshot={shot}", "--window-size=1100,2400", (copy / "report.html").as_uri(),
             cwd=tmp_path)
    with Image.open(shot) as im:
        assert im.size == (1100, 2400)


def test_report_shows_a_conditional_runs_scores_by_class_with_their_floors(tmp_path):
    per_class = {"class_agreement_per_class": {"samples": [0.75, None], "real_floor": [0.5, 1.0]},
                 "class_fid_per_class": {"samples": [3.5, 4.25], "real_floor": [0.125, None]}}
    events = [{"event": "epoch", "epoch": 1, "step": 4, "seconds": 2.0},
              {"event": "evaluate", "epoch": 1, "num": 64, "class_agreement": 0.75, "per_class": per_class,
               "real_floor": {"class_agreement": 0.5}}]
    run = make_run(tmp_path / "run", epochs=1, events=events,
                   config={"conditional": True, "classes": ["cat", "dog"]})
    page = helper_report.write_report(run).read_text()
    table = page[page.index("By class, evaluate.py at epoch 1"):]
    assert ("<th>class agreement</th><th>class agreement (floor)</th>"
            "<th>classifier FID</th><th>classifier FID (floor)</th>") in table
    assert "<td>cat</td><td>0.75</td><td>0.5</td><td>3.5</td><td>0.125</td>" in table
    assert "<td>dog</td><td>-</td><td>1</td><td>4.25</td><td>-</td>" in table   # NaN was kept as null
    plain = make_run(tmp_path / "plain", epochs=1, events=events[:1])
    assert "By class" not in helper_report.write_report(plain).read_text()

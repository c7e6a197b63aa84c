"""The training-health monitor on synthetic loss streams and sample batches:
it reports each episode's start and end once, and stays silent on healthy data."""
import json

import numpy as np
import torch

import helper_health as hh
import train_mnist_gan
from conftest import mnist_argv, read_events, run_main
from helper_health import HealthMonitor


def rows(g, d, start=0):
    """Metric rows [step, epoch, batch, g, d, acc_real, acc_fake] from loss sequences."""
    return [[start + i, 1, start + i + 1, gi, di, 0.5, 0.5] for i, (gi, di) in enumerate(zip(g, d))]


def healthy(n, seed=0):
    rng = np.random.default_rng(seed)
    return 1.2 + 0.2 * rng.standard_normal(n), 0.5 + 0.05 * rng.standard_normal(n)


def real_batch():
    return torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_silent_on_healthy_losses():
    g, d = healthy(1000)
    assert HealthMonitor(real_batch()).update(rows(g, d)) == []


def test_discriminator_dominance_episode_start_and_end():
    g, d = healthy(300)
    d[100:160], g[100:160] = 0.003, 11.0          # like the lecture's DCGAN around batches 60-80
    messages = HealthMonitor(real_batch()).update(rows(g, d))
    dominance = [m for m in messages if "discriminator domina" in m]
    runaway = [m for m in messages if "generator loss" in m]
    assert len(dominance) == 2 and "from step" in dominance[0] and "ended" in dominance[1]
    start = int(dominance[0].split("from step ")[1].split(":")[0])
    assert 100 <= start <= 110
    assert len(runaway) == 2


def test_no_flicker_at_the_threshold():
    """Hysteresis: a mean wobbling around the floor gives one start, not many."""
    g, d = healthy(400)
    d[100:300] = np.where(np.arange(200) % 20 < 10, 0.04, 0.06)
    g[100:300] = 4.0
    messages = HealthMonitor(real_batch()).update(rows(g, d))
    assert sum("dominates from" in m for m in messages) == 1


def test_stalled_losses():
    g, d = healthy(100)
    g = np.concatenate([g, np.full(hh.FLAT_WINDOW, 0.7)])
    d = np.concatenate([d, np.full(hh.FLAT_WINDOW, 0.69)])
    messages = HealthMonitor(real_batch()).update(rows(g, d))
    assert any("stopped changing" in m for m in messages)


def test_collapse_and_recovery_from_samples():
    real = real_batch()
    mon = HealthMonitor(real)
    mon.update(rows(*healthy(hh.COLLAPSE_AFTER)))
    same = real[:1].expand(64, -1, -1, -1)                 # 64 identical images
    assert mon.check_samples(real.flip(0), epoch=1)[1] == []  # diverse: silent
    ratio, collapsed = mon.check_samples(same + 0.001 * torch.randn_like(same), epoch=2)
    assert ratio < 0.1
    assert len(collapsed) == 1 and "collapsed after epoch 2" in collapsed[0]
    assert mon.check_samples(same, epoch=3)[1] == []          # still collapsed: said once
    _, recovered = mon.check_samples(real, epoch=4)
    assert len(recovered) == 1 and "recovered" in recovered[0]


def test_collapse_not_judged_before_bn_statistics_settle():
    real = real_batch()
    mon = HealthMonitor(real)
    assert mon.check_samples(real[:1].expand(64, -1, -1, -1), epoch=1)[1] == []


def test_replay_on_a_run_folder(tmp_path):
    g, d = healthy(200)
    d[50:120] = 0.001
    with open(tmp_path / "metrics.csv", "w") as f:
        f.write("step,epoch,batch,g_loss,d_loss,d_acc_real,d_acc_fake\n")
        for r in rows(g, d):
            f.write(",".join(map(str, r)) + "\n")
    messages = hh.replay(tmp_path)
    assert any("dominates" in m for m in messages) and any("ended" in m for m in messages)


def test_an_ongoing_warning_is_not_new_after_a_resume(mnist_root, tmp_path, monkeypatch, capsys):
    """D "dominates" from the first batches and never stops (thresholds patched):
    reported once before the checkpoint, and not again after --resume."""
    monkeypatch.setattr(hh, "WINDOW", 2)
    monkeypatch.setattr(hh, "D_LOSS_FLOOR", 1e9)
    out = tmp_path / "run"
    assert run_main(train_mnist_gan.main, mnist_argv(mnist_root, out, epochs=2))[0] == 0
    assert [e["step"] for e in read_events(out) if e["event"] == "warning"] == [1]
    code, stdout, _ = run_main(train_mnist_gan.main, ["--resume", "--out", out, "--epochs", 3], capsys)
    assert code == 0 and "warning:" not in stdout
    assert [e["step"] for e in read_events(out) if e["event"] == "warning"] == [1]


def test_restore_equals_the_monitor_that_ran(tmp_path):
    """A monitor restored at step 300 is in the state of one that saw those 300
    batches: D has dominated since step 109 and the samples collapsed after epoch 3;
    neither is said again, and the dominance ends after as many batches as it would have."""
    g, d = healthy(400)
    d[100:320], g[100:320] = 0.003, 11.0
    all_rows, ratios = rows(g, d), {1: 0.9, 2: 0.9, 3: 0.01}
    (tmp_path / "metrics.csv").write_text("step,epoch,batch,g_loss,d_loss,d_acc_real,d_acc_fake\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in all_rows))
    (tmp_path / "events.jsonl").write_text("".join(
        json.dumps({"event": "epoch", "epoch": e, "step": 100 * e, "spread_ratio": r}) + "\n"
        for e, r in ratios.items()))
    ran = HealthMonitor(real_batch())
    for e, r in ratios.items():
        assert ran.update(all_rows[100 * (e - 1):100 * e]) or e == 1
        assert ran._check_ratio(r, e) or e < 3
    restored = HealthMonitor(real_batch())
    restored.restore(tmp_path, 300)
    collapsed = real_batch()[:1].expand(64, -1, -1, -1)
    assert restored.check_samples(collapsed, 4)[1] == ran.check_samples(collapsed, 4)[1] == []
    later = restored.update(all_rows[300:])
    assert later == ran.update(all_rows[300:]), later
    assert [m.ended for m in later] == [True] * 3 and "after 212 batches" in later[1]

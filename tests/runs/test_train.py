import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import SHARED, needs_data, small_run_flags, strip

from pleat.cli import main
from pleat.runs.config import Config, load, parse_set
from pleat.runs.store import CorruptRun, RunStore, read_metrics, runs
from pleat.runs.train import train


def quick(tmp_path, **kw) -> Config:
    values = dict(
        dataset="fashion-mnist",
        model="fc2",
        kind="pla",
        layers=[2],
        radius=0.01,
        lr=0.01,
        epochs=2,
        train_subset=2000,
        test_subset=1000,
        data_dir=str(SHARED),
        out_dir=str(tmp_path),
        progress=False,
    )
    values.update(kw)
    return Config.from_dict(values)


@needs_data
def test_short_run_learns_and_writes_the_store(tmp_path):
    config = quick(tmp_path)
    result = train(config)
    assert result["best_test_accuracy"] > 0.5  # chance is 0.1
    run = Path(result["run"])
    assert run == tmp_path / config.key()
    for name in ("config.json", "environment.json", "metrics.jsonl", "state.json", "result.json", "checkpoint-2.pt"):
        assert (run / name).exists(), name
    env = json.loads((run / "environment.json").read_text())
    assert {"git_commit", "versions", "device"} <= set(env) and "torch" in env["versions"]
    metrics = read_metrics(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert set(metrics[0]["temperature"]) == {"fc1", "fc2", "out"}
    assert Config.from_dict(json.loads((run / "config.json").read_text())) == config
    # a finished config does nothing
    mtime = (run / "result.json").stat().st_mtime_ns
    assert train(config) == result and (run / "result.json").stat().st_mtime_ns == mtime
    table = runs(tmp_path)
    assert table.loc[0, "status"] == "finished" and table.loc[0, "epochs_done"] == 2
    assert table.loc[0, "best_test_accuracy"] == result["best_test_accuracy"]


KILLABLE = """
import json, sys, time
from pleat.runs import store, train
from pleat.runs.config import Config

append = store.RunStore.append_metrics

def announce(self, record):  # after each epoch's metrics line: say so, and hang at the chosen epoch
    append(self, record)
    print(record["epoch"], flush=True)
    if record["epoch"] == int(sys.argv[2]):
        time.sleep(3600)  # killed here: after the metrics line, before its checkpoint

store.RunStore.append_metrics = announce
train.train(Config.from_dict(json.loads(sys.argv[1])))
"""


@needs_data
@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_numbers(tmp_path):
    settings = dict(epochs=4, train_subset=1000, test_subset=300)
    reference = train(quick(tmp_path / "whole", **settings))
    config = quick(tmp_path / "killed", **settings)
    store = RunStore(config)
    values = json.dumps({k: v for k, v in config.to_dict().items() if k != "sharpness"})
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, values, "2"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1" and proc.stdout.readline().strip() == "2"  # events, not timers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.finished and len(store.metrics()) == 2 and store.checkpoint_epoch() == 1
    resumed = train(config)  # from epoch 1's checkpoint: the orphan epoch-2 line is dropped and redone
    assert strip(store.metrics()) == strip(RunStore(quick(tmp_path / "whole", **settings)).metrics())
    assert resumed["final_test_accuracy"] == reference["final_test_accuracy"]


@needs_data
def test_corruption_is_detected(tmp_path):
    config = quick(tmp_path, epochs=1, train_subset=500, test_subset=200)
    train(config)
    store = RunStore(config)
    (store.dir / "result.json").unlink()  # as if interrupted after its checkpoint
    checkpoint = store.dir / "checkpoint-1.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CorruptRun, match="sha256"):
        train(config)
    checkpoint.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CorruptRun, match="checkpoint-1.pt"):
        train(config)
    metrics = store.dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-20])
    with pytest.raises(CorruptRun, match="metrics.jsonl"):
        read_metrics(metrics)
    assert runs(tmp_path).loc[0, "status"] == "corrupt"


def test_a_run_copied_without_its_checkpoints_trains_again_from_epoch_0(tmp_path, fashion):
    from pleat.runs.store import trained_epochs

    config = quick(tmp_path, epochs=2, train_subset=500, test_subset=200, data_dir=str(fashion))
    reference = train(config)
    store = RunStore(config)
    (store.dir / "result.json").unlink()
    (store.dir / "checkpoint-2.pt").unlink()  # the latest gone: the one before it is what a resume would start from
    assert trained_epochs(store.dir, config.epochs) == 1
    for checkpoint in store.dir.glob("checkpoint-*.pt"):  # as a committed or tarred store of an unfinished run
        checkpoint.unlink()
    assert trained_epochs(store.dir, config.epochs) == 0 and runs(tmp_path).loc[0, "status"] == "interrupted"
    with pytest.warns(UserWarning, match="holds none of its checkpoints .*training it again from epoch 0"):
        again = train(config)
    assert [m["epoch"] for m in store.metrics()] == [1, 2]
    assert again["final_test_accuracy"] == reference["final_test_accuracy"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "foo=1"], "unknown config key 'foo'; known keys"),
        (["--set", "layer=[2]"], "unknown config key 'layer'; did you mean 'layers'?"),
        (["--radius", "-0.5"], "'radius'"),
        (["--dataset", "imagenet"], "'dataset'"),
        (["--batch-size", "0"], "'batch_size'"),
        (["--set", "layers=true"], "'layers'"),
        (["--set", "epochs=1.5"], "'epochs'"),
        (["--model", "cnn-cifar10"], "'model'"),
        (["--layers", "[7]"], "layer index 7 is out of range 1..3"),  # before the data is loaded
        (["--samples", "0"], "smooths nothing"),
        (["--radius", "0"], "use --kind none for plain SGD"),
        (["--data-dir", "/no/such/folder"], "data_dir /no/such/folder is not a folder"),
        (["--radius", "relative-weight:-1"], "relative-weight:RHO"),
        (["--set", "epochs=1", "lr=0.1"], "give each its own --set: --set lr=0.1"),  # one --set per override
    ],
)
def test_bad_configs_rejected_before_work(tmp_path, capsys, argv, message):
    assert main(["train", "--out-dir", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_toml_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('dataset = "mnist"\nlayers = [1, 2]\nradius = 0.02\nsharpness = inf\n')
    config = load(path, parse_set(["radius=0.05", "kind=plea"]))
    assert (config.dataset, config.layers, config.radius, config.kind) == ("mnist", (1, 2), 0.05, "plea")
    assert config.key() == load(path, parse_set(["radius=0.05", "kind=plea", "out_dir=elsewhere"])).key()
    assert config.key() != load(path, parse_set(["radius=0.06", "kind=plea"])).key()
    path.write_text("radius = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load(path)
    with pytest.raises(ValueError, match="'radius' must be of type float"):
        Config.from_dict({"radius": "big"})
    assert Config() == load()  # no file: the paper's Figure 3 protocol
    assert (Config().lr, Config().epochs, Config().batch_size, Config().layers) == (1e-4, 120, 256, (2,))


@needs_data
def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    config = quick(tmp_path, epochs=1, train_subset=300, test_subset=100, tensorboard=True, kind="none")
    train(config)
    assert list((RunStore(config).dir / "tensorboard").glob("events.out.tfevents.*"))


@needs_data
def test_cli_train_and_runs(tmp_path, capsys):
    args = ["--dataset", "mnist", "--kind", "plea", "--layers", "[1]", *small_run_flags(tmp_path, epochs=1)]
    assert main(["train", *args]) == 0
    assert "results in" in capsys.readouterr().out
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "mnist" in out and "plea" in out
    assert main(["runs", str(tmp_path / "typo")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cnn_run_with_augmentation_on_files_written_here(tmp_path, monkeypatch):
    """The CIFAR-10 path end to end (CNN of eq 24, augmentation, PLA on head II) on small files in the real format."""
    import hashlib
    import pickle

    import numpy as np

    from pleat.runs import data

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in names}
    real = data._files("cifar10")
    monkeypatch.setattr(data, "_files", lambda name: (real[0], md5, real[2]))  # these files' own checksums
    config = Config.from_dict(
        dict(
            dataset="cifar10",
            model="cnn-cifar10",
            kind="pla",
            layers=["head2"],
            batch_size=8,
            epochs=2,
            lr=1e-3,
            data_dir=str(tmp_path / "data"),
            out_dir=str(tmp_path / "runs"),
            progress=False,
        )
    )
    result = train(config)
    metrics = RunStore(config).metrics()
    assert result["epochs"] == 2 and len(metrics) == 2
    assert set(metrics[0]["temperature"]) == {f"features.{i}" for i in (0, 2, 5, 7, 9)} | {"head1", "head2", "out"}
    assert all(0 <= m["test_accuracy"] <= 1 for m in metrics)


def _tiny_step(kind, seed=0, **kw):
    """One training step of `kind` on the paper's fc2 in float64 by the trainer (a group of one), to be checked
    against what a hand-written step does."""
    import contextlib

    import torch

    from pleat.runs.train import Group, member

    values = {"kind": kind, "radius": 0.05, "lr": 0.1, "momentum": 0.0, "layers": [2], "dtype": "float64", **kw}
    config = Config.from_dict({**values, "seed": seed})
    run = member(config, torch.device("cpu"))
    run.noise.manual_seed(3)
    group = Group([run])
    torch.manual_seed(seed)
    x = torch.randn(8, 784, dtype=torch.float64)
    y = torch.arange(8) % 10
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    group.step(x[None], y[None], contextlib.nullcontext)
    return config, run.model, before, x, y, run.probe


def _grad_at(model, params, x, y):
    import torch
    import torch.nn.functional as F

    params = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    loss = F.cross_entropy(torch.func.functional_call(model, params, x), y)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def test_sam_step_is_the_two_pass_update():
    import torch

    config, model, before, x, y, _ = _tiny_step("sam", layers=[])
    g = _grad_at(model, before, x, y)
    norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
    up = {n: before[n] + config.radius * g[n] / norm for n in before}
    g_up = _grad_at(model, up, x, y)
    w = model.fc2.weight.detach()
    assert (w - (before["fc2.weight"] - config.lr * g["fc2.weight"])).abs().max() > 1e-6  # not the plain step
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - config.lr * g_up[n], rtol=1e-12, atol=1e-15)


def test_sam_on_a_layer_ascends_that_layer_alone_and_descends_every_weight():
    import torch

    config, model, before, x, y, _ = _tiny_step("sam", layers=[1])
    g = _grad_at(model, before, x, y)["fc1.weight"]
    up = {**before, "fc1.weight": before["fc1.weight"] + config.radius * g / g.norm()}
    g_up = _grad_at(model, up, x, y)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - config.lr * g_up[n], rtol=1e-12, atol=1e-15)


def test_noisy_labels_replace_a_fixed_fraction_per_seed():
    import torch

    from pleat.runs.lifecycle import noisy_labels

    labels = torch.arange(10_000) % 10
    a = noisy_labels(Config(label_noise=0.4, seed=3), labels, 10)
    assert torch.equal(a, noisy_labels(Config(label_noise=0.4, seed=3, kind="sam", layers=()), labels, 10))
    assert not torch.equal(a, noisy_labels(Config(label_noise=0.4, seed=4), labels, 10))
    assert torch.equal(noisy_labels(Config(label_noise=0.0), labels, 10), labels)
    wrong = (a != labels).float().mean().item()
    # 4,000 labels redrawn uniformly over 10 classes: 3,600 expected wrong, standard deviation sqrt(4000 * 0.09) = 19
    assert abs(wrong * 10_000 - 3600) < 5 * 19
    assert set(a.tolist()) == set(range(10))


def test_label_noise_run_trains_on_noisy_labels_tests_on_clean_ones_and_selects_on_half(fashion, tmp_path):
    """Against the naive loop (which reads the labels the lifecycle gives): the metrics, the clean-label train
    accuracy, the test halves; the test set is untouched; the result's early-stopped and end-of-training values."""
    from naive import naive_train

    from pleat.runs import lifecycle as life

    config = quick(
        tmp_path,
        epochs=3,
        train_subset=300,
        test_subset=101,
        label_noise=0.5,
        dtype="float64",
        lr=0.05,
        data_dir=str(fashion),
    )
    result = train(config)
    expected, _ = naive_train(config)
    got = RunStore(config).metrics()
    for a, b in zip(expected, got):
        for key in ("train_loss", "train_accuracy", "train_accuracy_clean", "test_accuracy", "test_accuracy_halves"):
            assert b[key] == pytest.approx(a[key], rel=1e-10), key
    assert any(r["train_accuracy_clean"] != r["train_accuracy"] for r in got)
    import torch

    clean = life.load_data(
        quick(tmp_path, train_subset=300, test_subset=101, data_dir=str(fashion)), torch.device("cpu")
    )
    noisy = life.load_data(config, torch.device("cpu"))
    assert torch.equal(noisy.y_test, clean.y_test) and torch.equal(noisy.y_train_clean, clean.y_train)
    assert (noisy.y_train != clean.y_train).sum() > 100  # 150 redrawn, 9 in 10 of them wrong
    halves = [r["test_accuracy_halves"] for r in got]
    for r, (even, odd) in zip(got, halves):  # 51 even and 50 odd test examples
        assert r["test_accuracy"] == pytest.approx((51 * even + 50 * odd) / 101)
    chosen = max(range(3), key=lambda e: halves[e][0])
    assert result["selected_epoch"] == chosen + 1 and result["selected_test_accuracy"] == halves[chosen][1]
    assert result["final_mean_test_accuracy"] == pytest.approx(sum(r["test_accuracy"] for r in got) / 3)
    assert result["final_train_accuracy_clean"] == got[-1]["train_accuracy_clean"]


def test_noise_step_takes_the_gradient_at_a_gaussian_shift_of_the_chosen_layer():
    import torch

    import pleat

    config, model, before, x, y, _ = _tiny_step("noise")
    shift = pleat.Gaussian(gamma=3 / config.radius**2).sample_(
        torch.empty_like(before["fc2.weight"]), torch.Generator().manual_seed(3)
    )
    assert abs(shift.var().item() / (config.radius**2 / 3) - 1) < 0.01  # the box's per-weight variance
    g = _grad_at(model, {**before, "fc2.weight": before["fc2.weight"] + shift}, x, y)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - config.lr * g[n], rtol=1e-9, atol=1e-12)


@needs_data
def test_probe_windows_in_steps(tmp_path):
    config = quick(tmp_path, kind="none", epochs=2, train_subset=1000, batch_size=100, probe_every=3)
    train(config)
    metrics = RunStore(config).metrics()
    steps = [w["step"] for m in metrics for w in m["windows"]]
    assert steps == list(range(3, 21, 3))  # windows span epochs: 20 steps in all, one window every 3
    assert set(metrics[0]["windows"][0]["temperature"]) == {"fc1", "fc2", "out"} and metrics[0]["temperature"] == {}


@needs_data
def test_per_weight_probe_on_log_windows(tmp_path):
    from pleat.probes.temperature import log_windows

    keys = dict(kind="none", epochs=2, train_subset=1000, batch_size=100, probe_every=2)
    config = quick(tmp_path / "a", probe_windows="log", probe_estimator="weight", **keys)
    assert config.key() != quick(tmp_path, **keys).key()
    train(config)
    metrics = RunStore(config).metrics()
    steps = [w["step"] for m in metrics for w in m["windows"]]
    assert steps == log_windows(2, 20) == [2, 4, 6, 8, 10, 13, 16, 20]
    noisy = [w["temperature"]["fc1"] for m in metrics for w in m["windows"]]
    assert all(noise > 0 for _, noise in noisy)
    # the per-weight buffers of an open window travel in the checkpoint, one (mean, m2) pair per weight layer
    import torch

    open_window = quick(tmp_path / "c", probe_estimator="weight", **{**keys, "epochs": 1, "probe_every": 3})
    train(open_window)  # windows close at steps 3, 6, 9: step 10 is open at the checkpoint
    state = torch.load(RunStore(open_window).dir / "checkpoint-1.pt", weights_only=True)["probe"]
    assert state["count"] == 1
    assert [tuple(m.shape) for m, _ in state["weights"]] == [(784, 784), (784, 784), (10, 784)]


def test_one_process_per_run(tmp_path):
    from pleat.runs.store import RunBusy

    store = RunStore(quick(tmp_path))
    with store.lock(), pytest.raises(RunBusy, match="another process"):
        with RunStore(quick(tmp_path)).lock():
            pass
    with store.lock():  # released
        pass


def test_runs_says_training_while_a_process_holds_the_lock(tmp_path):
    from pleat.runs.store import runs, training

    store = RunStore(quick(tmp_path))
    assert not training(store.dir)  # no lock file yet
    store.create({})
    with store.lock():
        assert training(store.dir) and list(runs(tmp_path)["status"]) == ["training"]
    assert not training(store.dir) and list(runs(tmp_path)["status"]) == ["interrupted"]
    # a trainer that starts while `training` asks (and so holds the lock, shared, for an instant) waits for it
    import fcntl
    import os
    import threading

    fd = os.open(store.dir / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.08, os.close, [fd]).start()
    with store.lock():
        pass


def test_probe_can_read_the_centre_gradient_of_a_smoothed_run():
    expected = None
    for probe_gradient in ("centre", "objective"):
        config, model, before, x, y, probe = _tiny_step("pla", probe_gradient=probe_gradient)
        if expected is None:  # s_I of ∇L(W), by hand, at the weights before the step
            g = _grad_at(model, before, x, y)
            expected = [float(g[f"{n}.weight"].abs().mean()) for n in ("fc1", "fc2", "out")]
        recorded = [mean for mean, _ in probe.epoch().values()]
        if probe_gradient == "centre":
            assert recorded == pytest.approx(expected, rel=1e-12)
        else:  # the smoothed loss's gradient differs on the smoothed layer and above
            assert recorded[1] != pytest.approx(expected[1], rel=1e-6)
    with pytest.raises(ValueError, match="probe_gradient"):
        Config.from_dict({"kind": "none", "probe_gradient": "centre"})


@needs_data
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    config = quick(tmp_path, epochs=3, train_subset=600, test_subset=200)
    reference = train(config)
    store = RunStore(config)
    expected = strip(store.metrics())
    assert sorted(p.name for p in store.dir.glob("checkpoint-*.pt")) == ["checkpoint-2.pt", "checkpoint-3.pt"]
    (store.dir / "result.json").unlink()  # as if killed while writing its last checkpoint
    latest = store.dir / "checkpoint-3.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="resuming from checkpoint-2.pt"):
        resumed = train(config)
    assert resumed["final_test_accuracy"] == reference["final_test_accuracy"]
    assert strip(store.metrics()) == expected


def test_cli_set_and_flag_conflict_and_help(capsys):
    assert main([]) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "one training run" in text and all(f"{c} " in text for c in ("reproduce", "report", "profile", "runs"))
    assert main(["train", "--set", "radius=0.1", "--radius", "0.2"]) == 2
    assert "given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default [2])" in text and "half-side of the hypercube" in text and "mnist | fashion-mnist" in text
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from pleat.reproduce import available

    assert all(f"{name}," in text for name in available())  # every shipped spec, sensitivity and anisotropic too


def test_cli_resume_message_and_corrupt_run_exit_2(tmp_path, capsys, fashion):
    args = ["train", *small_run_flags(tmp_path, epochs=3, data_dir=fashion)]
    assert main(args) == 0
    run = next(tmp_path.iterdir())
    (run / "result.json").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert f"resuming {run} from epoch 3 of 3" in capsys.readouterr().out
    (run / "result.json").unlink()
    (run / "checkpoint-3.pt").write_bytes(b"broken")  # the latest checkpoint damaged: the one before it serves
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, on the line that names the epoch, not again as a warning
        assert main(args) == 0
    out = capsys.readouterr().out
    assert f"resuming {run} from epoch 2 of 3 ({run / 'checkpoint-3.pt'} fails its sha256 check" in out
    assert "resuming from checkpoint-2.pt instead)" in out
    (run / "result.json").unlink()
    for checkpoint in run.glob("checkpoint-*.pt"):
        checkpoint.write_bytes(b"broken")
    assert main(["runs", str(tmp_path)]) == 0  # none can be resumed: corrupt, not interrupted
    listed = capsys.readouterr()
    assert " corrupt " in listed.out and "interrupted" not in listed.out and "sha256" in listed.err
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and len(err.strip().splitlines()) == 1
    for checkpoint in run.glob("checkpoint-*.pt"):  # none left at all (a store copied without them): start over
        checkpoint.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, as a line, not again as a warning
        assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{run} holds none of its checkpoints (copied without them?); training it again from epoch 0" in out
    assert "resuming" not in out and [m["epoch"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]


def test_cli_runs_leaves_the_smoothing_columns_of_plain_rows_blank(tmp_path, capsys, fashion):
    flags = small_run_flags(tmp_path, epochs=1, data_dir=fashion)
    assert main(["train", "--kind", "none", *flags]) == 0
    assert main(["train", "--kind", "pla", "--radius", "0.02", *flags]) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    rows = {line.split()[3]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["none"][4:6] == ["-", "-"] and rows["pla"][4:6] == ["[2]", "0.02"]


@needs_data
@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_how_to_resume(tmp_path):
    config = quick(tmp_path, epochs=50, train_subset=3000, test_subset=200)
    args = [f"--set={k}={json.dumps(v)}" for k, v in config.to_dict().items() if k != "sharpness"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pleat.cli", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell that runs the tests in the background ignores SIGINT, and children inherit that: undo it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    metrics = RunStore(config).dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before its first epoch was written: {proc.communicate()[1]}"
    assert metrics.exists() and metrics.read_text(), "no epoch written in 120 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "run the same command again" in err
    assert "stops at its checkpoint of epoch" in err or "had no checkpoint yet" in err


def test_keys_added_later_keep_existing_runs_identity():
    from pleat.runs.config import ADDED_KEYS

    base = Config()
    assert base.key() == "497b5697780ef776"  # the identity of the default config, as pleat 0.1.0 stored it
    for key, default in ADDED_KEYS.items():
        assert getattr(base, key) == default
    assert Config(probe_every=5).key() != base.key()
    assert Config(label_noise=0.0).key() == base.key() and Config(label_noise=0.2).key() != base.key()


@needs_data
def test_tf32_on_a_cpu_is_float32_and_is_recorded(tmp_path):
    plain = train(quick(tmp_path / "a", epochs=1, train_subset=300, test_subset=100))
    tf32 = train(quick(tmp_path / "b", epochs=1, train_subset=300, test_subset=100, dtype="tf32"))
    assert strip(read_metrics(Path(tf32["run"]) / "metrics.jsonl")) == strip(
        read_metrics(Path(plain["run"]) / "metrics.jsonl")
    )
    env = json.loads((Path(tf32["run"]) / "environment.json").read_text())
    assert env["precision"] == "float32 weights, TF32 matmuls and convolutions on CUDA"


def test_radius_per_layer_in_the_config_and_on_the_command_line():
    from pleat.runs.config import shown

    table = load(None, parse_set(["radius={fc1 = 0.005, 2 = 0.02}", "layers=[1, 2]"]))
    assert table.radius == (("fc1", 0.005), (2, 0.02))  # a layer index comes back as an int
    assert Config.from_dict(json.loads(json.dumps(table.to_dict()))) == table  # as config.json stores it
    assert table.key() != Config(layers=(1, 2)).key() and Config().key() == "497b5697780ef776"
    assert shown(table.radius) == "{fc1 = 0.005, 2 = 0.02}"
    relative = load(None, parse_set(["radius=relative:0.1"]))
    assert relative.radius == "relative:0.1" and relative.key() != Config().key()
    scoped = load(None, parse_set(["radius=scoped:0.005", "rescope_every=2"]))
    assert (scoped.radius, scoped.rescope_every) == ("scoped:0.005", 2)
    for bad, message in (
        (["radius=relative:x"], "relative:RHO"),
        (["radius={fc1 = -1}"], "'fc1' must be a finite number"),
        (["radius={fc1 = 0.1}", "kind=sam"], "'sam' takes one number"),
        (["radius=scoped:0"], "scoped:RISE"),
        (["rescope_every=2"], "re-scopes radius = 'scoped:RISE' only"),
    ):
        with pytest.raises(ValueError, match=message):
            load(None, parse_set(bad))
    assert main(["train", "--radius", "relative:0", "--progress", "false"]) == 2  # smooths nothing: refused


@needs_data
def test_normalize_standardises_by_the_training_images():
    import torch

    from pleat.runs import lifecycle as life

    raw = life.load_data(quick(Path("/nonexistent"), train_subset=500, test_subset=200), torch.device("cpu"))
    config = quick(Path("/nonexistent"), train_subset=500, test_subset=200, normalize=True)
    data = life.load_data(config, torch.device("cpu"))
    assert abs(data.x_train.mean().item()) < 1e-5 and abs(data.x_train.std().item() - 1) < 1e-5
    mean, std = raw.x_train.mean(), raw.x_train.std()
    torch.testing.assert_close(data.x_test, (raw.x_test - mean) / std)  # the test images by the training numbers
    assert Config(normalize=False).key() == Config().key() != Config(normalize=True).key()


def test_a_missing_extra_is_named_with_the_install_command(capsys, monkeypatch):
    """A bare install (no torchvision, scipy, pandas...): one line naming the package and the extra, exit 2."""
    import pleat.cli

    def missing(args):
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")

    monkeypatch.setattr(pleat.cli, "_runs", missing)
    assert main(["runs", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "needs scipy" in err and "pip install 'torch-pleat[train]'" in err and "Traceback" not in err


def test_a_torch_torchvision_mismatch_is_named_with_the_fix(capsys, monkeypatch):
    import pleat.cli

    def mismatched(args):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(pleat.cli, "_runs", mismatched)
    assert main(["runs", "."]) == 2
    err = capsys.readouterr().err
    assert "was not built for torch" in err and "--index-url" in err and "torchvision::nms" in err
    assert len(err.strip().splitlines()) == 1


def test_pleat_runs_help_describes_its_argument(capsys):
    with pytest.raises(SystemExit):
        main(["runs", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a run store or a sweep folder (default runs)" in text

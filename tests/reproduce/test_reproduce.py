"""pleat reproduce: grid expansion, sweeps on the local pool and on Ray, resume after SIGKILL, the report."""

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import page_errors
from conftest import SHARED, kill_driver, needs_data, strip

from pleat.cli import main
from pleat.reproduce import available, expand, load_spec, reproduce
from pleat.runs.store import read_metrics

TINY = """
name = "tiny"
title = "A tiny sweep for tests"
plot = "radius"
claims = ["smoothing_helps", "single_beats_isotropic"]
[protocol]
dataset = "fashion-mnist"
model = "fc2"
lr = 0.02
train_subset = 400
test_subset = 200
[[arm]]
label = "PLA"
kind = "pla"
grid.layers = [[2], [1, 2]]
grid.radius = [0.01, 0.05]
[[arm]]
label = "plain"
kind = "none"
[budget.smoke]
epochs = 1
seeds = 2
[budget.quick]
epochs = 2
seeds = 2
[budget.paper]
epochs = 3
"""


# three runs, plain alone and PLA {2} at two radii as one group: the kill tests need a group, not the whole grid
FEW = TINY.replace("grid.layers = [[2], [1, 2]]", "grid.layers = [[2]]")


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def few(tmp_path) -> Path:
    path = tmp_path / "few.toml"
    path.write_text(FEW)
    return path


def test_every_shipped_spec_packs_and_baselines_groups_sam_and_noise():
    """Packing reads every run's layers (a SAM run smooths none): every budget of every spec packs, and the
    baselines' SAM and noise runs train in groups of their own kind."""
    from pleat.reproduce.packing import pack

    for name in available():
        spec = load_spec(name)
        for budget in spec.budgets:
            groups = pack([r.config for r in expand(spec, budget, out_dir="/nonexistent")], budget=10**12)
            assert sum(len(g) for g in groups) == len(expand(spec, budget))
    groups = pack([r.config for r in expand(load_spec("baselines"), "quick")], budget=10**12)
    kinds = {g[0].kind: len(g) for g in groups if len({c.kind for c in g}) == 1}
    assert kinds["sam"] > 1 and kinds["noise"] > 1


def test_package_names_load_lazily_and_the_cli_skips_the_claims():
    """`pleat --help` lists the specs without importing the claims (scipy); every exported name still resolves."""
    code = (
        "import sys, pleat.cli, pleat.reproduce as r\n"
        "assert 'pleat.reproduce.claims' not in sys.modules and 'scipy' not in sys.modules\n"
        "from pleat.reproduce import claims, report, spec, sweep\n"
        "assert r.CHECKS is claims.CHECKS and r.write_report is report.write_report\n"
        "assert r.reproduce is sweep.reproduce\n"
        "assert all(getattr(r, n) is not None for n in r.__all__) and set(r.__all__) <= set(dir(r))\n"
        "assert r.available() == spec.available() and r.available()[0] == 'fig1'\n"
        "try:\n    r.nope\nexcept AttributeError as e:\n    assert 'nope' in str(e)\nelse:\n    raise AssertionError\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_specs_expand_to_exactly_their_grids():
    assert available() == [  # the paper's figures first
        "fig1",
        "fig3",
        "fig4-left",
        "fig4-right",
        "fig5",
        "fig6",
        "fig7",
        "fig8",
        "anisotropic",
        "augmented-cnn",
        "baselines",
        "label-noise",
        "pla-plea",
        "referee",
        "sensitivity",
    ]
    analogous = expand(load_spec("pla-plea"), "decisive")  # fig3's PLA and fig4-left's PLEA at their common R
    assert {(r.arm, r.config.layers, r.config.radius) for r in analogous if r.arm != "plain"} == {
        (arm, s, 0.05) for arm in ("PLA", "PLEA") for s in ((2,), (1, 2))
    }
    fig3 = load_spec("fig3")
    paper = expand(fig3, "paper")
    assert len(paper) == (3 * 8 + 1) * 3
    assert {r.config.epochs for r in paper} == {120} and {r.config.lr for r in paper} == {1e-4}
    assert {(r.config.layers, r.config.radius) for r in paper if r.arm == "PLA"} == {
        (s, r) for s in ((1,), (2,), (1, 2)) for r in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    }
    smoke = expand(fig3, "smoke")
    assert len(smoke) == (3 * 2 + 1) * 2 and {r.config.seed for r in smoke} == {0, 1}
    assert {r.config.radius for r in smoke if r.arm == "PLA"} == {0.01, 0.1}
    assert len(expand(fig3, "quick", seeds=5)) == 25 * 5
    assert len(expand(load_spec("fig4-right"), "paper")) == (7 * 8 + 1) * 3
    assert len(expand(load_spec("fig4-right"), "quick")) == (7 * 5 + 1) * 3
    assert len(expand(load_spec("fig5"), "paper")) == 2 * 3 * 8 * 3
    fig6 = expand(load_spec("fig6"), "paper")
    assert {r.arm for r in fig6} == {"none", "PLA head I", "PLA head II", "PLA conv"} and len(fig6) == 12
    assert {r.config.epochs for r in fig6} == {360}
    assert {r.config.layers for r in fig6 if r.arm == "PLA conv"} == {(1, 2, 3, 4, 5)}
    assert {r.config.weight_decay for r in expand(load_spec("fig7"), "paper")} == {0.0, 0.01, 0.001, 0.0001}
    stl = expand(load_spec("fig8"), "paper")
    assert {(r.config.lr, r.config.batch_size, r.config.epochs) for r in stl} == {(1e-5, 64, 960)}
    fig1 = expand(load_spec("fig1"), "paper")
    assert {(r.config.model, r.config.activation) for r in fig1} == {("fc4", "relu"), ("fc4", "tanh")}
    assert {r.config.probe_every for r in fig1} == {20}
    kinds = {r.config.kind for r in expand(load_spec("baselines"), "paper")}
    assert kinds == {"pla", "plea", "sam", "noise", "none"}
    noisy = expand(load_spec("label-noise"), "decisive")
    settings = {(r.arm, r.config.kind, r.config.layers, r.config.radius) for r in noisy}
    assert settings == {
        ("plain", "none", (2,), 0.01),
        *(("PLA", "pla", (2,), r) for r in (0.02, 0.05, 0.1)),
        ("PLA", "pla", (1,), 0.05),
        ("PLA", "pla", (1, 2), 0.05),
        ("PLA relative", "pla", (2,), "relative:1.0"),
        ("SAM", "sam", (), 0.05),
        ("SAM", "sam", (1,), 0.05),
        ("SAM", "sam", (2,), 0.05),
        ("noise", "noise", (2,), 0.05),
    }
    assert len(noisy) == 11 * 2 * 4  # settings x regimes x seeds
    assert [r.regime for r in noisy[:44]] == ["noise 0.4"] * 44 and {r.regime for r in noisy[44:]} == {"noise 0.2"}
    assert {(r.regime, r.config.label_noise) for r in noisy} == {("noise 0.4", 0.4), ("noise 0.2", 0.2)}
    assert {(r.config.train_subset, r.config.epochs, r.config.lr) for r in noisy} == {(10000, 100, 0.01)}
    cnn = expand(load_spec("augmented-cnn"), "decisive")
    assert {(r.arm, r.config.kind, r.config.layers, r.config.radius) for r in cnn} == {
        ("plain", "none", (2,), 0.01),
        ("SAM", "sam", (), 0.05),
        ("SAM-ON", "sam", ("norm",), 0.05),
        ("SAM-ON", "sam", ("norm",), 0.5),
        ("PLA norm", "pla", ("norm",), 0.1),
        ("PLA head", "pla", (6,), 0.05),
        ("PLA convs", "pla", (1, 2, 3, 4, 5), "relative-filter:0.2"),
        ("noise convs", "noise", (1, 2, 3, 4, 5), "relative-filter:0.2"),
    }
    assert len(cnn) == 8 * 4
    referee = expand(load_spec("referee"), "decisive")
    assert {
        (r.regime, r.config.layers, r.config.radius, r.config.samples, r.config.normalize)
        for r in referee
        if r.config.kind == "pla"
    } == {
        *(("paper", (2,), r, 4, False) for r in (0.005, 0.01, 0.02, 0.05, 0.1)),
        *(("paper", (1,), r, 4, False) for r in (0.01, 0.02)),
        *(("paper", (2,), 0.02, y, False) for y in (8, 16)),
        *(("standardised inputs", (2,), r, 4, True) for r in (0.01, 0.05)),
    }
    assert len(referee) == (2 + 11) * 5 and {r.config.epochs for r in referee} == {120}
    fig3 = {r.config.key() for r in expand(load_spec("fig3"), "decisive")}
    assert len({r.config.key() for r in referee} & fig3) == 3 * 5  # plain, {2} at 0.01 and 0.05: taken from fig3
    recipe = {(c.model, c.augment, c.schedule, c.weight_decay, c.lr, c.train_subset) for c in (r.config for r in cnn)}
    assert recipe == {("cnn-bn", True, "cosine", 5e-4, 0.05, 5000)}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: "foo = 1\n" + s, "unknown key(s) foo"),
        (lambda s: s.replace("lr = 0.02", "lr = 0.02\nlearning_rate = 1"), "unknown config key 'learning_rate'"),
        (lambda s: s.replace("grid.radius = [0.01, 0.05]", "grid.radius = []"), "grid.radius must be a non-empty"),
        (lambda s: s.replace('"smoothing_helps"', '"it_works"'), "unknown claim(s) it_works"),
        (lambda s: s.replace('plot = "radius"', 'plot = "pie"'), "plot must be one of"),
    ],
)
def test_bad_specs_are_one_line_and_exit_2(tmp_path, capsys, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(TINY))
    assert main(["reproduce", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["fig99"], "unknown figure 'fig99'"),
        (["fig3", "--budget", "huge"], "unknown budget 'huge'"),
        (["fig3", "--executor", "slurm"], "unknown executor 'slurm'"),
        (["fig3", "--workers", "0"], "--workers must be >= 1"),
        (["fig3", "--hours", "0"], "--hours must be > 0"),
        (["fig3", "--executor", "ray", "--address", "127.0.0.1:9"], "does not answer"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main(["reproduce", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_budget_keys_win_over_arm_keys_and_only_keeps_matching_settings(tmp_path):
    path = tmp_path / "regimes.toml"
    spec = TINY.replace('label = "plain"\nkind = "none"', 'label = "plain"\nkind = "none"\nregime = "long"\nepochs = 9')
    spec = spec.replace(
        "[budget.paper]", '[budget.decisive]\nonly = [{arm = "plain"}, {layers = [2], radius = 0.05}]\n[budget.paper]'
    )
    path.write_text(spec)
    loaded = load_spec(path)
    assert {r.config.epochs for r in expand(loaded, "smoke")} == {1}  # the budget compresses every arm
    assert {r.config.epochs for r in expand(loaded, "paper")} == {3}
    assert {r.config.epochs for r in expand(loaded, "decisive") if r.arm == "plain"} == {9}  # none set: the arm's
    assert {r.regime for r in expand(loaded, "paper")} == {"", "long"}
    kept = {(r.arm, r.config.layers, r.config.radius) for r in expand(loaded, "decisive", seeds=1)}
    assert kept == {("plain", (2,), 0.01), ("PLA", (2,), 0.05)}
    with pytest.raises(ValueError, match="has no decisive budget"):
        expand(load_spec("fig6"), "decisive")


@needs_data
def test_a_sweep_takes_the_finished_runs_of_the_sweeps_it_reuses(tmp_path, tiny):
    first = reproduce(tiny, budget="smoke", out=tmp_path / "tiny-smoke", data_dir=str(SHARED), seeds=1, workers=1)
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace('name = "tiny"', 'name = "other"\nreuse = ["tiny"]'))
    stream = io.StringIO()
    reproduce(other, budget="smoke", out=tmp_path / "other-smoke", seeds=1, dry_run=True, stream=stream)
    planned = stream.getvalue()  # a dry run counts what it would take as finished, and takes nothing
    assert "would take 5 finished runs" in planned and "0 to train" in planned and planned.count("taken") == 5
    assert not (tmp_path / "other-smoke").exists()
    again = reproduce(other, budget="smoke", out=tmp_path / "other-smoke", data_dir=str(SHARED), seeds=1, workers=1)
    assert first["trained"] == 5 and again["trained"] == 0
    for run in (tmp_path / "tiny-smoke" / "runs").iterdir():
        theirs = tmp_path / "other-smoke" / "runs" / run.name
        assert (
            json.loads((theirs / "result.json").read_text())["best_test_accuracy"]
            == json.loads((run / "result.json").read_text())["best_test_accuracy"]
        )
        assert read_metrics(theirs / "metrics.jsonl") == read_metrics(run / "metrics.jsonl")


def checkpointed(folder: Path, epoch: int) -> None:
    """Make a run folder look checkpointed at `epoch`: the pointer and the file it names (an empty stand-in)."""
    (folder / f"checkpoint-{epoch}.pt").touch()
    (folder / "state.json").write_text(json.dumps({"epoch": epoch, "checkpoint": f"checkpoint-{epoch}.pt"}))


def test_progress_says_how_far_each_run_is_and_times_what_is_left_by_work_done(tmp_path):
    """Between finished runs the progress reads each run's checkpointed epoch: it names the runs part-way through,
    and its ETA is the elapsed time scaled by the estimated work left over the work done since it started (a
    resumed run's earlier epochs are not this session's work); a failed run's epochs leave the ETA."""
    from pleat.reproduce.progress import Progress

    a, b, c = (tmp_path / x for x in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    checkpointed(a, 2)  # resumed: 2 epochs trained by an earlier session
    stream = io.StringIO()
    watch = [("A", a, 10, 100.0), ("B", b, 10, 300.0), ("C", c, 5, 50.0)]
    progress = Progress(3, 1, 450.0, stream=stream, watch=watch, every=0.02)
    assert progress.eta() == 450.0  # no work done yet: the estimate
    progress.started -= 60
    checkpointed(a, 6)  # 4 epochs of A this session: 40 s of estimated work
    # left: A 40 s, B 300 s, C 50 s = 390 s of estimate, done 40 s in 60 s: ETA 60 * 390 / 40 = 585 s
    assert progress.eta() == pytest.approx(585, rel=0.01)
    deadline = time.time() + 10
    while "training" not in stream.getvalue() and time.time() < deadline:
        time.sleep(0.01)
    progress.finished("C", None, "boom")  # C failed: its 50 s of work are never done
    assert progress.eta() == pytest.approx(60 * 340 / 40, rel=0.01)
    (b / "result.json").write_text("{}")  # B finished: all its work is done
    assert progress.eta() == pytest.approx(60 * 40 / 340, rel=0.01)
    progress.close()
    beats = [line for line in stream.getvalue().splitlines() if line.startswith("  training")]
    assert beats and all(re.fullmatch(r"  training A at epoch [26]/10; ETA \d+ (s|min)", line) for line in beats)
    assert "[1/3] FAILED C: boom" in stream.getvalue()


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, capsys, tiny):
    assert main(["reproduce", str(tiny), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "10 runs, 0 finished, 10 to train" in out and out.count("todo") == 10
    assert "plain seed=1" in out and "PLA layers=[1,2] radius=0.05 seed=0" in out
    assert not (tmp_path / "out").exists()


def test_dry_run_times_a_resumed_run_by_the_epochs_it_has_left(tmp_path, capsys, tiny):
    from pleat.reproduce.estimate import estimate_seconds, seconds_left

    run = next(r for r in expand(load_spec(tiny), "paper", out_dir=str(tmp_path / "runs")) if r.arm == "plain")
    folder = tmp_path / "runs" / run.config.key()
    assert seconds_left(run) == estimate_seconds(run.config)
    folder.mkdir(parents=True)
    checkpointed(folder, 2)  # 2 of its 3 epochs checkpointed
    assert seconds_left(run) == pytest.approx(estimate_seconds(run.config) / 3)
    assert main(["reproduce", str(tiny), "--budget", "paper", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "15 to train" in out
        and out.count("todo") == 14
        and out.count("at 2/3") == 1
        and re.search(r"at 2/3 +plain seed=0 ", out)
    )


def test_within_starts_only_the_jobs_that_end_by_the_limit():
    from pleat.reproduce.estimate import within

    # two slots: 60 | 60, then 40 -> 100 | 60, 80 would end at 140, 40 -> 100 | 100, 30 would end at 130
    assert within([60, 60, 40, 80, 40, 30], 2, 120) == [True, True, True, False, True, False]
    assert within([50, 200, 70], 1, 120) == [True, False, True]  # a job longer than what is left is passed over
    assert within([10, 10], 3, 10) == [True, True] and within([10], 1, 9.9) == [False]


def test_hours_counts_a_one_core_worker_at_half_the_speed_of_the_estimate(tmp_path, capsys, tiny, monkeypatch):
    """The estimate is for both cores of the team's CPU: a worker with one core (two workers there, or a process
    pinned with taskset) takes twice as long; more cores are not counted as faster."""
    from pleat.reproduce import executors
    from pleat.reproduce.estimate import estimate_seconds, worker_slowdown

    assert [worker_slowdown(n) for n in (1, 2, 16)] == [2.0, 1.0, 1.0]
    first = min(estimate_seconds(r.config) for r in expand(load_spec(tiny), "smoke"))
    args = ["reproduce", str(tiny), "--out", str(tmp_path), "--workers", "1", "--dry-run"]
    args += ["--one-by-one", "--hours", str(first * 1.5 / 3600)]
    for machine, todo in ((2, 1), (1, 0)):  # 2 cores: the first run fits in 1.5x its estimate; 1 core: it does not
        monkeypatch.setattr(executors, "cores", lambda n=machine: n)
        assert main(args) == 0
        assert f"{todo} to train" in capsys.readouterr().out


@needs_data
def test_hours_trains_only_what_ends_in_time_and_leaves_the_rest_later(tmp_path, capsys, tiny):
    from pleat.reproduce.estimate import estimate_seconds, worker_slowdown
    from pleat.reproduce.executors import cores

    first = min(estimate_seconds(r.config) for r in expand(load_spec(tiny), "smoke"))  # plain, seed 0: the first run
    first *= worker_slowdown(cores())  # one worker: twice the 2-core estimate where this process has one core
    args = ["reproduce", str(tiny), "--out", str(tmp_path), "--workers", "1", "--one-by-one"]
    args += ["--data-dir", str(SHARED), "--hours", str(first * 1.01 / 3600)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 to train" in out and "left for a later call, to finish within" in out and ": 9 runs" in out
    assert len(re.findall(r"^  later ", out, re.M)) == 9 and re.search(r"todo +plain seed=0 ", out)
    assert main(args) == 0
    assert [p.parent.name for p in tmp_path.glob("runs/*/result.json")] == [
        r.config.key() for r in expand(load_spec(tiny), "smoke") if r.arm == "plain" and r.config.seed == 0
    ]


@needs_data
def test_a_second_sweep_process_leaves_a_run_another_one_trains_to_it(tmp_path, capsys, few):
    """Two `pleat reproduce` of one sweep share it: a run whose lock a live process holds is listed `training`,
    neither trained nor failed, and the next call, once the lock is gone, trains it."""
    import fcntl

    runs = expand(load_spec(few), "smoke", 1, out_dir=str(tmp_path / "runs"))
    held = tmp_path / "runs" / runs[0].config.key()
    held.mkdir(parents=True)
    args = ["reproduce", str(few), "--out", str(tmp_path), "--seeds", "1", "--workers", "1", "--one-by-one"]
    args += ["--data-dir", str(SHARED)]
    with open(held / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what the other process's trainer holds
        assert main([*args, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "being trained by another process, left to it: 1 runs" in out and "2 to train" in out
        assert len(re.findall(r"^  training ", out, re.M)) == 1
        assert main(args) == 0
        finished = {p.parent.name for p in tmp_path.glob("runs/*/result.json")}
        assert finished == {r.config.key() for r in runs[1:]}
    assert main(args) == 0 and (held / "result.json").exists()


def test_a_run_another_process_took_meanwhile_is_not_a_failure(tmp_path, capsys, few):
    """Between a sweep's listing and a run's turn another process may take the run: its RunBusy is not a failure.
    RunBusy on a run nobody trains (a group whose other run is held) still is."""
    import fcntl

    from pleat.reproduce.progress import follow

    runs = expand(load_spec(few), "smoke", 1, out_dir=str(tmp_path))
    (tmp_path / runs[0].config.key()).mkdir()
    busy = "RunBusy: a run of this job is being trained by another process"
    with open(tmp_path / runs[0].config.key() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed, _ = follow(iter([(r.config, None, busy) for r in runs[:2]]), runs, [], 1, 1.0)
    assert failed == [(runs[1].config.key(), busy)]
    err = capsys.readouterr().err
    assert err.count("another process is training it; left to that one") == 1 and err.count("FAILED") == 1


@needs_data
@pytest.mark.slow
def test_fig3_smoke_end_to_end_with_figure_report_and_nothing_rerun(tmp_path, capsys):
    out = tmp_path / "fig3"
    args = ["reproduce", "fig3", "--budget", "smoke", "--out", str(out), "--data-dir", str(SHARED), "--workers", "2"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert printed.err.count("] PLA") == 12 and printed.err.count("] plain") == 2  # one line per run: not a tty
    assert (out / "fig3.png").stat().st_size > 10_000 and (out / "report.html").exists()
    page = (out / "report.html").read_text()
    assert "smoke budget" in page and "Single-layer smoothing" in page and "data:image/png;base64," in page
    results = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert len(results) == 14
    done = reproduce("fig3", budget="smoke", out=out, data_dir=str(SHARED))
    assert done["trained"] == 0 and done["runs"] == 14  # a finished sweep starts nothing
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == results
    env = json.loads(next(out.glob("runs/*/environment.json")).read_text())
    assert env["threads"] == 1  # two workers on the cores this process may use (two, or one under xdist)
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0  # a sweep folder lists the runs of its runs/
    listed = capsys.readouterr().out
    assert listed.count("finished") == 14 and "seed" in listed


@needs_data
@pytest.mark.slow
def test_report_opens_in_headless_chromium(tmp_path, tiny):
    out = tmp_path / "tiny"
    reproduce(tiny, budget="smoke", out=out, data_dir=str(SHARED), seeds=1)
    try:
        seen = page_errors(out / "report.html")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert seen["errors"] == [] and seen["images"] == 1 and seen["broken"] == 0
    assert seen["screenshot"] is not None and seen["screenshot"].stat().st_size > 10_000


@needs_data
def test_report_of_a_plain_run_store(tmp_path, capsys):
    from pleat.runs.config import Config
    from pleat.runs.train import train

    for radius in (0.01, 0.05):
        train(
            Config.from_dict(
                dict(
                    radius=radius,
                    epochs=2,
                    train_subset=300,
                    test_subset=100,
                    lr=0.02,
                    data_dir=str(SHARED),
                    out_dir=str(tmp_path / "store"),
                    progress=False,
                )
            )
        )
    assert main(["report", str(tmp_path / "store"), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "radius=0.01" in page and "radius=0.05" in page and page.count("<img") == 1
    assert main(["report", str(tmp_path / "store")]) == 0  # no --out: beside the runs, not in this folder
    assert (tmp_path / "store" / "report.html").exists()


def test_a_report_of_a_missing_folder_names_the_fix_and_writes_nothing(tmp_path, capsys):
    missing = tmp_path / "results" / "fig3-quik"
    assert main(["report", str(missing)]) == 2
    assert "is not a folder: give sweep folders" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_report_of_a_folder_of_sweeps_reports_each_sweep(tmp_path, capsys, tiny, monkeypatch):
    for name in ("tiny-smoke", "tiny-quick"):  # two sweeps that have not finished a run yet
        sweep = tmp_path / "results" / name
        sweep.mkdir(parents=True)
        (sweep / "sweep.json").write_text(json.dumps({"spec": "tiny", "budget": name[5:], "seeds": None}))
        (sweep / "spec.toml").write_text(TINY)
    (tmp_path / "results" / "notes").mkdir()  # not a sweep: left out
    monkeypatch.chdir(tmp_path / "results" / "notes")
    assert main(["report", str(tmp_path / "results")]) == 0  # several sweeps: a report folder here, not in results/
    page = (tmp_path / "results" / "notes" / "pleat-report" / "report.html").read_text()
    assert not (tmp_path / "results" / "report.html").exists()
    assert page.count("A tiny sweep for tests") == 2 and page.count("No finished run yet") == 2
    assert "tiny-quick" in page and "tiny-smoke" in page and "notes" not in page
    capsys.readouterr()
    assert main(["runs", str(tmp_path / "results")]) == 0  # runs of a folder of sweeps: it names them
    said = capsys.readouterr().out
    assert "it holds the sweeps tiny-quick, tiny-smoke: pleat runs" in said and "results/tiny-quick" in said


@needs_data
@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_finishes_only_what_is_missing(tmp_path, few):
    out = tmp_path / "few"
    command = [
        sys.executable,
        "-m",
        "pleat.cli",
        "reproduce",
        str(few),
        "--budget",
        "quick",
        "--workers",
        "1",
        "--out",
        str(out),
        "--data-dir",
        str(SHARED),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # one line per finished run: kill once two have finished
        if line.startswith("[2/"):
            break
    kill_driver(proc)  # the worker dies with the driver (PR_SET_PDEATHSIG)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert 2 <= len(finished) < 6
    done = reproduce(few, budget="quick", out=out, data_dir=str(SHARED), workers=1)
    assert done["trained"] == 6 - len(finished) and not done["failed"]
    for run in out.glob("runs/*"):
        assert [m["epoch"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2], run  # nothing lost or doubled
        if run.name in finished:
            assert (run / "result.json").stat().st_mtime_ns == finished[run.name]


@needs_data
@pytest.mark.slow
def test_sigkill_inside_a_vectorised_group_then_rerun_gives_the_uninterrupted_numbers(tmp_path):
    """kill -9 while a group is between epochs; the rerun resumes every run of the group from its own checkpoint
    and every run ends with the numbers of a sweep that was never interrupted (float64)."""
    spec = tmp_path / "tiny64.toml"
    spec.write_text(
        FEW.replace("[budget.paper]\nepochs = 3", '[budget.paper]\nepochs = 4\nseeds = 1\ndtype = "float64"')
    )
    whole = reproduce(spec, budget="paper", out=tmp_path / "whole", data_dir=str(SHARED), workers=1)
    assert whole["trained"] == 3 and not whole["failed"]
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pleat.cli", "reproduce", str(spec), "--budget", "paper", "--workers", "1"]
    proc = subprocess.Popen([*command, "--out", str(out), "--data-dir", str(SHARED)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill once a group has checkpointed epoch 2 of 4
        pointers = [json.loads(p.read_text()) for p in out.glob("runs/*/state.json") if p.stat().st_size]
        if sum(p["epoch"] == 2 for p in pointers) >= 2:  # two runs at once: a group (the lone plain run goes first)
            break
        time.sleep(0.01)
    kill_driver(proc)
    unfinished = [p.parent for p in out.glob("runs/*/config.json") if not (p.parent / "result.json").exists()]
    assert len(unfinished) >= 2  # a group was cut short
    done = reproduce(spec, budget="paper", out=out, data_dir=str(SHARED), workers=1)
    assert done["trained"] >= 2 and not done["failed"]
    for run in (tmp_path / "whole" / "runs").iterdir():
        a = strip(read_metrics(run / "metrics.jsonl"))
        b = strip(read_metrics(out / "runs" / run.name / "metrics.jsonl"))
        assert [r["epoch"] for r in b] == [1, 2, 3, 4]
        for ra, rb in zip(a, b):
            for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
                assert rb[key] == pytest.approx(ra[key], rel=1e-10), (run.name, key)


@needs_data
def test_a_diverging_run_is_reported_and_the_sweep_goes_on(tmp_path, capsys):
    spec = tmp_path / "wild.toml"
    spec.write_text(
        FEW.replace(
            '[[arm]]\nlabel = "plain"', '[[arm]]\nlabel = "wild"\nkind = "none"\nlr = 1e6\n[[arm]]\nlabel = "plain"'
        ).replace("[budget.smoke]\nepochs = 1\nseeds = 2", "[budget.smoke]\nepochs = 3\nseeds = 1")
    )
    assert main(["reproduce", str(spec), "--out", str(tmp_path / "out"), "--data-dir", str(SHARED)]) == 0
    err = capsys.readouterr().err
    assert "wild" in err and "diverged: its training loss was not finite at epoch" in err
    results = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*/result.json")]
    assert len(results) == 4 and sum("diverged" in r for r in results) == 1
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<th>diverged</th>" in page and "float32" in page


@needs_data
@pytest.mark.slow
def test_ray_executor_survives_a_killed_worker_and_gives_the_local_numbers(tmp_path, few, monkeypatch):
    """Ray workers train in their own folder and return the runs as data: the driver's store gets the local
    executor's numbers and no checkpoint. kill -9 of the worker while it trains a group: Ray runs the task again,
    which resumes each run from the checkpoint it left in the worker's folder. (One test: one Ray start.)"""
    pytest.importorskip("ray")
    import threading

    import psutil
    import ray

    local = reproduce(few, budget="paper", out=tmp_path / "local", data_dir=str(SHARED), workers=2, seeds=1)
    monkeypatch.setenv("HOME", str(tmp_path / "worker-home"))
    worker_runs = tmp_path / "worker-home" / ".cache" / "pleat" / "ray-runs"
    killed = []
    done = threading.Event()  # the sweep returned: stop looking (no fixed deadline a loaded machine can outrun)

    def kill_a_training_worker():
        while not done.is_set() and not killed:
            checkpointed = [p.parent / "config.json" for p in worker_runs.glob("*/state.json")]
            kinds = [json.loads(p.read_text())["kind"] for p in checkpointed]
            if "pla" in kinds:  # the PLA group has checkpointed an epoch (not only the lone plain run)
                for p in psutil.process_iter(["cmdline"]):
                    if any("_ray_train" in part for part in p.info["cmdline"] or []):
                        p.kill()
                        killed.append(p.pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_training_worker)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        killer.start()
        remote = reproduce(few, budget="paper", out=tmp_path / "ray", data_dir=str(SHARED), executor="ray", seeds=1)
    finally:
        done.set()
        killer.join()
        ray.shutdown()
    assert killed, "no Ray worker was caught training"
    assert local["trained"] == remote["trained"] == 3 and not remote["failed"]
    assert len(list(worker_runs.glob("*/checkpoint-*.pt"))) == 6  # the workers trained elsewhere: 2 kept a run
    for run in (tmp_path / "local" / "runs").iterdir():
        twin = tmp_path / "ray" / "runs" / run.name
        assert not list(twin.glob("checkpoint-*.pt"))  # the driver's store got the data only
        a = strip(read_metrics(run / "metrics.jsonl"))
        b = strip(read_metrics(twin / "metrics.jsonl"))
        assert [r["epoch"] for r in b] == [1, 2, 3]
        for ra, rb in zip(a, b):
            assert rb["test_accuracy"] == pytest.approx(ra["test_accuracy"], abs=1e-12)
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-6)


def test_cnn_arms_cost_the_share_of_the_net_that_runs_at_every_point():
    """--dry-run's estimate of fig6: PLA on every convolution runs the whole net at 5 points, about 5x a plain step
    (4.9x measured on the CPU), not the 1.4x a flat 0.1 per point gave; head I runs only the head again."""
    from pleat.reproduce.estimate import downstream_share, estimate_seconds

    runs = {r.arm: r for r in expand(load_spec("fig6"), "paper") if r.config.seed == 0}
    ratio = {arm: estimate_seconds(r.config) / estimate_seconds(runs["none"].config) for arm, r in runs.items()}
    assert 5 / 1.5 <= ratio["PLA conv"] <= 5 * 1.5
    assert 1.0 < ratio["PLA head II"] < ratio["PLA head I"] < 1.6
    assert downstream_share(runs["PLA conv"].config) == 1.0
    stl = next(r for r in expand(load_spec("fig8"), "paper") if r.arm == "PLA head I")
    assert 0.5 < downstream_share(stl.config) < 1  # STL-10's 6400-wide head is most of its arithmetic
    assert load_spec("fig7").reuse == ("fig6",)


def test_reproduce_writes_outside_a_checkouts_results_by_default(tmp_path, capsys, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", str(tiny), "--dry-run"]) == 0
    assert f"results in {Path('pleat-results') / 'tiny-smoke'}" in capsys.readouterr().out


def test_a_report_of_several_sweeps_names_each_figure_by_its_sweep(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2] / "results"
    out = tmp_path / "both" / "report.html"
    assert main(["report", str(root / "fig3-quick"), str(root / "fig3-decisive"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.glob("*.png")) == ["fig3-decisive.png", "fig3-quick.png"]
    page = out.read_text()
    assert page.count("decisive budget:") == 1 and page.count("quick budget:") == 1
    assert "Decisive budget (the paper" in page  # the decisive section shows the decisive notes...
    quick = page[page.index("quick budget:") : page.index("decisive budget:")]
    assert "Decisive budget" not in quick  # ...and the quick section does not
    assert "<th>test shown</th>" in page and "{2} against {1,2} at R = 0.05" in page


def test_a_report_names_the_tracked_files_it_rewrites(tmp_path, capsys):
    import subprocess

    from pleat.cli import _say_rewritten

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "report.html").write_text("committed")
    (tmp_path / "new.png").write_text("new")
    subprocess.run(["git", "-C", str(tmp_path), "add", "report.html"], check=True)
    _say_rewritten([tmp_path / "report.html", tmp_path / "new.png"])
    said = capsys.readouterr().out
    assert f"rewrote {tmp_path / 'report.html'}, which git tracks" in said and "new.png" not in said


def test_bare_pleat_train_says_what_it_starts_and_for_how_long(tmp_path, capsys, monkeypatch):
    import pleat.runs.train

    started = []
    result = {"best_test_accuracy": 0.5, "best_epoch": 1, "final_test_accuracy": 0.5, "epochs": 120}
    monkeypatch.setattr(pleat.runs.train, "train", lambda config: started.append(config) or result)
    assert main(["train", "--out-dir", str(tmp_path), "--progress", "false"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "no config file: the paper's Figure 3 protocol, PLA on layers [2] of fc2 on fashion-mnist" in said
    assert re.search(r"for 120 epochs, about \d+ (min|h) on a 2-core CPU", said) and len(started) == 1
    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.toml"
    assert main(["train", str(quickstart), "--out-dir", str(tmp_path)]) == 0  # a config: nothing to say
    assert "no config file" not in capsys.readouterr().out


def test_the_regimes_figure_shows_each_setting_with_its_subset_and_the_specs_accuracy():
    from pleat.reproduce.figures import paired_gains
    from pleat.reproduce.results import results_table

    folder = Path(__file__).resolve().parents[2] / "results" / "label-noise-decisive"
    spec = load_spec(folder / "spec.toml")
    fig = paired_gains(results_table(folder, spec, "decisive"), spec, "decisive")
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "PLA {1} R = 0.05" in names and "PLA {1,2} R = 0.05" in names and "SAM all ρ = 0.05" in names
    assert len(names) == len(set(names))  # one entry per setting, not one per radius pooled over subsets
    left, right = (ax.get_ylabel() for ax in fig.axes[:2])
    assert left.startswith("early-stopped test accuracy") and right.startswith("mean of the last 10 epochs")

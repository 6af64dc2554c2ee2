"""The README's example and the scripts in examples/ run as written (on tiny data)."""

import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *argv: str):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        module = runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="example")
        return module["main"](list(argv))
    finally:
        sys.path.remove(str(ROOT / "examples"))


@pytest.mark.parametrize(
    "page, heading", [("README.md", "## In your own training loop"), ("docs/tutorials/training-loop.md", "# Your own")]
)
def test_the_api_examples_run_as_written(page, heading):
    text = (ROOT / page).read_text()
    block = re.search(re.escape(heading) + r".*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, page, "exec"), namespace)  # noqa: S102 - the page's own code
    assert namespace["obj"].last.losses.shape == (5,)


def test_resnet_head_example():
    pytest.importorskip("torchvision")
    done = run_example("resnet_head", "--steps", "2")
    assert len(done["losses"]) == 2 and "fc" in done["temperature"]


def test_hugging_face_trainer_example(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    out = tmp_path / "hf"
    # two epochs: 64 sequences in batches of 8, logged every 2 steps
    done = run_example("hf_trainer_pla", "--steps", "16", "--out", str(out), "--report-to", "tensorboard")
    assert len(done["losses"]) == 8 and done["losses"][-1] < done["losses"][0]  # the smoothed loss goes down
    assert len(done["probe"].probe.history) == 8 and done["probe"].regimes is not None
    assert list(done["probe"].probe.history[0]) == [
        f"transformer.h.{i}.mlp.{m}" for i in (0, 1) for m in ("c_fc", "c_proj")
    ]
    # the reporter got them too: the TensorBoard event file holds the temperature's scalar tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = out.rglob("events.out.tfevents.*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert any(t.endswith("temperature/transformer.h.0.mlp.c_fc/noise") for t in tags), tags


def test_lightning_example_logs_the_temperature(tmp_path):
    pytest.importorskip("lightning")
    probe = run_example("lightning_pla", "--epochs", "2", "--out", str(tmp_path))
    assert len(probe.probe.history) == 8  # 16 optimiser steps, a window every 2
    assert probe.regimes is not None and len(probe.regimes.layers) == 3
    (csv,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    header = csv.read_text().splitlines()[0]
    assert "temperature/net.2/signal" in header and "temperature/net.2/noise" in header

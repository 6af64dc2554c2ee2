import torch
import torch.nn.functional as F
from conftest import mlp, synthetic

import pleat
from pleat.probes.plots import plot_flatness, plot_temperature


def test_temperature_figure(tmp_path):
    history = synthetic()
    fig = plot_temperature(history, pleat.regimes(history), path=tmp_path / "fig1.png")
    assert (tmp_path / "fig1.png").stat().st_size > 10_000
    ax = fig.axes[0]
    assert len(ax.lines) >= 6  # signal and noise for three layers, plus regime markers
    styles = {line.get_linestyle() for line in ax.lines[:6]}
    assert styles == {"-", "--"}


def test_flatness_figure(tmp_path):
    x, t = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    profile = pleat.flatness_profile(mlp(), F.cross_entropy, (x, t), radii=[0.01, 0.1], samples=4, hutchinson=2)
    plot_flatness(profile, path=tmp_path / "flat.svg")
    assert (tmp_path / "flat.svg").read_text().startswith("<?xml")

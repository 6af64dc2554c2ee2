import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from conftest import mlp, synthetic

import pleat
from pleat.probes.plots import plot_flatness, plot_temperature


def test_temperature_figure(tmp_path):
    history = synthetic()
    fig = plot_temperature(history, pleat.regimes(history), path=tmp_path / "fig1.png")
    ax = fig.axes[0]
    assert len(ax.lines) >= 6  # signal and noise for three layers, plus regime markers
    for k, name in enumerate(["fc1", "fc2", "out"]):  # each layer's curves are its own numbers, solid and dashed
        signal, noise = ax.lines[2 * k], ax.lines[2 * k + 1]
        assert (signal.get_linestyle(), noise.get_linestyle()) == ("-", "--")
        assert list(signal.get_ydata()) == [h[name][0] for h in history]
        assert list(noise.get_ydata()) == [h[name][1] for h in history]
    image = plt.imread(tmp_path / "fig1.png")  # the file is the figure, drawn
    assert image.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))
    assert image[..., :3].std() > 0.05


def test_flatness_figure(tmp_path):
    x, t = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    profile = pleat.flatness_profile(mlp(), F.cross_entropy, (x, t), radii=[0.01, 0.1], samples=4, probes=2)
    plot_flatness(profile, path=tmp_path / "flat.svg")
    assert (tmp_path / "flat.svg").read_text().startswith("<?xml")

"""Figures: they read results (histories, regimes, profiles, run stores), they compute nothing. Needs matplotlib."""

from __future__ import annotations

from pathlib import Path

from pleat.probes.flatness import FlatnessProfile
from pleat.probes.regimes import Regimes
from pleat.probes.temperature import curves


def new_figure(size: tuple[float, float], panels: int = 1):
    """A Figure with `panels` axes side by side, without pyplot: no backend switch in the user's session."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.subplots(1, panels)


def plot_temperature(
    history,
    regimes: Regimes | None = None,
    times=None,
    path: str | Path | None = None,
    title: str = "Layer temperature",
):
    """The Figure 1 view: ln s_I (solid) and ln std (dashed) per layer, one colour each, regime boundaries marked.

    Returns the matplotlib Figure; saved to `path` (PNG, SVG, PDF by extension) when given.
    """
    fig, ax = new_figure((7, 4.5))
    draw_temperature(ax, history, regimes, times)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def draw_temperature(ax, history, regimes: Regimes | None = None, times=None) -> None:
    """Draw ln s_I (solid) and ln std (dashed) per layer on `ax`, log axes, regime boundaries marked.

    Layers are labelled I = 1, 2, ... in the history's order (the paper's numbering when the probe watches every
    weight layer), with the module name beside.
    """
    data = curves(history)
    t = list(times) if times is not None else list(range(1, len(history) + 1))
    for k, (name, (signal, noise)) in enumerate(data.items()):
        colour = f"C{k}"
        label = f"{k + 1}" if name == str(k + 1) else f"{k + 1} ({name})"  # I = 1, 2, ... in the history's order
        ax.plot(t, signal, "-", color=colour, label=f"{label} signal")
        ax.plot(t, noise, "--", color=colour, label=f"{label} noise")
    ax.set_yscale("log")
    ax.set_xscale("log")
    if regimes is not None:
        if regimes.signal_end is not None:
            ax.axvline(regimes.signal_end, color="grey", lw=0.8, ls=":")
            ax.text(
                regimes.signal_end,
                1.0,
                " noise > signal",
                transform=ax.get_xaxis_transform(),
                va="top",
                fontsize=8,
                color="grey",
            )
        if regimes.onset is not None and regimes.common_cooling:
            ax.axvline(regimes.onset, color="black", lw=0.8, ls=":")
            ax.text(
                regimes.onset,
                0.04,
                f" common cooling α={regimes.alpha:.2f}",
                transform=ax.get_xaxis_transform(),
                va="bottom",
                fontsize=8,
            )
    ax.set_ylabel("mean |∂L/∂w| per layer (log)")
    ax.legend(fontsize=7, ncol=2)


def plot_flatness(profile: FlatnessProfile, path: str | Path | None = None, title: str = "Flatness per layer"):
    """Loss rise against radius for each layer subset (log axes), with standard errors and the R²/6·tr H line."""
    fig, ax = new_figure((6, 4.5))
    draw_flatness(ax, profile)
    ax.set_title(title + " (dashed: (R²/6) tr H from Hutchinson)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def draw_flatness(ax, profile: FlatnessProfile) -> None:
    subsets = list(dict.fromkeys(r.subset for r in profile.rows))
    for k, subset in enumerate(subsets):
        rows = [r for r in profile.rows if r.subset == subset]
        radii = [r.radius for r in rows]
        ax.errorbar(
            radii,
            [r.rise for r in rows],
            yerr=[r.rise_se for r in rows],
            fmt="o-",
            color=f"C{k}",
            label=subset,
            capsize=2,
        )
        if all(r.predicted is not None and r.predicted > 0 for r in rows):
            ax.plot(radii, [r.predicted for r in rows], "--", color=f"C{k}", lw=0.8)
    ax.set_xscale("log")
    if all(r.rise > 0 for r in profile.rows):
        ax.set_yscale("log")
    else:  # some rise is not positive (noise at tiny R): a symmetric log scale keeps it visible
        ax.set_yscale("symlog", linthresh=max(1e-8, min(abs(r.rise) for r in profile.rows if r.rise) / 10))
    ax.set_xlabel("radius R")
    ax.set_ylabel("mean loss rise")
    ax.legend(fontsize=8)


def plot_profile(profile, path: str | Path | None = None, title: str = "Profile per layer"):
    """A `pleat.profile` result: temperature and noise, Hessian trace per weight (the scoped radius on each bar),
    and the flatness curves, one colour per layer."""
    fig, axes = new_figure((15, 4.5), panels=3)
    names = [layer.name for layer in profile.layers]
    at = list(range(len(names)))
    axes[0].bar([x - 0.2 for x in at], [layer.signal for layer in profile.layers], 0.4, label="signal")
    axes[0].bar([x + 0.2 for x in at], [layer.noise for layer in profile.layers], 0.4, label="noise")
    axes[0].set_ylabel("layer temperature")
    axes[0].legend(fontsize=8)
    bars = axes[1].bar(at, [max(layer.trace_per_weight, 1e-30) for layer in profile.layers], color="C2")
    for bar, layer in zip(bars, profile.layers):
        text = "R -" if layer.radius is None else f"R {layer.radius:.2g}"
        axes[1].annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", fontsize=7)
    axes[1].set_ylabel(f"tr H / weights (R: rise {profile.rise:g})")
    for ax in axes[:2]:
        ax.set_xticks(at, names, rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
    draw_flatness(axes[2], profile.flatness)
    axes[2].set_title("loss rise against R")
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig

"""The claims as code, on synthetic results tables whose answer is known."""

import math
import random

import pandas as pd
import pytest
from test_regimes import synthetic

from pleat.reproduce import claims, load_spec
from pleat.reproduce.claims import difference, judge


def row(arm, kind, layers, radius, seed, acc, samples=4, weight_decay=0.0, **extra):
    return dict(
        arm=arm,
        kind=kind,
        layers=tuple(layers),
        radius=radius,
        seed=seed,
        samples=samples,
        weight_decay=weight_decay,
        best_test_accuracy=acc,
        final_test_accuracy=acc,
        **extra,
    )


RADII = [0.001, 0.01, 0.05, 0.2]


def fig3_table(gain: dict, seeds=3, noise=0.001, plain=0.85, seed=0):
    """Accuracy = plain + gain[subset](R) + noise; gain maps a subset to a function of R."""
    rng = random.Random(seed)
    rows = [row("plain", "none", (2,), 0.01, s, plain + rng.gauss(0, noise)) for s in range(seeds)]
    for subset, f in gain.items():
        for r in RADII:
            rows += [row("PLA", "pla", subset, r, s, plain + f(r) + rng.gauss(0, noise)) for s in range(seeds)]
    return pd.DataFrame(rows)


def bump(height, at=0.01):
    """A gain that rises to `height` at R = at, then falls below zero at large R."""
    return lambda r: height * math.exp(-((math.log10(r) - math.log10(at)) ** 2)) - (0.02 if r >= 0.2 else 0)


PAPER_FIG3 = {
    (1,): lambda r: bump(0.01)(r) - 0.005,
    (2,): bump(0.02),
    (1, 2): lambda r: 0.0 if r <= 0.001 else -0.01 - 0.1 * r,
}


def verdicts(table, name):
    return {v.claim: v.verdict for v in judge(table, load_spec(name))}


def test_welch_interval_against_a_hand_computation():
    d, (lo, hi) = difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    # var a = 1, var b = 0: se = sqrt(1/3), df = 2, t = 4.303
    assert d == 2.0 and math.isclose(hi - d, 4.303 * math.sqrt(1 / 3)) and math.isclose(d - lo, hi - d)


def test_fig3_claims_supported_on_a_paper_like_table():
    assert set(verdicts(fig3_table(PAPER_FIG3), "fig3").values()) == {"supported"}


def test_fig3_claims_contradicted_when_the_ranking_is_reversed():
    reversed_ = {(1,): bump(0.02), (2,): lambda r: -0.03, (1, 2): lambda r: 0.03}
    found = verdicts(fig3_table(reversed_), "fig3")
    for claim in ("smoothing_helps", "single_beats_isotropic", "layer2_best", "isotropic_small_r_only"):
        if claim != "smoothing_helps":
            assert found[claim] == "contradicted", claim
    flat_rise = {(1,): lambda r: 0.01 * r, (2,): lambda r: 0.2 * r, (1, 2): lambda r: 0.0}  # peaks at the largest R
    assert verdicts(fig3_table(flat_rise), "fig3")["rise_then_degrade"] == "contradicted"
    worse = {(1,): lambda r: -0.05, (2,): lambda r: -0.04, (1, 2): lambda r: -0.06}
    assert verdicts(fig3_table(worse), "fig3")["smoothing_helps"] == "contradicted"


def test_inconclusive_when_the_difference_is_within_the_seed_spread():
    same = {(1,): lambda r: 0.0, (2,): lambda r: 0.0, (1, 2): lambda r: 0.0}
    found = verdicts(fig3_table(same, noise=0.02), "fig3")
    assert found["single_beats_isotropic"] == "inconclusive"
    assert found["smoothing_helps"] == "inconclusive"


def test_not_enough_runs_with_one_seed():
    found = verdicts(fig3_table(PAPER_FIG3, seeds=1), "fig3")
    assert set(found.values()) == {"not enough runs"}


def fig4_table(best_small, best_large, iso_large=-0.05, seeds=3):
    rng = random.Random(1)
    subsets = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
    rows = []
    for s in subsets:
        depth = sum(s) / len(s) * 0.004  # deeper layers profit more
        for r in RADII:
            acc = 0.97 + depth
            if r == RADII[0] and s == best_small:
                acc += 0.02
            if r == RADII[-1]:
                acc += 0.02 if s == best_large else iso_large if s == (1, 2, 3) else 0
            rows += [row("PLA", "pla", s, r, k, acc + rng.gauss(0, 0.001)) for k in range(seeds)]
    return pd.DataFrame(rows)


def test_fig4_right_claims():
    assert set(verdicts(fig4_table((1, 3), (3,)), "fig4-right").values()) == {"supported"}
    found = verdicts(fig4_table((2,), (1,), iso_large=0.05), "fig4-right")
    assert found["layers13_best_small_r"] == "contradicted"
    assert found["single_deep_best_large_r"] == "contradicted"
    assert found["isotropic_worst_large_r"] == "contradicted"


def test_y8_matches_y4_is_an_equivalence_test():
    def table(shift, noise):
        rng = random.Random(2)
        rows = []
        for y in (4, 8):
            for r in RADII:
                base = 0.88 + (shift if y == 8 else 0)
                rows += [row("PLA", "pla", (2,), r, s, base + rng.gauss(0, noise), samples=y) for s in range(3)]
        return pd.DataFrame(rows)

    assert verdicts(table(0.0, 0.001), "fig5")["y8_matches_y4"] == "supported"
    assert verdicts(table(0.05, 0.001), "fig5")["y8_matches_y4"] == "contradicted"
    assert verdicts(table(0.0, 0.03), "fig5")["y8_matches_y4"] == "inconclusive"


def cnn_table(head, conv, decay=0.0, seeds=3):
    rng = random.Random(3)
    rows = []
    for arm, kind, layers, wd, acc in (
        ("none", "none", (), 0.0, 0.70),
        ("PLA head I", "pla", ("head1",), 0.0, 0.70 + head),
        ("PLA head II", "pla", ("head2",), 0.0, 0.70 + head / 2),
        ("PLA conv", "pla", (1, 2, 3, 4, 5), 0.0, 0.70 + conv),
        ("weight decay", "none", (), 0.01, 0.70 + decay),
        ("weight decay", "none", (), 0.001, 0.70 + decay),
    ):
        rows += [row(arm, kind, layers, 0.01, s, acc + rng.gauss(0, 0.002), weight_decay=wd) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_cnn_claims():
    assert set(verdicts(cnn_table(0.03, -0.05), "fig6").values()) == {"supported"}
    assert set(verdicts(cnn_table(-0.03, 0.05), "fig6").values()) == {"contradicted"}
    assert set(verdicts(cnn_table(0.03, -0.05), "fig7").values()) == {"supported"}
    found = verdicts(cnn_table(0.0, 0.0, decay=0.05), "fig7")
    assert found == {"weight_decay_no_use": "contradicted", "pla_beats_weight_decay": "contradicted"}


def test_baseline_claims_compare_each_method_at_its_best_setting():
    rng = random.Random(4)
    rows = []
    for arm, kind, grid, acc in (
        ("PLA", "pla", [0.01, 0.05], lambda r: 0.88 if r == 0.05 else 0.85),
        ("SAM", "sam", [0.05, 0.1], lambda r: 0.86 if r == 0.1 else 0.80),
        ("noise", "noise", [0.01, 0.05], lambda r: 0.84),
        ("plain", "none", [0.01], lambda r: 0.83),
    ):
        for r in grid:
            rows += [row(arm, kind, (2,), r, s, acc(r) + rng.gauss(0, 0.001)) for s in range(3)]
    rows += [row("weight decay", "none", (2,), 0.01, s, 0.90, weight_decay=1e-3) for s in range(3)]
    found = {v.claim: v for v in judge(pd.DataFrame(rows), load_spec("baselines"))}
    assert found["pla_beats_sam"].verdict == "supported" and "R = 0.05" in found["pla_beats_sam"].detail
    assert "ρ = 0.1" in found["pla_beats_sam"].detail
    assert found["pla_beats_noise"].verdict == "supported"
    assert found["pla_beats_weight_decay"].verdict == "contradicted"
    assert found["smoothing_helps"].verdict == "supported"


def windows_of(history):
    return [{"epoch": 1, "windows": [{"step": k + 1, "temperature": h} for k, h in enumerate(history)]}]


def test_fig1_claims_on_synthetic_temperature_curves():
    common = [dict(arm="plain", seed=s, metrics=windows_of(synthetic(seed=s))) for s in range(2)]
    assert set(verdicts(pd.DataFrame(common), "fig1").values()) == {"supported"}
    apart = [dict(arm="plain", seed=s, metrics=windows_of(synthetic(shared=False, seed=s))) for s in range(2)]
    assert verdicts(pd.DataFrame(apart), "fig1")["common_cooling"] == "contradicted"
    late = [dict(arm="plain", seed=s, metrics=windows_of(synthetic(t_cross=150, seed=s))) for s in range(2)]
    assert verdicts(pd.DataFrame(late), "fig1")["three_regimes"] == "contradicted"
    assert verdicts(pd.DataFrame(common[:1]), "fig1")["three_regimes"] == "not enough runs"


def test_every_check_is_named_by_a_spec():
    from pleat.reproduce import available

    named = {c for name in available() for c in load_spec(name).claims}
    assert named == set(claims.CHECKS)


@pytest.mark.parametrize("verdict", ["supported", "contradicted", "inconclusive"])
def test_greater_verdicts(verdict):
    shift = {"supported": 0.1, "contradicted": -0.1, "inconclusive": 0.0}[verdict]
    a = pd.DataFrame([dict(seed=s, best_test_accuracy=0.5 + shift + 0.01 * (s - 1)) for s in range(3)])
    b = pd.DataFrame([dict(seed=s, best_test_accuracy=0.5 - 0.01 * (s - 1)) for s in range(3)])
    assert claims.greater("smoothing_helps", a, b, "").verdict == verdict


def test_every_figure_type_draws_from_a_table(tmp_path):
    from pleat.reproduce.figures import draw, rgb

    cnn = cnn_table(0.03, -0.05)
    cnn["metrics"] = [
        [dict(train_loss=1.0 / e, train_accuracy=0.5 + e / 100, test_accuracy=0.4 + e / 100) for e in range(1, 6)]
    ] * len(cnn)
    fig1 = pd.DataFrame(
        [
            dict(arm="plain", seed=s, activation=a, metrics=windows_of(synthetic(seed=s)))
            for s in range(2)
            for a in ("relu", "tanh")
        ]
    )
    for table, name in (
        (fig3_table(PAPER_FIG3), "fig3"),
        (fig4_table((1, 3), (3,)), "fig4-right"),
        (cnn, "fig6"),
        (fig3_table(PAPER_FIG3), "baselines"),
        (fig1, "fig1"),
    ):
        path = draw(table, load_spec(name), "smoke", tmp_path / f"{name}.png")
        assert path.stat().st_size > 10_000, name
    assert rgb((1, 3)) == (0.85, 0.0, 0.85) and rgb((2,)) == (0.0, 0.85, 0.0)

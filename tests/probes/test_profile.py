"""pleat.profile and `pleat profile`: per-layer temperature, flatness, trace, scoped radius, suggestions."""

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_data, small_run_flags

import pleat
from pleat.cli import main
from pleat.probes.plots import plot_profile
from pleat.probes.scoping import box_radius
from pleat.runs.models import fc


def test_profile_of_the_papers_net_reads_like_its_parts(tmp_path):
    torch.manual_seed(0)
    model = fc(2)
    batches = [(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))) for _ in range(3)]
    sentinel = {n: torch.full_like(p, 7.0) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = sentinel[n].clone()
    result = pleat.profile(
        model, F.cross_entropy, batches, radii=[1e-2, 1e-1], generator=torch.Generator().manual_seed(0)
    )
    assert [layer.name for layer in result.layers] == ["fc1", "fc2", "out"]
    for layer in result.layers:
        assert layer.trace == result.flatness.trace[layer.name][0]
        assert layer.radius == pytest.approx(box_radius(layer.trace, 0.005))
        assert layer.signal > 0 and layer.noise > 0
    flattest = min(result.layers, key=lambda layer: layer.trace_per_weight)
    assert result.suggestions()[0].startswith(f"single: {flattest.name}: the flattest per weight")
    assert "suggested:" in str(result) and "pair:" in str(result)
    for n, p in model.named_parameters():  # the user's gradients are left as they were
        assert torch.equal(p.grad, sentinel[n])
    plot_profile(result, tmp_path / "profile.png")
    assert (tmp_path / "profile.png").stat().st_size > 10_000


def test_profile_of_a_torchvision_resnet(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    batches = [(torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    result = pleat.profile(model, F.cross_entropy, batches, layers=["layer4.1.conv2", "fc"], radii=[1e-2], probes=2)
    assert [layer.name for layer in result.layers] == ["layer4.1.conv2", "fc"]
    assert model.training  # put back in training mode after the eval-mode flatness
    plot_profile(result, tmp_path / "resnet.png")
    assert (tmp_path / "resnet.png").exists()


@needs_data
def test_cli_profile_of_a_trained_run(tmp_path, capsys):
    assert main(["train", *small_run_flags(tmp_path, epochs=1)]) == 0
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    capsys.readouterr()
    assert main(["profile", str(run), "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "its checkpoint of epoch 1" in out and "suggested:" in out and "fc2" in out
    assert (run / "profile.png").exists()
    capsys.readouterr()
    assert main(["profile", str(tmp_path / "nothing")]) == 2  # neither a run folder nor a config file
    assert "does not exist: give a run folder (RUNS/<key>) or a TOML config" in capsys.readouterr().err

"""What a user installs: the distribution's name, its version, and a built wheel that carries the specs."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import pleat
from pleat.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_distribution_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert (
        done.value.code == 0
        and capsys.readouterr().out.strip() == f"pleat {pleat.__version__} (distribution torch-pleat)"
    )
    text = (ROOT / "pyproject.toml").read_text()
    assert 'name = "torch-pleat"' in text and (ROOT / "LICENSE").exists() and (ROOT / "CITATION.cff").exists()


@pytest.mark.slow
def test_a_built_wheel_installed_elsewhere_runs_a_dry_run(tmp_path):
    """Not editable: the wheel's own copy, so the specs must ship as package data."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT], check=True)
    (wheel,) = dist.glob("torch_pleat-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    # torch and the rest from this environment's site-packages, without its .pth files (the editable install)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "parent.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], check=True)
    where = subprocess.run([python, "-c", "import pleat; print(pleat.__file__)"], capture_output=True, text=True)
    assert str(venv) in where.stdout  # the installed wheel, not this checkout
    dry = [venv / "bin" / "pleat", "reproduce", "fig3", "--budget", "smoke", "--dry-run", "--out", tmp_path / "out"]
    done = subprocess.run(dry, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fig3 at budget smoke: 14 runs" in done.stdout


def test_the_core_imports_with_torch_alone():
    """`import pleat` (the losses, engines and probes) pulls in none of the optional extras."""
    code = (
        "import sys, pleat; "
        "print(sorted(m for m in ('transformers', 'lightning', 'scipy', 'pandas', 'matplotlib', 'torchvision', "
        "'ray', 'kornia') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""The documentation follows the code and the runs: every public name has a reference entry, the results pages are
what the committed runs say, and the README is a front page whose numbers come from those pages."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pleat

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_api_reference_covers_every_public_name():
    documented = set(re.findall(r"^::: ([\w.]+)$", (DOCS / "reference" / "api.md").read_text(), re.M))
    for name in pleat.__all__:
        obj = getattr(pleat, name)
        assert f"{obj.__module__}.{obj.__qualname__}" in documented, f"pleat.{name} has no entry in reference/api.md"


def test_every_page_of_the_site_is_in_its_navigation_or_linked_from_the_results():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    results_index = (DOCS / "results" / "index.md").read_text()
    for page in pages:
        linked = page.startswith("results/") and f"]({Path(page).name})" in results_index
        assert page in nav or linked, f"docs/{page} is neither in mkdocs.yml's nav nor linked from the results"


def _tracked_results(tmp_path: Path) -> Path:
    """A copy of the results git tracks: a sweep in progress leaves finished runs not yet committed."""
    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout:
        pytest.fail("the results pages are checked against the runs git tracks: run the tests in a git checkout")
    for name in listed.stdout.splitlines():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.mark.slow
def test_the_results_pages_are_what_the_committed_runs_say(tmp_path, monkeypatch):
    from pleat.reproduce.report import write_markdown

    monkeypatch.chdir(_tracked_results(tmp_path / "checkout"))
    written = write_markdown(["results"], tmp_path / "pages")
    committed = sorted(p.name for p in (DOCS / "results").glob("*.md"))
    assert committed == sorted(p.name for p in written), "run tools/docs-results.sh"
    for page in written:
        assert page.read_text() == (DOCS / "results" / page.name).read_text(), f"{page.name}: run tools/docs-results.sh"


def test_the_front_pages_numbers_are_the_generated_results():
    """A number the README or the site's home page quotes from a sweep must be on that sweep's generated page."""
    quotes = {
        "fig3-decisive": ("+1.01 points [+0.80, +1.22]", "+0.01 points [-0.04, +0.06]"),
        "label-noise-decisive": (
            "+17.14 points [+15.86, +18.42]",
            "+7.22 points [+6.13, +8.31]",
            "+0.64 points [+0.37, +0.91]",
        ),
    }
    readme = " ".join((ROOT / "README.md").read_text().split())
    home = " ".join((DOCS / "index.md").read_text().split())
    for sweep, numbers in quotes.items():
        generated = " ".join((DOCS / "results" / f"{sweep}.md").read_text().split())
        for quoted in numbers:
            assert quoted in readme and quoted in generated, f"README quotes {quoted}, which {sweep} does not"
    for quoted in quotes["fig3-decisive"]:
        assert quoted in home, f"docs/index.md lost {quoted}"


def test_the_readme_is_a_front_page_with_the_two_set_up_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    setup = readme.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines() if not line.startswith("#")]
    assert len(commands) == 2 and commands[0].endswith("pleat train configs/quickstart.toml"), commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].split("&&")[-1].strip() in ci, "CI must run the README's test command"
    assert "[train]" in readme and "[hf]" in readme and "[lightning]" in readme and "download.pytorch.org" in readme

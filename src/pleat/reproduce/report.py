"""The report: one self-contained HTML file (figures embedded, no network) with each claim beside what the runs show.

`pleat report DIR...` takes sweep folders written by `pleat reproduce` (they hold sweep.json and spec.toml: the
figure is drawn and the spec's claims judged) or any run store (runs are grouped by the config keys that differ).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from pleat.reproduce import verdicts as verdicts_
from pleat.reproduce.figures import BUDGET_NOTE, draw
from pleat.reproduce.findings import cost_ratio, per_row, plain, subset_name
from pleat.reproduce.results import results_table, store_dir, sweeps_in
from pleat.reproduce.spec import Spec, load_spec
from pleat.runs.config import radius_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
.supported { background: #d9f2d9; } .contradicted { background: #f8d7d7; }
.inconclusive { background: #fff3cd; } .not-enough-runs { background: #e8e8e8; }
.no-effect { background: #dde8f5; } .collapsed, .finding { background: #f0e0f0; }
.budget { padding: 0.5em 1em; background: #eef; border-left: 4px solid #88c; }
code { font-size: 0.9em; }
"""

_IDENTITY: tuple[str, ...] = ("dataset", "model", "activation", "kind", "layers", "radius", "samples", "sharpness")
_IDENTITY += ("lr", "momentum", "batch_size", "epochs", "weight_decay", "train_subset", "test_subset", "probe_every")
_IDENTITY += ("probe_gradient", "dtype", "init", "probe_estimator", "probe_windows", "label_noise")
_SMOOTHING = ("layers", "radius", "samples", "sharpness")  # meaningless for plain SGD: shown blank on its rows


def _image(fig_path: Path) -> str:
    data = base64.b64encode(fig_path.read_bytes()).decode()
    return f'<img alt="{html.escape(fig_path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return subset_name(v) if v else "-"
    return radius_text(v) if isinstance(v, (float, str)) else str(v)


@dataclass
class Table:
    header: list[str]
    rows: list[list]
    classes: list[str] = field(default_factory=list)  # a CSS class per row (the verdict's colour), or none


@dataclass
class Section:
    """What the report says of one sweep folder or run store, before it is written as HTML or Markdown."""

    title: str
    folder: Path
    budget: str | None = None
    notes: str = ""
    holds: str = ""  # the settings the finished runs cover; empty: no finished run
    figure: Path | None = None
    verdicts: list[verdicts_.Verdict] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)  # Claims, Runs, Shared configuration, Environment


CLAIMS_NOTE = (
    "Each row's difference, interval, seeds and p are those of the test it names (the one that decided the "
    "verdict); every test is listed in the third column. A difference is the mean over seeds of the per-seed "
    "difference of the two sides (paired, the seeds being shared) or a difference of means (Welch); the interval is "
    "its unadjusted 95% interval. Every test of the report is one hypothesis in a Holm family (at 5%), so no "
    'setting is picked on the runs that test it. "no effect within ±m": the equivalence test puts the difference '
    "within the spec's margin. Collapsed runs (train accuracy far below plain SGD's) support nothing."
)


def _claims(verdicts: list[verdicts_.Verdict]) -> Table:
    table = Table(
        [
            "the paper says",
            "encoded as",
            "what was compared (every test)",
            "test shown",
            "difference",
            "95% interval",
            "seeds",
            "Holm p",
            "verdict",
        ],
        [],
    )
    for v in verdicts:
        unit = next((t.unit for t in v.tests if t.what == v.shown), "points")
        scale, unit = (100, "points") if unit == "points" else (1, unit)
        shown = "-" if v.difference is None else f"{scale * v.difference:+.{2 if scale == 100 else 4}f} {unit}"
        interval = "-"
        if v.interval is not None:
            digits = 2 if scale == 100 else 4
            interval = f"[{scale * v.interval[0]:+.{digits}f}, {scale * v.interval[1]:+.{digits}f}]"
        seeds = f"{v.seeds} ({'paired' if v.paired else 'Welch'})" if v.difference is not None else v.seeds or "-"
        p = "-" if v.p is None else f"{v.p:.3g}"
        table.rows.append([v.quote, v.text, v.detail, v.shown or "-", shown, interval, seeds, p, v.verdict])
        table.classes.append("no-effect" if v.verdict.startswith("no effect") else v.verdict.replace(" ", "-"))
    return table


def _grid_text(table) -> str:
    """The settings the finished runs actually cover (the spec's notes describe its full grid)."""
    smoothed = table[table["kind"] != "none"] if "kind" in table else table
    parts = [f"{len(table)} finished runs, seeds {', '.join(str(s) for s in sorted(table['seed'].unique()))}"]
    if "radius" in smoothed and not smoothed.empty:
        radii = sorted(smoothed["radius"].unique(), key=lambda r: (not isinstance(r, float), str(r)))
        parts.append("R in {" + ", ".join(radius_text(r) for r in radii) + "}")
    if "layers" in smoothed and not smoothed.empty:
        parts.append("subsets " + " ".join(_fmt(tuple(v)) for v in dict.fromkeys(smoothed["layers"])))
    if "epochs" in table:
        parts.append("epochs " + "/".join(str(e) for e in sorted(table["epochs"].unique())))
    return "; ".join(parts)


def _groups(table) -> Table:
    """Runs grouped by the config keys that differ (besides seed): mean ± std of best and final accuracy; where
    the runs recorded them, the early-stopped accuracy and the mean of the last 10 epochs; and each group's epoch
    time over plain SGD's."""
    keys = [k for k in ("arm", *_IDENTITY) if k in table and table[k].astype(str).nunique() > 1] or ["arm"]
    any_diverged = "diverged" in table and table["diverged"].notna().any()
    base = plain(table)
    extra = {
        "early-stopped test accuracy (%)": per_row(table, "selected_test_accuracy"),
        "mean of the last 10 epochs (%)": per_row(table, "final_mean_test_accuracy"),
    }
    extra = {k: v for k, v in extra.items() if v.notna().all()}
    rows = []
    for values, group in table.groupby(keys, sort=False, dropna=False):  # a list of keys: tuples of values
        best, final = group["best_test_accuracy"], group["final_test_accuracy"]
        plain_rows = (group["kind"] == "none").all() if "kind" in group else False
        row = [
            *("" if plain_rows and k in _SMOOTHING else _fmt(v) for k, v in zip(keys, values)),
            len(group),
            _mean_std(best),
            _mean_std(final),
            *(_mean_std(v[group.index]) for v in extra.values()),
        ]
        if not base.empty:
            same = base[base["regime"] == group["regime"].iloc[0]] if "regime" in table else base
            ratio = cost_ratio(group, same if not same.empty else base)
            row.append(f"{ratio:.2f}x" if ratio == ratio else "-")
        if any_diverged:  # seeds whose training loss stopped being finite, and at which epochs
            epochs = [int(e) for e in group["diverged"].dropna()]
            row.append(f"{len(epochs)} (epoch {', '.join(map(str, epochs))})" if epochs else "")
        rows.append(row)
    header = [*keys, "seeds", "best test accuracy (%, mean ± std)", "final test accuracy (%)", *extra]
    header += ["epoch time ÷ plain SGD's (median)"] if not base.empty else []
    header += ["diverged"] if any_diverged else []
    return Table(header, rows)


def _mean_std(values) -> str:
    return f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1) if len(values) > 1 else 0:.2f}"


def _common(table) -> Table:
    same = {k: _fmt(table[k].iloc[0]) for k in _IDENTITY if k in table and table[k].astype(str).nunique() == 1}
    return Table(["config key", "value (every run)"], [[k, v] for k, v in same.items()])


def _environment(store: Path, table) -> Table:
    seen: dict[tuple, int] = {}
    for run in table["run"]:
        path = store / run / "environment.json"
        if path.exists():
            env = json.loads(path.read_text())
            key = (
                env.get("device_name"),
                env["versions"].get("torch"),
                env.get("git_commit"),
                env.get("threads"),
                env.get("precision", "-"),  # not recorded before 2026-11-28
                env.get("vectorised_group", 1),
            )
            seen[key] = seen.get(key, 0) + 1
    rows = [[d, t, (c or "-")[:12], th, p, g, n] for (d, t, c, th, p, g), n in seen.items()]
    return Table(["device", "torch", "git commit", "threads", "precision", "runs in its group", "runs"], rows)


def _section(folder: Path, figure: Path) -> Section:
    """What the report says of one sweep folder or run store; its figure is drawn to `figure` (a PNG)."""
    sweep = folder / "sweep.json"
    spec, budget = None, None
    if sweep.exists():
        spec, budget = load_spec(folder / "spec.toml"), json.loads(sweep.read_text())["budget"]
    table = results_table(folder, spec, budget)
    section = Section(
        spec.title if spec else f"Runs in {folder}", folder, budget, spec.notes_for(budget) if spec else ""
    )
    if table.empty:
        return section
    if spec is None:
        varying = [k for k in _IDENTITY if table[k].astype(str).nunique() > 1]
        table["arm"] = [" ".join(f"{k}={_fmt(r[k])}" for k in varying) or r["kind"] for _, r in table.iterrows()]
        spec = Spec(folder.name, section.title, "curves", (), {}, (), {})
    section.holds = _grid_text(table)
    section.figure = draw(table, spec, budget or "", figure)
    section.verdicts = verdicts_.judge(table, spec)
    if section.verdicts:
        section.tables["Claims"] = _claims(section.verdicts)
    section.tables["Runs"] = _groups(table)
    section.tables["Shared configuration"] = _common(table)
    section.tables["Environment"] = _environment(store_dir(folder), table)
    return section


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cls = f' class="{t.classes[i]}"' if i < len(t.classes) and t.classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.budget:
        note = BUDGET_NOTE[section.budget]
        parts.append(f'<p class="budget">{html.escape(note)}. Folder: <code>{section.folder}</code></p>')
    if section.notes:
        parts.append(f"<p><b>The spec's notes</b>: {html.escape(section.notes)}</p>")
    if not section.holds:
        parts.append("<p>No finished run yet.</p>")
        return "\n".join(parts)
    parts.append(f"<p><b>What these runs hold</b>: {html.escape(section.holds)}.</p>")
    if section.figure is not None:
        parts.append(_image(section.figure))
    for name, table in section.tables.items():
        note = f"<p>{html.escape(CLAIMS_NOTE)}</p>" if name == "Claims" else ""
        parts.append(f"<h3>{name}</h3>{note}{_html_table(table)}")
    return "\n".join(parts)


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(map(_md_cell, table.header)) + " |", "|" + "---|" * len(table.header)]
    return lines + ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]


def _markdown(section: Section, figure_link: str | None) -> str:
    lines = [f"# {section.title}", ""]
    if section.budget:
        lines += [f'!!! note "{BUDGET_NOTE[section.budget]}"', f"    Folder: `{section.folder}`", ""]
    if section.notes:
        lines += ["**The spec's notes**: " + " ".join(section.notes.split()), ""]
    if not section.holds:
        return "\n".join([*lines, "No finished run yet.", ""])
    lines += [f"**What these runs hold**: {section.holds}.", ""]
    if figure_link:
        lines += [f"![{section.title}]({figure_link})", ""]
    for name, table in section.tables.items():
        lines += [f"## {name}", ""]
        if name == "Claims":
            lines += [CLAIMS_NOTE, ""]
        lines += [*_md_table(table), ""]
    return "\n".join(lines)


def _sweeps_in(folder: Path) -> list[Path]:
    """A sweep folder or run store as it is; a folder of sweep folders (`results/`) as each of them."""
    if (folder / "sweep.json").exists() or (folder / "runs").is_dir():
        return [folder]
    return sweeps_in(folder) or [folder]


def _check_folders(folders: list[str | Path]) -> list[Path]:
    """Each sweep the folders hold, checked before anything is written (the output may be one of them)."""
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a folder: give sweep folders (pleat reproduce's results, e.g. results/fig3-quick) "
                "or run stores (pleat train's runs/)"
            )
    return [sweep for f in folders for sweep in _sweeps_in(Path(f))]


def _figure_path(folder: Path, out_dir: Path) -> Path:
    """A sweep's figure: in its own folder as FIGURE.png (what `pleat reproduce` writes), elsewhere named by the
    sweep folder, so that the figures of fig3-quick and fig3-decisive never overwrite each other."""
    if out_dir.resolve() == folder.resolve():
        sweep = folder / "sweep.json"
        name = json.loads(sweep.read_text())["spec"] if sweep.exists() else folder.name
        return folder / f"{name}.png"
    return out_dir / f"{folder.resolve().name}.png"


def write_report(folders: list[str | Path], path: str | Path) -> tuple[Path, list[verdicts_.Verdict], list[Path]]:
    """Write the report of `folders` to `path` (figures beside it as PNG too); returns (path, verdicts, figures)."""
    path = Path(path)
    sweeps = _check_folders(folders)
    path.parent.mkdir(parents=True, exist_ok=True)
    sections = [_section(folder, _figure_path(folder, path.parent)) for folder in sweeps]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>pleat report</title>"
        f"<style>{STYLE}</style></head><body><h1>pleat report</h1>"
        "<p>Partial local entropy (Musso, arXiv 2007.09091): each figure with the paper's claims beside what these "
        "runs show. Bands and ± are one standard deviation over seeds; intervals are 95% intervals of a "
        "difference: paired over the seeds two arms share, Welch's otherwise.</p>"
        + "\n".join(_html(s) for s in sections)
        + "</body></html>"
    )
    path.write_text(page)
    verdicts = [v for s in sections for v in s.verdicts]
    return path, verdicts, [s.figure for s in sections if s.figure is not None]


def write_markdown(folders: list[str | Path], out_dir: str | Path) -> list[Path]:
    """The results pages of the documentation: one Markdown page and one figure per sweep (named by its folder),
    and index.md, a table of every claim's verdict. Returns the pages written."""
    out_dir = Path(out_dir)
    sweeps = _check_folders(folders)
    out_dir.mkdir(parents=True, exist_ok=True)
    given = " ".join(map(str, folders))
    pages: list[Path] = []
    index = [
        "# Results",
        "",
        f"Generated from the run stores of `{given}` by `pleat report {given} --markdown DIR` (in pleat's repository,",
        "`tools/docs-results.sh`, and a test fails when these pages and the committed runs disagree). Each sweep's",
        "claims, with the test behind each verdict; a sweep's page has the paper's sentences, every test, the runs,",
        "the figure and the environment.",
        "",
    ]
    for folder in sweeps:
        name = folder.resolve().name
        section = _section(folder, out_dir / f"{name}.png")
        pages.append(out_dir / f"{name}.md")
        pages[-1].write_text(_markdown(section, section.figure.name if section.figure is not None else None))
        index += [f"## [{name}]({name}.md)", "", f"{section.title}. {section.holds or 'No finished run yet'}.", ""]
        if "Claims" in section.tables:
            claims = section.tables["Claims"]
            keep = [claims.header.index(h) for h in ("encoded as", "test shown", "difference", "95% interval")]
            table = Table([claims.header[i] for i in keep] + ["verdict"], [])
            table.rows = [[row[i] for i in keep] + [row[-1]] for row in claims.rows]
            index += [*_md_table(table), ""]
    (out_dir / "index.md").write_text("\n".join(index))
    return [out_dir / "index.md", *pages]


def write_sweep_report(out: str | Path) -> dict:
    """The report of one sweep folder, written as <out>/report.html."""
    out = Path(out)
    path, verdicts, figures = write_report([out], out / "report.html")
    return {"report": path, "figure": figures[0] if figures else None, "verdicts": verdicts}

"""Judging: every claim a spec names, its tests corrected together for multiplicity (Holm), one verdict per claim.

Verdict of a test whose claim has a direction:
- "supported": the Holm-adjusted test excludes zero in the paper's direction;
- "contradicted": it excludes zero in the other direction;
- "no effect within ±m": the Holm-adjusted equivalence test puts the difference within the spec's margin m;
- "inconclusive": anything else; "not enough runs" below 2 seeds a side;
- "collapsed": an arm's final train accuracy is more than 5 points below plain SGD's. A collapsed run is an
  optimisation failure, not the paper's effect, so it supports nothing; the report lists collapses as a finding.
A claim that two things match ("y = 8 is comparable to y = 4") is supported by the equivalence test and
contradicted when the difference is beyond the margin. A claim's verdict combines its tests by its rule: `all`
(each must hold), `any` (one setting suffices), `best` (never beaten, beating some) or `not_worse`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pleat.reproduce.claims import CHECKS
from pleat.reproduce.findings import (
    COLLAPSE,
    RULES,
    Finding,
    Test,
    describe,
    has_collapsed,
    no_effect,
    plain,
    settings_in,
)
from pleat.reproduce.stats import ALPHA, Estimate, holm


@dataclass(frozen=True)
class Verdict:
    """A claim, the sentence it encodes, what the runs show and the verdict. Differences are in accuracy units."""

    claim: str  # the check's name
    text: str  # the claim in a few words
    verdict: str  # supported | contradicted | no effect within ±m | inconclusive | not enough runs | finding
    difference: float | None = None  # of the test shown (the one that decided the verdict)
    interval: tuple[float, float] | None = None  # its 95% interval (unadjusted)
    seeds: int = 0
    detail: str = ""  # every test, with its difference, interval and verdict
    quote: str = ""  # the paper's sentence, with its section
    p: float | None = None  # Holm-adjusted p-value of the test shown
    paired: bool = False
    tests: tuple[Test, ...] = field(default_factory=tuple)
    shown: str = ""  # which test the difference, interval, seeds and p belong to


# Judging: Holm over the report, then each test's verdict, then each claim's


def _tests(finding: Finding) -> list[Test]:
    out: list[Test] = []
    for part in finding.parts:
        out += _tests(part) if isinstance(part, Finding) else [part]
    return out


def _test_verdict(t: Test, p: float | None, q: float | None) -> str:
    if t.estimate is None:
        return "not enough runs"
    if t.collapsed:
        return "collapsed"
    if t.direction == 0:
        if q is not None and q < ALPHA:
            return "supported"
        return "contradicted" if p is not None and p < ALPHA else "inconclusive"
    if p is not None and p < ALPHA:
        return "supported" if (t.estimate.difference > 0) == (t.direction > 0) else "contradicted"
    if t.margin and q is not None and q < ALPHA:
        return no_effect(t.margin)
    return "inconclusive"


def _combine(rule: str, verdicts: list[str]) -> str:
    """A finding's verdict from its parts' verdicts."""
    if not verdicts or all(v == "not enough runs" for v in verdicts):
        return "not enough runs"
    nulls = [v for v in verdicts if v.startswith("no effect")]
    null = nulls[0] if nulls else ""
    if rule == "not_worse":
        (v,) = verdicts
        return "supported" if v == "supported" or null else v
    if rule == "not_better":  # the paper says the difference is not positive
        v = verdicts[0] if len(verdicts) == 1 else _combine("any", verdicts)
        return "contradicted" if v == "supported" else "supported" if v == "contradicted" or null else v
    if rule == "all":
        if "contradicted" in verdicts:
            return "contradicted"
        if all(v == "supported" for v in verdicts):
            return "supported"
        return null or "inconclusive"
    if rule == "any":
        if "supported" in verdicts:
            return "supported"
        if all(v == "contradicted" for v in verdicts):
            return "contradicted"
        if all(v == "contradicted" or v.startswith("no effect") for v in verdicts):
            return null
        return "inconclusive"
    if rule == "best":
        if "contradicted" in verdicts:
            return "contradicted"
        if "supported" in verdicts and all(v == "supported" or v.startswith("no effect") for v in verdicts):
            return "supported"
        if all(v.startswith("no effect") for v in verdicts):
            return null
        return "inconclusive"
    raise ValueError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")


def _resolve(finding: Finding, verdict_of: dict) -> str:
    if finding.verdict:
        return finding.verdict
    parts = [_resolve(p, verdict_of) if isinstance(p, Finding) else verdict_of[id(p)] for p in finding.parts]
    return _combine(finding.rule, parts)


def _fmt(t: Test) -> str:
    if t.estimate is None:
        return f"{t.what}: not enough runs"
    lo, hi = t.estimate.interval()
    kind = "paired" if t.estimate.paired else "Welch"
    p = "-" if t.p is None else f"{t.p:.3g}"
    if t.q is not None:
        p += f", equivalence p = {t.q:.3g}"
    collapse = f"; the {t.collapsed} side collapsed" if t.collapsed else ""
    if t.unit == "points":
        size = f"{100 * t.estimate.difference:+.2f} points [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    else:
        size = f"{t.estimate.difference:+.4f} in {t.unit} [{lo:+.4f}, {hi:+.4f}]"
    return f"{t.what}: {size} ({kind}, {t.estimate.seeds} seeds, Holm p = {p}){collapse}: {t.verdict}"


def judge(table, spec) -> list[Verdict]:
    """Every claim the spec names, judged on `table`, with Holm's correction over all of their tests.

    When the table has training regimes (a `regime` column: the sensitivity spec), each claim is judged within each
    regime, as "claim [regime]", all in one Holm family. When any run collapsed (train accuracy more than 5 points
    below plain SGD's) a last row, "collapse", says which.
    """
    regimes = list(dict.fromkeys(table["regime"])) if "regime" in table and not table.empty else []
    if regimes:
        findings = {
            (claim, regime): CHECKS[claim].check(table[table["regime"] == regime], spec)
            for regime in regimes
            for claim in spec.claims
        }
    else:
        findings = {(claim, ""): CHECKS[claim].check(table, spec) for claim in spec.claims}
    tests = [(t, t.estimate) for f in findings.values() for t in _tests(f) if t.estimate and not t.collapsed]
    p = holm([e.p_zero() if t.direction else _beyond(t) for t, e in tests])
    equivalence = [(t, e) for t, e in tests if t.margin]
    q = holm([e.p_equivalent(t.margin) for t, e in equivalence])
    adjusted: dict[int, list[float | None]] = {id(t): [pv, None] for (t, _), pv in zip(tests, p)}
    for (t, _), q_value in zip(equivalence, q):
        adjusted[id(t)][1] = q_value
    done: dict[int, Test] = {}
    verdict_of: dict[int, str] = {}
    for f in findings.values():
        for t in _tests(f):
            pv, qv = adjusted.get(id(t), [None, None])
            verdict_of[id(t)] = _test_verdict(t, pv, qv)
            done[id(t)] = dataclasses.replace(t, p=pv, q=qv, verdict=verdict_of[id(t)])
    out = []
    for (claim, regime), f in findings.items():
        verdict = _resolve(f, verdict_of)
        ts = [done[id(t)] for t in _tests(f)]
        shown = _shown(ts, verdict)
        detail = "; ".join(_fmt(t) for t in ts) if ts else ""
        if f.note:
            detail = f"{f.note}. {detail}" if detail else f.note
        out.append(
            Verdict(
                f"{claim} [{regime}]" if regime else claim,
                f"{CHECKS[claim].text} ({regime})" if regime else CHECKS[claim].text,
                verdict,
                shown.estimate.difference if shown and shown.estimate else None,
                shown.estimate.interval() if shown and shown.estimate else None,
                shown.estimate.seeds
                if shown and shown.estimate
                else min((t.estimate.seeds for t in ts if t.estimate), default=0),
                detail,
                CHECKS[claim].quote,
                _decisive_p(shown) if shown else None,
                bool(shown and shown.estimate and shown.estimate.paired),
                tuple(ts),
                shown.what if shown else "",
            )
        )
    collapsed = []
    for regime in regimes or [""]:
        rows = table[table["regime"] == regime] if regime else table
        if "kind" in rows:
            settings = settings_in(rows[rows["kind"] != "none"], ["arm", "kind", "layers", "radius", "samples"])
            collapsed += [describe(s) for s, runs in settings if has_collapsed(runs, plain(rows))]
    if collapsed:
        out.append(
            Verdict(
                "collapse",
                f"Settings that collapsed: final train accuracy more than {100 * COLLAPSE:g} points below plain SGD's",
                "finding",
                detail="; ".join(collapsed),
                quote="not a claim of the paper: a collapsed run is an optimisation failure, so it supports no claim",
            )
        )
    return out


def _beyond(t: Test) -> float:
    """Direction-0 tests: p-value of 'the difference lies within ±margin' (rejected: beyond the margin)."""
    e = t.estimate
    assert e is not None
    shifted = Estimate(abs(e.difference) - t.margin, e.se, e.df, e.seeds, e.paired)
    return 1.0 if shifted.difference <= 0 else shifted.p_zero()  # two-sided: the side is the data's


def _shown(tests: list[Test], verdict: str) -> Test | None:
    """The test that best explains the verdict: the strongest one with the claim's verdict, else the first."""
    usable = [t for t in tests if t.estimate is not None]
    if not usable:
        return None
    matching = [t for t in usable if t.verdict == verdict] or usable
    return min(matching, key=_sort_p)


def _sort_p(t: Test) -> tuple[bool, float, float]:
    """Tests leaning the paper's way first, then the smallest adjusted p: for an inconclusive "some setting" claim
    the report shows the setting that came closest to supporting it."""
    p = _decisive_p(t)
    leaning = t.direction == 0 or (t.estimate is not None and (t.estimate.difference > 0) == (t.direction > 0))
    raw = t.estimate.p_zero() if t.estimate is not None else 1.0
    return (not leaning, 1.0 if p is None else p, raw)


def _decisive_p(t: Test) -> float | None:
    """The adjusted p-value behind a test's verdict: equivalence for "no effect" and for matching claims."""
    return t.q if t.verdict.startswith("no effect") or (t.direction == 0 and t.verdict == "supported") else t.p

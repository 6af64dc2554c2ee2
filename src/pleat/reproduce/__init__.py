"""The paper's experiments: a spec per figure, sweeps on a local pool or a Ray cluster, figures, claims, report."""

from pleat.reproduce.claims import CHECKS
from pleat.reproduce.report import write_report
from pleat.reproduce.results import results_table
from pleat.reproduce.spec import BUDGETS, Run, Spec, available, expand, load_spec
from pleat.reproduce.sweep import reproduce
from pleat.reproduce.verdicts import Verdict, judge

__all__ = [
    "BUDGETS",
    "CHECKS",
    "Run",
    "Spec",
    "Verdict",
    "available",
    "expand",
    "judge",
    "load_spec",
    "reproduce",
    "results_table",
    "write_report",
]

"""The paper's experiments: a spec per figure, sweeps on a local pool or a Ray cluster, figures, claims, report.

The names below load on first use (PEP 562): the claims pull in scipy, and `pleat --help` lists the shipped specs
through `pleat.reproduce.spec` without paying for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pleat.reproduce.claims import CHECKS
    from pleat.reproduce.report import write_report
    from pleat.reproduce.results import results_table
    from pleat.reproduce.spec import BUDGETS, Run, Spec, available, expand, load_spec
    from pleat.reproduce.sweep import reproduce
    from pleat.reproduce.verdicts import Verdict, judge

_HOME = {
    "CHECKS": "claims",
    "write_report": "report",
    "results_table": "results",
    "BUDGETS": "spec",
    "Run": "spec",
    "Spec": "spec",
    "available": "spec",
    "expand": "spec",
    "load_spec": "spec",
    "reproduce": "sweep",
    "Verdict": "verdicts",
    "judge": "verdicts",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

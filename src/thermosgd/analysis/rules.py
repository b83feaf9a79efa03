"""One tolerance system: every number of :func:`thermosgd.analysis.checks.stationary_checks`
becomes a :class:`Check` row, judged by a :class:`Rule` where one applies, reported ("info")
otherwise.

A rule is chosen by where the number sits in the checks (the check and the metric), so a
check present for any result is judged the same way for every result. One exception follows
the columns: where an appendix-G corrected prediction exists (networks), V1 judges it and only
reports the SDE prediction, which misses the discretization term (appendix G).

**Borderline**, one meaning everywhere: a pass that its uncertainty does not settle. The
uncertainty is the 95 % bootstrap interval where one is computed (Table 4), and otherwise a
fifth of the tolerance on either side of the value (run-to-run scatter, not estimated). A pass
whose uncertainty reaches outside the tolerance is borderline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["BORDERLINE", "Check", "Rule", "judge", "rule_for", "tolerance_lines"]

BORDERLINE = ("Borderline: a pass that its uncertainty does not settle: its 95 % bootstrap "
              "interval (Table 4) or, where no interval is computed, the value ± a fifth of the "
              "tolerance reaches outside the tolerance.")
DEFAULT_UNCERTAINTY = 0.2  # of the tolerance, where no interval is computed


@dataclass(frozen=True)
class Check:
    """One row of a checks table."""

    name: str  # what is checked
    value: float | None
    tolerance: str  # the rule in words; "reported" when the value is not judged
    status: str  # "pass", "fail", "info" (not judged) or "n/a" (judged but missing)
    paper: float | None = None  # the paper's value (or prediction) for the same setup
    interval: str = ""  # 95 % confidence interval, as text
    shown: str | None = None  # the value as printed, when it says more than the number
    borderline: bool = False  # a pass its uncertainty does not settle
    note: str = ""  # why it is borderline, said where the page lists the misses
    key: str = ""  # where the number sits in the checks: "V1.interior_median_rel_error"
    paper_shown: str | None = None  # the paper's value as printed there ("2.5%")


@dataclass(frozen=True)
class Rule:
    """``below``: value < bound; ``at_least``: value >= bound (fractions: the band is up to 1);
    ``near``: |value - target| <= bound, relative to |target| when ``relative``."""

    test: str  # "below", "at_least" or "near"
    bound: float
    target: float = 0.0
    relative: bool = False
    percent: bool = False  # show value and bound as percentages
    unit: str = ""

    def _margin(self, value: float) -> float:
        """How far inside the tolerance the value is (negative: outside)."""
        if self.test == "below":
            return self.bound - value
        if self.test == "at_least":
            return value - self.bound
        return self._width() - abs(value - self.target)

    def _width(self) -> float:
        """The tolerance's size: the bound, the room up to 1, or the allowed deviation."""
        if self.test == "at_least":
            return 1.0 - self.bound
        return self.bound * abs(self.target) if self.relative else self.bound

    def passes(self, value: float) -> bool:
        margin = self._margin(value)
        return margin > 0 if self.test == "below" else margin >= 0

    def borderline(self, value: float, interval=None) -> bool:
        if not self.passes(value):
            return False
        if interval is not None:
            return not (self.passes(interval[0]) and self.passes(interval[1]))
        spread = DEFAULT_UNCERTAINTY * self._width()
        return not (self.passes(value - spread) and self.passes(value + spread))

    def describe(self) -> str:
        def show(v):
            return f"{100 * v:g} %" if self.percent else f"{v:g}"
        unit = f" {self.unit}" if self.unit else ""
        if self.test == "near":
            size = f"{100 * self.bound:g} %" if self.relative else f"{self.bound:g}"
            return f"{self.target:g} ± {size}{unit}"
        return f"{'<' if self.test == 'below' else '≥'} {show(self.bound)}{unit}"


_TABLE4_RULES = {
    "r2": Rule("at_least", 0.9),
    "(a1-a2)/R": Rule("near", 0.10, 1.0, relative=True),
    "a2/R": Rule("near", 0.10, -1.0, relative=True),
    **{k: Rule("near", 0.05) for k in ("(2a3-a5)/R", "(2a4-a5)/R", "2a4/R", "a5/R")},
    "mean_rel_error": Rule("below", 0.10, percent=True),
}
_RULES = {
    "V1.interior_median_rel_error": Rule("below", 0.05, percent=True),
    "V1.corrected.median_rel_error": Rule("below", 0.10, percent=True),
    "U.interior_median_rel_error": Rule("below", 0.05, percent=True),
    "entropy_sphere.median_abs_error": Rule("below", 0.1, unit="nat"),
    "V2.within_one_step_fraction": Rule("at_least", 0.9),
    "V4.median_spread_over_range": Rule("below", 0.05, percent=True),
    "angles.angular_update.interior_median_rel_error": Rule("below", 0.05, percent=True),
    **{f"V3.{fit}.{k}": rule for fit in ("table4", "table4_raw")
       for k, rule in _TABLE4_RULES.items()},
}
SLOPE_REL_TOLERANCE = 0.05  # V3 slopes: |value - target| / |target|
SLOPE_ABS_TOLERANCE = 0.05  # V3 slopes with target 0: |value|


# the normalized Maxwell relation of each chart's fit; its target: the fit's "target/R" if given
_MAXWELL_KEYS = {f"V3.{fit}.{k}": fit for fit in ("table4", "table4_raw")
                 for k in ("(a1-a2)/R", "a2/R")}


def rule_for(key: str, checks: dict) -> Rule | None:
    """The rule that judges the number at ``key`` of ``checks``, or None (reported only). The
    normalized Maxwell relation is judged against the target the fit recorded ("target/R": the
    optimizer's, 2 for AdamW at fixed LR) where it recorded one."""
    if key == "V1.interior_median_rel_error" and "corrected" in checks.get("V1", {}):
        return None  # the SDE prediction misses appendix G's discretization term
    rule = _RULES.get(key)
    target = (_number(_at(checks, ["V3", _MAXWELL_KEYS[key], "target/R"]))
              if key in _MAXWELL_KEYS else None)
    if rule is not None and target is not None:
        rule = replace(rule, target=target)
    return rule


def tolerance_lines() -> list[str]:
    names = {"V1.interior_median_rel_error": "V1 (no corrected prediction), interior median "
                                             "rel. error",
             "V1.corrected.median_rel_error": "V1 appendix-G corrected, median rel. error",
             "U.interior_median_rel_error": "U against the exact VMF, interior median rel. error",
             "entropy_sphere.median_abs_error": "S_sphere against the exact VMF, median abs. "
                                                "error",
             "V2.within_one_step_fraction": "V2, fraction of points whose potential's argmin "
                                            "is within one grid step",
             "V4.median_spread_over_range": "V4, median entropy spread along an adiabat / "
                                            "entropy range over the grid",
             "angles.angular_update.interior_median_rel_error": "angle per step against its "
                                                                 "equilibrium value, interior "
                                                                 "median rel. error"}
    lines = [f"{names.get(k, k.replace('V3.table4.', 'V3 Table 4, '))}: {r.describe()}"
             for k, r in _RULES.items() if not k.startswith("V3.table4_raw.")]
    return lines + [
        (f"V3 slopes: within {100 * SLOPE_REL_TOLERANCE:g} % of the target, or within "
         f"{SLOPE_ABS_TOLERANCE:g} when the target is 0"),
        "V3 Table 4 on the paper's raw entropy chart (networks): the same rules",
        "V1 SDE where a corrected prediction exists: reported, not judged (appendix G)",
        BORDERLINE]


# ---- rows ---------------------------------------------------------------------------------

_LABELS = {"optimizer": "optimizer", "V1": "V1 ideal gas law", "angles": "optimizer's steps",
           "U": "mean loss U vs exact VMF",
           "entropy_sphere": "sphere entropy vs exact VMF", "V2": "V2 potential minimized",
           "V3": "V3 Maxwell relations", "V4": "V4 adiabats", "run": "run"}
_QUANTITIES = {"radius": "stationary radius r*", "lambda_eff": "effective weight decay λ_eff"}
_POTENTIALS = {"G": "Gibbs energy G = U − TS + pV", "F": "Helmholtz energy F = U − TS"}
ORDER = tuple(_LABELS)


_WORDS = (("angular_update.", "angle per step, "), ("preconditioner.", "AdamW's c, "),
          ("table4_raw.", "Table 4 (paper's raw chart) "), ("table4.", "Table 4 "),
          ("_over_", " / "), ("corrected.", "appendix-G corrected, "),
          ("stderr.", "std. error of "), ("interior_", "interior "), ("_rel_error", " rel. error"),
          ("_abs_error", " abs. error"), ("_fraction", " fraction"), ("_", " "))


def _words(metric: str) -> str:
    """A metric's key as a reader says it: "corrected.median_rel_error" -> "appendix-G
    corrected, median rel. error"."""
    for key, words in _WORDS:
        metric = metric.replace(key, words)
    return metric


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _fmt(value, percent=False) -> str:
    number = _number(value)
    if number is None:
        return "—" if value is None else str(value)
    if not math.isfinite(number):
        return str(number)
    return f"{100 * number:.2f} %" if percent else f"{number:.4g}"


def _label(check: str, entry) -> str:
    label = _LABELS.get(check, check)
    if isinstance(entry, dict):
        label += f": {_QUANTITIES[entry['quantity']]}" if entry.get("quantity") in _QUANTITIES else ""
        label += f": {_POTENTIALS[entry['potential']]}" if entry.get("potential") in _POTENTIALS else ""
    return label


def _judged(name, key, value, rule: Rule, *, shown=None, paper=None, interval=None) -> Check:
    number = _number(value)
    shown = shown if shown is not None else _fmt(value, rule.percent)
    text = "" if not interval else f"[{interval[0]:.3g}, {interval[1]:.3g}]"
    if number is None or not math.isfinite(number):
        return Check(name, number, rule.describe(), "n/a", paper, text, shown, key=key)
    borderline = rule.borderline(number, interval)
    note = ("its 95 % interval reaches outside the tolerance" if borderline and interval
            else "within a fifth of the tolerance of its edge" if borderline else "")
    return Check(name, number, rule.describe(), "pass" if rule.passes(number) else "fail",
                 paper, text, shown, borderline, note, key)


def _slope(name, key, entry: dict) -> Check:
    value, target = _number(entry.get("value")), _number(entry.get("target"))
    if target == 0 or target is None:
        rule = Rule("near", SLOPE_ABS_TOLERANCE, target or 0.0)
    else:
        rule = Rule("near", SLOPE_REL_TOLERANCE, target, relative=True)
    error = entry.get("rel_error", entry.get("abs_error"))
    shown = (f"{_fmt(value)} ({'rel' if 'rel_error' in entry else 'abs'} error "
             f"{_fmt(error, 'rel_error' in entry)})")
    return _judged(name, key, value, rule, shown=shown, paper=target)


def _rows(checks: dict, check: str, entry, prefix: str, paper: dict, ci: dict,
          printed: dict | None = None) -> list[Check]:
    """The rows of one check's numbers (nested dicts flattened, labels skipped)."""
    label = _label(check, checks.get(check))
    rows = []
    items = entry.items() if isinstance(entry, dict) else [("", entry)]
    for metric, value in items:
        key = ".".join(p for p in (prefix, metric) if p)
        name = f"{label}: {_words(key.split('.', 1)[1])}" if "." in key else label
        if isinstance(value, dict) and "skipped" in value:
            rows.append(Check(name, None, "", "n/a", shown=value["skipped"], key=key))
        elif isinstance(value, dict) and "target" in value:
            rows.append(_slope(name, key, value))
        elif isinstance(value, dict):
            inner = {k: v for k, v in value.items()
                     if k not in ("ci95", "paper", "paper_printed", "coefficients")}
            rows += _rows(checks, check, inner, key, value.get("paper") or paper,
                          value.get("ci95") or ci, value.get("paper_printed") or printed)
        elif isinstance(value, (str, list)):
            continue  # labels (V1's quantity) are in the check's name
        elif (rule := rule_for(key, checks)) is not None:
            rows.append(replace(_judged(name, key, value, rule, paper=_number(paper.get(metric)),
                                        interval=ci.get(metric)),
                                paper_shown=(printed or {}).get(metric)))
        else:
            ci_text = "" if not ci.get(metric) else f"[{ci[metric][0]:.3g}, {ci[metric][1]:.3g}]"
            rows.append(Check(name, _number(value), "reported", "info",
                              _number(paper.get(metric)), ci_text,
                              _fmt(value, "rel_error" in metric or "_over_" in metric), key=key,
                              paper_shown=(printed or {}).get(metric)))
    return rows


def _at(record: dict, path: list[str]):
    for part in path:
        record = record.get(part) if isinstance(record, dict) else None
    return record


def judge(checks: dict) -> list[Check]:
    """Every number of one protocol's checks as a row, in the order V1, U, S_sphere, V2-V4, run.

    A judged metric that is missing or not finite gives an "n/a" row (a miss, not a silence);
    a protocol that was not checked gives one "n/a" row with the reason.
    """
    if "skipped" in checks:
        return [Check("not checked", None, "", "n/a", shown=str(checks["skipped"]))]
    rows = []
    for check, entry in checks.items():
        if isinstance(entry, dict):
            rows += _rows(checks, check, entry, check, {}, {})
        else:  # n_points, n_diverged
            rows.append(Check(f"run: {_words(check)}", _number(entry), "reported", "info",
                              shown=_fmt(entry), key=f"run.{check}"))
    for key, rule in _RULES.items():  # judged numbers that should be there and are not
        check, metric = key.split(".", 1)
        parent = _at(checks, key.split(".")[:-1])
        if key.endswith("/R"):
            continue  # Table 4 writes the coefficients of its protocol, and only those
        if (isinstance(parent, dict) and "skipped" not in parent
                and rule_for(key, checks) is not None and not any(r.key == key for r in rows)):
            rows.append(Check(f"{_label(check, checks[check])}: {_words(metric)}", None,
                              rule.describe(), "n/a", shown="missing", key=key))
    order = {c: k for k, c in enumerate(ORDER)}
    return sorted(rows, key=lambda r: order.get(r.key.split(".")[0], len(order)))

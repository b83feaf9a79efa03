"""The report of an isotropic-noise run: what was simulated, every check against its
tolerance, the figures, and where the run misses the theory.

``write_report(out_dir)`` reads ``out_dir/checks.json`` (written by the analysis) and whatever
``out_dir/<protocol>/figure.png`` exist, and writes ``out_dir/report.md`` and the
self-contained ``out_dir/report.html`` atomically, in the format network sweeps share
(``thermosgd.report.page``). The work is done by pure functions: :func:`checks_table` turns the checks
into rows with a pass/fail status, :func:`isotropic_page` turns checks and figure paths into the
page.

Tolerances (``TOLERANCES``; a passing value in the outer fifth of its band is "borderline"):

- V1, U: interior median relative error < 5 % (the interior leaves out the grid's edges, where
  slow mixing at small eta, lambda and the discrete step at large eta bend the curves);
- S_sphere: median absolute error < 0.1 nat (a relative error is meaningless where S crosses 0;
  the k = 1 Kozachenko-Leonenko estimate from 1000 samples scatters by a few hundredths of a nat);
- V2: fraction of chosen points whose potential's argmin is within one grid step >= 0.9;
- V3: every slope within 5 % of its target, or within 0.05 in absolute value when the target is 0;
- V4: median entropy spread along an adiabat < 5 % of the entropy range over the grid.

Metrics without a rule (maxima, exact fractions, unknown keys) are listed as "info".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from thermosgd.report import page as _page
from thermosgd.report.page import Check, Page, Section

__all__ = ["TOLERANCES", "CheckRow", "Rule", "checks_table", "isotropic_page", "render_markdown",
           "write_report"]

PROTOCOL_ORDER = ("fixed-lr", "fixed-elr", "fixed-sphere")
_PROTOCOL_NAMES = {
    "fixed-lr": "fixed LR (η, λ)",
    "fixed-elr": "fixed ELR (η_eff, λ)",
    "fixed-sphere": "fixed sphere (η_eff, r)",
}
_CHECK_NAMES = {
    "skipped": "skipped",
    "run": "run",
    "V1": "V1 ideal gas law",
    "U": "mean loss U vs exact VMF",
    "entropy_sphere": "sphere entropy vs exact VMF",
    "V2": "V2 potential minimized",
    "V3": "V3 Maxwell relations",
    "V4": "V4 adiabats",
}
_QUANTITIES = {"radius": "stationary radius r*", "lambda_eff": "effective weight decay λ_eff"}
_POTENTIALS = {"G": "Gibbs energy G = U − TS + pV", "F": "Helmholtz energy F = U − TS"}


@dataclass(frozen=True)
class Rule:
    """Pass when ``value < threshold`` (``below``) or ``value >= threshold`` (not ``below``).

    Borderline: a pass within ``borderline_band`` of the threshold, as a fraction of the threshold
    for upper bounds, and of the distance from the threshold to 1 for lower bounds (fractions).
    """

    threshold: float
    below: bool
    percent: bool = False  # show value and threshold as percentages
    borderline_band: float = 0.2  # a pass this close to the threshold (fraction of it) is borderline
    unit: str = ""

    def passes(self, value: float) -> bool:
        return value < self.threshold if self.below else value >= self.threshold

    def borderline(self, value: float) -> bool:
        if self.below:
            return self.passes(value) and value >= (1 - self.borderline_band) * self.threshold
        return self.passes(value) and value < self.threshold + self.borderline_band * (1 - self.threshold)

    def describe(self) -> str:
        shown = f"{100 * self.threshold:g} %" if self.percent else f"{self.threshold:g}"
        return f"{'<' if self.below else '≥'} {shown}{' ' + self.unit if self.unit else ''}"


# (check, metric) -> rule. V3 slopes and V4 are judged in _slope_row and _adiabat_row.
TOLERANCES = {
    ("V1", "interior_median_rel_error"): Rule(0.05, below=True, percent=True),
    ("U", "interior_median_rel_error"): Rule(0.05, below=True, percent=True),
    ("entropy_sphere", "median_abs_error"): Rule(0.1, below=True, unit="nat"),
    ("V2", "within_one_step_fraction"): Rule(0.9, below=False),
}
SLOPE_REL_TOLERANCE = 0.05  # V3: |value - target| / |target|
SLOPE_ABS_TOLERANCE = 0.05  # V3 with target 0: |value|
ADIABAT_SPREAD_TOLERANCE = 0.05  # V4: median spread / entropy range


@dataclass(frozen=True)
class CheckRow:
    """One line of the checks table."""

    protocol: str
    check: str  # key in checks.json: "V1", "U", "entropy_sphere", "V2", "V3", "V4", or unknown
    metric: str  # the metric's key, or the slope's name for V3
    value: float | None
    shown: str  # the value as printed, with target and error where they exist
    criterion: str  # the tolerance, "" when the metric is only reported
    status: str  # "pass", "fail", "info", or "n/a" (a judged metric that is missing or not finite)
    borderline: bool = False


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


def _judged(protocol, check, metric, value, rule: Rule, shown=None) -> CheckRow:
    number = _number(value)
    shown = shown if shown is not None else _fmt(value, rule.percent)
    if number is None or not math.isfinite(number):
        return CheckRow(protocol, check, metric, number, shown, rule.describe(), "n/a")
    status = "pass" if rule.passes(number) else "fail"
    return CheckRow(protocol, check, metric, number, shown, rule.describe(), status,
                    rule.borderline(number))


def _info(protocol, check, metric, value) -> CheckRow:
    percent = "rel_error" in metric
    return CheckRow(protocol, check, metric, _number(value), _fmt(value, percent), "", "info")


def _slope_row(protocol, name, entry) -> CheckRow:
    """V3: a slope {value, target, rel_error | abs_error} judged against its target."""
    if not isinstance(entry, dict):
        return _info(protocol, "V3", name, entry)
    value, target = _number(entry.get("value")), _number(entry.get("target"))
    rel, absolute = _number(entry.get("rel_error")), _number(entry.get("abs_error"))
    if target == 0 or (rel is None and absolute is not None):
        if absolute is None and value is not None and target is not None:
            absolute = abs(value - target)
        rule, error, label = Rule(SLOPE_ABS_TOLERANCE, below=True), absolute, "abs error"
    else:
        if rel is None and value is not None and target:
            rel = abs(value - target) / abs(target)
        rule, error, label = Rule(SLOPE_REL_TOLERANCE, below=True, percent=True), rel, "rel error"
    shown = f"{_fmt(value)} (target {_fmt(target)}, {label} {_fmt(error, rule.percent)})"
    row = _judged(protocol, "V3", name, error, rule, shown)
    return CheckRow(row.protocol, row.check, row.metric, value, row.shown,
                    f"{label} {rule.describe()}", row.status, row.borderline)


def _adiabat_rows(protocol, entry: dict) -> list[CheckRow]:
    """V4: the entropy spread along adiabats, judged relative to the entropy range of the grid."""
    rows = []
    spread, span = _number(entry.get("median_spread")), _number(entry.get("entropy_range"))
    if "median_spread" in entry:
        rule = Rule(ADIABAT_SPREAD_TOLERANCE, below=True, percent=True)
        ratio = spread / span if spread is not None and span else None
        shown = f"{_fmt(spread)} nat = {_fmt(ratio, True)} of the entropy range {_fmt(span)} nat"
        row = _judged(protocol, "V4", "median_spread", ratio, rule, shown)
        rows.append(CheckRow(row.protocol, row.check, row.metric, spread, row.shown,
                             f"spread / range {rule.describe()}", row.status, row.borderline))
    for metric, value in entry.items():
        if metric != "median_spread":
            rows.extend(_generic_rows(protocol, "V4", metric, value))
    return rows


def _generic_rows(protocol, check, metric, value) -> list[CheckRow]:
    """Rows for a metric: judged when a rule exists, nested dicts flattened, strings skipped."""
    if isinstance(value, dict):
        rows = []
        for key, inner in value.items():
            rows.extend(_generic_rows(protocol, check, f"{metric}.{key}", inner))
        return rows
    if isinstance(value, str):
        return []  # labels such as V1's quantity go into the check's name
    rule = TOLERANCES.get((check, metric))
    return [_judged(protocol, check, metric, value, rule) if rule else _info(protocol, check, metric, value)]


def _ordered(names):
    known = [p for p in PROTOCOL_ORDER if p in names]
    return known + sorted(p for p in names if p not in PROTOCOL_ORDER)


def checks_table(checks: dict) -> list[CheckRow]:
    """Every metric of ``checks["protocols"]`` as a row, judged against ``TOLERANCES``.

    A judged metric that is absent gives an "n/a" row, so that a missing check shows up as a miss
    rather than silently vanishing; unknown checks and metrics become "info" rows.
    """
    rows: list[CheckRow] = []
    protocols = checks.get("protocols") or {}
    for protocol in _ordered(protocols):
        results = protocols[protocol] or {}
        if not isinstance(results, dict) or "skipped" in results:
            reason = results.get("skipped") if isinstance(results, dict) else results
            rows.append(CheckRow(protocol, "skipped", "—", None, str(reason), "", "n/a"))
            continue
        for (check, metric), rule in TOLERANCES.items():
            entry = results.get(check)
            if not isinstance(entry, dict) or metric not in entry:
                rows.append(CheckRow(protocol, check, metric, None, "missing", rule.describe(), "n/a"))
        for check in ("V3", "V4"):
            if not results.get(check):
                rows.append(CheckRow(protocol, check, "—", None, "missing", "", "n/a"))
        for check, entry in results.items():
            if check == "V3" and isinstance(entry, dict):
                for name, slope in entry.items():
                    if isinstance(slope, dict) and ("value" in slope or "target" in slope):
                        rows.append(_slope_row(protocol, name, slope))
                    else:  # fit diagnostics (R^2, standard errors, Table 4 ratios)
                        rows.extend(_generic_rows(protocol, "V3", name, slope))
            elif check == "V4" and isinstance(entry, dict):
                rows.extend(_adiabat_rows(protocol, entry))
            elif isinstance(entry, dict):
                for metric, value in entry.items():
                    rows.extend(_generic_rows(protocol, check, metric, value))
            else:  # scalars such as n_points, n_diverged
                rows.extend(_generic_rows(protocol, "run", check, entry))
    order = {check: k for k, check in enumerate(_CHECK_NAMES)}
    return sorted(rows, key=lambda r: (_ordered(protocols).index(r.protocol),
                                       order.get(r.check, len(order))))


def _results(protocols: dict, protocol: str) -> dict:
    results = protocols.get(protocol)
    return results if isinstance(results, dict) else {}


def _check_label(check: str, entry) -> str:
    label = _CHECK_NAMES.get(check, check)
    if isinstance(entry, dict):
        if entry.get("quantity") in _QUANTITIES:
            label += f": {_QUANTITIES[entry['quantity']]}"
        if entry.get("potential") in _POTENTIALS:
            label += f": {_POTENTIALS[entry['potential']]}"
    return label


_CONFIG_KEYS = {
    "d": ("d", "dim", "dimension"),
    "σ": ("sigma", "noise"),
    "iterations": ("iterations", "n_iterations", "n_steps", "steps"),
    "seeds": ("seeds", "n_seeds"),
}


def _summary(config: dict) -> str:
    """d, sigma, iterations, seeds and the grid (every list-valued entry with > 1 value)."""
    facts = []
    for label, keys in _CONFIG_KEYS.items():
        key = next((k for k in keys if k in config), None)
        if key is not None:
            facts.append(f"{label} = {_compact(config[key])}")
    axes = [f"{len(v)} {k}" for k, v in config.items()
            if isinstance(v, (list, tuple)) and len(v) > 1 and k not in _CONFIG_KEYS["seeds"]]
    if axes:
        facts.append("grid " + " × ".join(axes))
    return "; ".join(facts)


def _flat(mapping: dict, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


_DESCRIPTION = (
    "Noisy gradient descent on L(w) = 1 + μᵀw/‖w‖ (‖μ‖ = 1) with isotropic gradient noise "
    "(paper section 5, eq. 24), under three protocols: fixed learning rate η and weight decay "
    "λ, fixed effective learning rate η_eff and λ, and a fixed sphere of radius r with η_eff. "
    "Stationary loss U, radius, entropy S and (on the sphere) the effective weight decay "
    "λ_eff are measured on a log-spaced grid and compared with the closed forms: the von "
    "Mises-Fisher distribution (eq. 103), the ideal gas law pV = RT with R = (d − 1)/2 (V1), "
    "minimization of the Gibbs or Helmholtz energy (V2), the Maxwell relations (V3) and "
    "constant entropy along adiabats (V4).")


def _intro(checks: dict) -> list[str]:
    """The description, what all protocols share, and the provenance."""
    config = checks.get("config") or {}
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    paragraphs = [_DESCRIPTION]
    if _summary(flat):
        paragraphs.append(f"Simulated, all protocols: {_summary(flat)}.")
    version, revision = checks.get("package_version"), checks.get("git_revision")
    known = {"config", "protocols", "package_version", "git_revision"}
    extra = [f"{k} = {_compact(v)}" for k, v in _flat({k: v for k, v in checks.items()
                                                       if k not in known})]
    paragraphs.append(f"thermosgd {version or 'unknown version'}, git revision "
                      f"{revision or 'unknown'}." + (" Also recorded: " + "; ".join(extra) + "."
                                                     if extra else ""))
    return paragraphs


def _compact(value) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{len(value)} values from {_fmt(value[0])} to {_fmt(value[-1])}"
    if isinstance(value, float):
        return _fmt(value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list, tuple)) else str(value)


def _as_check(row: CheckRow, results: dict) -> Check:
    label = _check_label(row.check, results.get(row.check))
    if row.check == "skipped":
        label = "not checked"
    name = label if row.metric == "—" else f"{label}: {row.metric}"
    return Check(name, row.value, row.criterion or "reported", row.status, shown=row.shown,
                 borderline=row.borderline)


def tolerance_lines() -> list[str]:
    return [f"{_CHECK_NAMES[c]}, {m}: {rule.describe()}" for (c, m), rule in TOLERANCES.items()] + [
        (f"{_CHECK_NAMES['V3']}: each slope within {100 * SLOPE_REL_TOLERANCE:g} % of its "
         f"target, or within {SLOPE_ABS_TOLERANCE:g} when the target is 0"),
        (f"{_CHECK_NAMES['V4']}: median entropy spread along an adiabat < "
         f"{100 * ADIABAT_SPREAD_TOLERANCE:g} % of the entropy range over the grid"),
        "borderline: a pass within the outer fifth of its tolerance band",
    ]


def isotropic_page(checks: dict, figures: dict[str, str] | None = None) -> Page:
    """The report of an isotropic run in the shared format (``thermosgd.report.page``): one section
    per protocol. ``figures`` maps protocol -> figure path relative to the report."""
    figures = figures or {}
    rows = checks_table(checks)
    protocols = checks.get("protocols") or {}
    config = checks.get("config") or {}
    sections = []
    for protocol in _ordered(set(protocols) | set(figures)):
        results = _results(protocols, protocol)
        own = config.get(protocol)
        lines = [f"simulated: {_summary(own)}"] if isinstance(own, dict) and _summary(own) else []
        sections.append(Section(
            title=_PROTOCOL_NAMES.get(protocol, protocol), lines=lines,
            checks=[_as_check(r, results) for r in rows if r.protocol == protocol],
            figures={"panels a–e": Path(figures[protocol])} if protocol in figures else {},
            no_figure="No figure for this protocol."))
    return Page(title="Isotropic noise model: thermodynamics checks", intro=_intro(checks),
                setup=[(k, _compact(v)) for k, v in _flat(config)], sections=sections,
                tolerances=tolerance_lines(),
                empty="No protocol results were found in checks.json.")


def render_markdown(checks: dict, figures: dict[str, str] | None = None) -> str:
    """The report as Markdown. ``figures`` maps protocol -> figure path relative to the report."""
    return _page.render_markdown(isotropic_page(checks, figures))


def write_report(out_dir) -> Path:
    """Read ``out_dir/checks.json`` and the figures there; write ``out_dir/report.md`` and the
    self-contained ``out_dir/report.html`` (the shared format of ``thermosgd.report.page``)."""
    out_dir = Path(out_dir)
    source = out_dir / "checks.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: run the analysis first, it writes checks.json")
    checks = json.loads(source.read_text(encoding="utf-8"))
    names = set(checks.get("protocols") or {}) | set(PROTOCOL_ORDER)
    figures = {p: f"{p}/figure.png" for p in names if (out_dir / p / "figure.png").is_file()}
    _, summary = _page.write_page(out_dir, isotropic_page(checks, figures))
    return summary

"""A report as a paper-ready LaTeX table: booktabs rules, tops over their sub-columns, the papers'
notation as math, text left and numbers right, and a caption line naming backend and settings.

Needs \\usepackage{booktabs,array,amssymb} (rules, the wrapping label column, \\mathbb), and graphicx for
a table of more than 14 columns (scaled to the text width). The default columns
(`pibench.results.tables.LATEX_GROUPS`: measured and published GB, minutes and savings) fit one column of a
two-column paper at \\footnotesize.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pibench.results.report import Report, spread_note, title

SPECIALS = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


LABEL_COLUMN = r">{\raggedright\arraybackslash}p{2.4cm}"  # needs \usepackage{array}
SHORT_TOPS = {"Savings Comm.": "Sav. comm. (×)", "Savings Lat.": "Sav. lat. (×)"}


def escape(text: str) -> str:
    return "".join(SPECIALS.get(c, c) for c in text).replace("×", r"$\times$").replace("±", r"$\pm$").replace("—", "--")


def notation(text: str) -> str:
    """SM:144×ℝ^{128×128} -> SM:$144\\times\\mathbb{R}^{128\\times 128}$."""
    if text == "-":
        return text
    terms = []
    for term in text.split():
        kind, _, rest = term.partition(":")
        count, _, shape = rest.partition("×ℝ^")
        dims = shape.strip("{}").replace("×", r"\times ")
        terms.append(f"{kind}:${count}\\times\\mathbb{{R}}^{{{dims}}}$")
    return " ".join(terms)


def caption(rep: Report, shown: set[str], lat_unit: str) -> str:
    """A few sentences: the table's title; what measured it (backend and settings, machine, network);
    units; the baseline; the spread of timings; where published figures come from, by paper and table."""
    repeats = f"median of {rep.repeats} passes per measured step" if rep.repeats > 1 else "one pass per measured step"
    how = (
        f"Predicted by pibench's calibrated cost model, not measured: {rep.measured_under}; Comm.: sent by both "
        f"parties; Lat.: {lat_unit}."
        if rep.predicted
        else f"Measured by pibench under {rep.measured_under}; Comm.: sent by both parties; Lat.: {lat_unit}, "
        f"{repeats}."
    )
    parts = [
        f"{title(rep, with_record=False)}.",
        how,
        f"Savings against {rep.baseline}." if rep.baseline else "",
        spread_note(rep, "spread" in shown) + "." if rep.repeats > 1 and "spread" not in shown else "",
    ]
    if rep.published_from and shown & {"published", "published_abs", "cost"}:
        parts.append(
            f"pub.: published, SecretFlow SPU (BumbleBee) over a 100 Mbit/s, 80 ms WAN ({rep.published_from})."
        )
    return " ".join(p for p in parts if p)


# Columns of one column of a two-column paper at \footnotesize (the default groups: 7); beyond that the
# table spans both columns (table*), and beyond twice that it is also scaled to the text width.
ONE_COLUMN, TWO_COLUMNS = 7, 14


def render_latex(rep: Report, cols: Sequence[Any], runs: Sequence[tuple[int, int]]) -> str:
    """`cols`: `pibench.results.tables.Column`s to show; `runs`: (first, last) of the columns under each top."""
    # the label column wraps (a long name takes two lines rather than the column's width)
    spec = "".join(LABEL_COLUMN if c.key == "label" else "l" if c.key == "nonlinear" else "r" for c in cols)
    top, rules, sub = [], [], []
    for i, j in runs:
        name, _, unit = cols[i].top.partition(" (")
        if i == j and cols[i].sub and unit:  # a lone measured column: its unit below, for width
            top.append(escape(name))
            sub.append(escape(f"({unit}"))
        elif cols[i].sub:
            head = SHORT_TOPS.get(cols[i].top, cols[i].top)
            top.append(rf"\multicolumn{{{j - i + 1}}}{{c}}{{{escape(head)}}}")
            rules.append(rf"\cmidrule(lr){{{i + 1}-{j + 1}}}")
            sub += [escape(c.sub) for c in cols[i : j + 1]]
        else:
            top.append("")
            sub.append(escape(cols[i].top))
    data = len(cols) - 1
    env = "table*" if data > ONE_COLUMN else "table"
    scaled = data > TWO_COLUMNS
    out = [
        f"% {title(rep)}",
        f"% {data} data columns: {_span(env, scaled)}",
        rf"\begin{{{env}}}[t]",
        r"\centering\footnotesize\setlength{\tabcolsep}{2pt}",
        *([r"\resizebox{\textwidth}{!}{%"] if scaled else []),
        rf"\begin{{tabular}}{{@{{}}{spec}@{{}}}}",
        r"\toprule",
        " & ".join(top) + r" \\",
        "".join(rules),
        " & ".join(sub) + r" \\",
        r"\midrule",
    ]
    for r in rep.rows:
        cells = [c.show(c.get(r)).removesuffix("×") for c in cols]  # savings: "(×)" is in the header
        out.append(
            " & ".join(notation(x) if c.key == "nonlinear" else escape(x) for c, x in zip(cols, cells, strict=True))
            + r" \\"
        )
    out += [r"\bottomrule", r"\end{tabular}" + ("}" if scaled else "")]
    lat_unit = next((c.top.partition(" (")[2].rstrip(")") for c in cols if c.top.startswith("Lat.")), "min.")
    out.append(rf"\caption{{{escape(caption(rep, {c.group for c in cols}, lat_unit))}}}")
    out.append(rf"\label{{tab:{label(rep)}}}")
    out.append(rf"\end{{{env}}}")
    return "\n".join(out)


def booktabs(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[bool], caption: str, key: str
) -> str:
    """A plain booktabs table (one header line) of cells already formatted: `text` says which columns are
    text (left, escaped) and which numbers (right; a trailing "×" becomes math); a caption and a label."""
    spec = "".join("l" if t else "r" for t in text)
    out = [
        r"\begin{table}[t]",
        r"\centering\footnotesize\setlength{\tabcolsep}{3pt}",
        *([r"\resizebox{\linewidth}{!}{%"] if len(headers) > ONE_COLUMN + 2 else []),
        rf"\begin{{tabular}}{{@{{}}{spec}@{{}}}}",
        r"\toprule",
        " & ".join(escape(h) for h in headers) + r" \\",
        r"\midrule",
        *(" & ".join(escape(c) for c in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}" + ("}" if len(headers) > ONE_COLUMN + 2 else ""),
        rf"\caption{{{escape(caption)}}}",
        rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', key).strip('-').lower()}}}",
        r"\end{table}",
    ]
    return "\n".join(out)


def _span(env: str, scaled: bool) -> str:
    if scaled:
        return "both columns of the page, scaled to its width (needs graphicx)"
    return "both columns of the page" if env == "table*" else "one column of a two-column page"


def label(rep: Report) -> str:
    """The table's \\label key: the suite and the backend, in letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{rep.suite}-{rep.label}").strip("-").lower()

"""``conflicts --format dot|mermaid``: the conflict graph as text other tools draw.

Agents are nodes; an edge joins two agents whose work conflicts (solid, red)
or only overlaps (dashed), labelled with the files. Paths can hold any
character, so every label is quoted for its language.
"""

from __future__ import annotations

from paradev.conflicts import PairReport, Report

FILES_SHOWN = 5  # files named on an edge; more are counted


def _edges(report: Report) -> list[tuple[PairReport, str, str]]:
    """(pair, kind, label) of every pair that conflicts or overlaps."""
    edges = []
    for pair in sorted(report.examined, key=lambda pair: pair.agents):
        if pair.conflict:
            files = [c.path for c in pair.conflicts]
            kind = "conflict"
        elif pair.overlap:
            files, kind = pair.overlap, "overlap"
        else:
            continue
        shown = ", ".join(files[:FILES_SHOWN])
        if len(files) > FILES_SHOWN:
            shown += f" +{len(files) - FILES_SHOWN} more"
        edges.append((pair, kind, f"{kind}: {shown}"))
    return edges


def _agents(report: Report) -> list[int]:
    return sorted({b.agent for b in report.branches})


def to_dot(report: Report) -> str:
    """Graphviz: ``dot -Tsvg``."""
    base_conflicts = {b.agent for b in report.against_base if b.conflict}
    lines = ["graph conflicts {", "  node [shape=box, style=rounded];"]
    for agent in _agents(report):
        extra = ', color="red", xlabel="conflicts with base"' if agent in base_conflicts else ""
        lines.append(f'  a{agent} [label="agent {agent}"{extra}];')
    for pair, kind, label in _edges(report):
        style = 'color="red", penwidth=2' if kind == "conflict" else 'style="dashed"'
        left, right = pair.agents
        lines.append(f'  a{left} -- a{right} [label="{_dot_quote(label)}", {style}];')
    lines.append("}")
    return "\n".join(lines)


def _dot_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_mermaid(report: Report) -> str:
    """Mermaid ``graph LR`` (GitHub renders it in Markdown)."""
    base_conflicts = {b.agent for b in report.against_base if b.conflict}
    lines = ["graph LR"]
    for agent in _agents(report):
        extra = " (conflicts with base)" if agent in base_conflicts else ""
        lines.append(f'  a{agent}["agent {agent}{extra}"]')
    for pair, kind, label in _edges(report):
        link = "---" if kind == "conflict" else "-.-"
        left, right = pair.agents
        lines.append(f'  a{left} {link}|"{_mermaid_quote(label)}"| a{right}')
    conflicted = [p.agents for p, kind, _ in _edges(report) if kind == "conflict"]
    if conflicted or base_conflicts:
        lines.append("  classDef conflict stroke:#d7301f,stroke-width:3px")
        agents = sorted({a for pair in conflicted for a in pair} | base_conflicts)
        lines.append("  class " + ",".join(f"a{a}" for a in agents) + " conflict")
    return "\n".join(lines)


def _mermaid_quote(text: str) -> str:
    """Mermaid has no backslash escapes: entity codes for its own syntax characters."""
    codes = {"&": "#amp;", '"': "#quot;", "|": "#124;", "<": "#lt;", ">": "#gt;", "\n": " "}
    return "".join(codes.get(ch, ch) for ch in text)

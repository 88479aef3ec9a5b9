"""A section of docs/performance.md that one benchmark writes whole: from its `## ` heading to
the next, so that what it says is always one run's."""

from __future__ import annotations

from paths import ROOT

PAGE = ROOT / "docs" / "performance.md"


def write_section(heading: str, lines: list[str]) -> None:
    """Replace the section starting at `heading` with `lines` (which start with it), or add
    it at the end."""
    text = PAGE.read_text()
    body = "\n".join(lines) + "\n"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + body + (text[end:] if end != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + body
    PAGE.write_text(text)

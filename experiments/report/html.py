"""``write_report``: Markdown sections to ``<stem>.md`` and a self-contained ``<stem>.html``.

The HTML embeds every image (the file can be mailed or archived alone), keeps table cells on
one line, puts the "[low, high]" of an interval cell (or a number in parentheses after the
cell's value) on a second line in small type, and frames
the first section (the summary) so the answers stand out.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

import markdown

from recsys.artifacts import atomic_write_text

Section = tuple[str, str]  # (heading, Markdown body)

# a table cell ending in "[low, high]" (experiments.report.markdown.interval) or in a number in
# parentheses ("2.60 (16%)"): that end goes on a second line
_CI_CELL = re.compile(r"<td([^>]*)>((?:(?!</td>).)*?) (\[[-+0-9.,]+, [-+0-9.,]+\]|\([-+0-9.,%/ ]+\))</td>")
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;
  padding:0 1.2em;line-height:1.45;color:#222}
h1{font-size:1.55em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h2:first-of-type{margin-top:1em}
h2:first-of-type + ul{background:#f3f7fb;border-left:4px solid #4a86c5;padding:.7em 1em .7em 2.2em}
h2:first-of-type + ul li{margin:.25em 0}
.scroll{overflow-x:auto;margin:.6em 0 1em}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;text-align:right;vertical-align:top;border-bottom:1px solid #e4e4e4}
td{white-space:nowrap}
th{white-space:nowrap;background:#f4f4f4;border-bottom:2px solid #c8c8c8;font-weight:600;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fbfbfb}
.ci{display:block;font-size:78%;color:#777;line-height:1.2}
img{max-width:100%}
code{font-size:90%}
"""


def markdown_page(sections: Sequence[Section], title: str) -> str:
    """The report as one Markdown document: ``# title``, then one ``##`` per section."""
    return f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n{body}" for h, body in sections) + "\n"


def html_page(md: str, title: str, images: Path | None = None) -> str:
    """``md`` as a standalone HTML page; ``src="x.png"`` inlined from the directory ``images``."""
    body = markdown.markdown(md, extensions=["tables"])
    body = _CI_CELL.sub(r'<td\1>\2<span class="ci">\3</span></td>', body)
    body = body.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")
    for png in sorted(images.glob("*.png")) if images is not None else ():
        data = base64.b64encode(png.read_bytes()).decode()
        body = body.replace(f'src="{png.name}"', f'src="data:image/png;base64,{data}"')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def write_report(out_dir: Path, sections: Sequence[Section], title: str, stem: str = "report") -> None:
    """``<stem>.md`` from (heading, Markdown body) sections and ``<stem>.html``, the same content
    with the images of ``out_dir`` embedded."""
    md = markdown_page(sections, title)
    atomic_write_text(out_dir / f"{stem}.md", md)
    atomic_write_text(out_dir / f"{stem}.html", html_page(md, title, out_dir))

"""Responses rendered as Markdown that can only be read: headings, lists, tables and code blocks show as such,
while nothing a response holds can run script, load a resource or be followed as a link.

Two layers. markdown-it renders CommonMark (plus tables and strikethrough, as models write them) with raw
HTML off, so HTML in a response shows as text; links become their text followed by the address as text,
images their alt text and address, and autolinks stay as typed. Then nh3 (ammonia) keeps only the tags this
renderer emits and no attribute but our own classes and a list's start number, so a renderer bug cannot
open a hole either. A single line break in a response is kept (``breaks``): models write lines, not
paragraphs. The raw text stays one click away (``raw_toggle``).
"""

from __future__ import annotations

import html

import gradio as gr
import nh3
from markdown_it import MarkdownIt

# classes the page's CSS switches on: a panel with a raw toggle, its raw textboxes and its renderings
READING_CLASS, RAW_CLASS, RENDERED_CLASS = "wb-reading", "wb-raw", "wb-md"
SHOW_RAW_CLASS = "wb-show-raw"
# hides one of the two views of each text; a long rendering scrolls, as the raw textbox does
CSS = f"""
.{READING_CLASS}:not(.{SHOW_RAW_CLASS}) :is(.{RAW_CLASS}, .form:has(> .{RAW_CLASS})),
.{READING_CLASS}.{SHOW_RAW_CLASS} .{RENDERED_CLASS} {{ display: none !important; }}
.{RAW_CLASS} textarea {{ field-sizing: content; height: auto !important; max-height: 24em; overflow-y: auto; }}
.wb-markdown {{ max-height: 24em; overflow-y: auto; overflow-wrap: anywhere; margin-top: 1.6em; }}
.wb-markdown pre {{ overflow-x: auto; }}
.wb-url, .wb-image {{ color: var(--body-text-color-subdued); }}
"""
TAGS = {
    "div", "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "em",
    "strong", "s", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "span",
}  # fmt: skip
_CLEANER = nh3.Cleaner(
    tags=TAGS,
    attributes={"ol": {"start"}},
    tag_attribute_values={"div": {"class": {"wb-markdown"}}, "span": {"class": {"wb-link", "wb-url", "wb-image"}}},
    url_schemes=set(),
    link_rel=None,
    strip_comments=True,
)


def _address(url: str | None) -> str:
    """A link's or image's address as text, percent-escapes decoded as markdown-it shows link text."""
    return f'<span class="wb-url">({html.escape(_PARSER.normalizeLinkText(url or ""))})</span>'


def _link_open(self, tokens, idx, options, env) -> str:
    env.setdefault("links", []).append(tokens[idx].attrGet("href"))
    return '<span class="wb-link">'


def _link_close(self, tokens, idx, options, env) -> str:
    return "</span> " + _address(env["links"].pop())


def _image(self, tokens, idx, options, env) -> str:
    alt = html.escape(self.renderInlineAsText(tokens[idx].children or [], options, env))
    return f'<span class="wb-image">image: {alt}</span> ' + _address(tokens[idx].attrGet("src"))


def _code(self, tokens, idx, options, env) -> str:
    """Fenced and indented code alike: no language class, no highlighting."""
    return f"<pre><code>{html.escape(tokens[idx].content)}</code></pre>\n"


_PARSER = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True})
    .enable(["table", "strikethrough"])
    .disable("autolink")
)
for _rule, _render in (
    ("link_open", _link_open),
    ("link_close", _link_close),
    ("image", _image),
    ("fence", _code),
    ("code_block", _code),
):
    _PARSER.add_render_rule(_rule, _render)


def safe_markdown(text: str | None) -> str:
    """``text`` as inert HTML in a ``wb-markdown`` box (which the page lets scroll); empty text gives ""."""
    if not text:
        return ""
    return _CLEANER.clean(f'<div class="wb-markdown">{_PARSER.render(text, {})}</div>')


def rendered_view(label: str, elem_id: str) -> gr.HTML:
    """Where ``safe_markdown`` output is shown, next to the raw textbox (``RAW_CLASS``) of the same text."""
    return gr.HTML(label=label, show_label=True, container=True, elem_id=elem_id, elem_classes=[RENDERED_CLASS])


def raw_toggle(panel_id: str, elem_id: str) -> gr.Checkbox:
    """A checkbox that shows the raw text instead of the rendering in the panel ``panel_id`` (which carries
    ``READING_CLASS``). It only sets a class in the browser: no request, and the choice stays while the
    server replaces the texts underneath."""
    toggle = gr.Checkbox(label="Show raw text", value=False, elem_id=elem_id, container=False)
    toggle.change(
        None,
        inputs=toggle,
        js=f"(raw) => {{ document.getElementById({panel_id!r})?.classList.toggle({SHOW_RAW_CLASS!r}, raw); }}",
    )
    return toggle

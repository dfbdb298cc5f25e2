"""Responses rendered as Markdown: headings, lists, tables and code show as such, and nothing a response holds
can run script, load a resource or be followed as a link (``workbench.app.markdown.safe_markdown``).

The page-level proof (real Chromium, ``window.__xss`` never set) is in ``test_app_reading.py``; here every
output is parsed and its tags and attributes checked against the allow-list, for hostile samples and for
arbitrary text built from Markdown's own punctuation.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.app.markdown import safe_markdown

# the tags a rendered response may hold, and the only attributes any of them may carry
ALLOWED_TAGS = {
    "div", "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "em",
    "strong", "s", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "span",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {("div", "class"), ("span", "class"), ("ol", "start")}
OWN_TAG = re.compile(r'/?[a-z][a-z0-9]*( class="wb-[a-z]+"| start="[0-9]+")?\s*/?>')

HOSTILE = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "<IMG SRC=x OnError=alert(1)>",
    "[click](javascript:window.__xss=1)",
    "[click](JaVaScRiPt:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](javascript&#58;alert(1))",
    "[x]: javascript:alert(1)\n\n[x]",
    '[ok](http://example.com/ "title")',
    '<a href="http://example.com/">link</a>',
    "![img](http://127.0.0.1:9/x.png)",
    '![img](http://127.0.0.1:9/x.png "t" onerror=alert(1))',
    "<http://example.com/>",
    "<javascript:alert(1)>",
    "http://example.com/ bare",
    "```html\n<script>alert(1)</script>\n",
    "```\nunclosed fence <img src=x onerror=alert(1)>",
    "````\n```\nnested\n```\n````\n<script>alert(1)</script>",
    "~~~ onerror=alert(1)\ncode\n~~~",
    '```" onmouseover="alert(1)\ncode\n```',
    "&lt;script&gt;alert(1)&lt;/script&gt; &#60;img src=x onerror=alert(1)&#62; &amp;lt;b&amp;gt;",
    "<!-- comment --><style>body{display:none}</style><iframe src=x></iframe>",
    "<svg onload=alert(1)><math><mi xlink:href=x>",
    "| a | <b onclick=x> |\n|---|---|\n| [l](javascript:x) | ![i](x.png) |",
    "> <details open ontoggle=alert(1)>\n> - <form action=x><input></form>",
    '<p style="background:url(http://x/)">styled</p>',
    "`<script>alert(1)</script>`",
    "\x00<scr\x00ipt>alert(1)</script>",
]


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text, of one HTML string."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.text.append(data)


def _parse(rendered: str) -> _Tags:
    parser = _Tags()
    parser.feed(rendered)
    parser.close()
    return parser


def _assert_inert(rendered: str) -> None:
    """Only allow-listed tags, no attribute but a class or a list's start number, no script anywhere."""
    assert "<script" not in rendered.lower()
    parsed = _parse(rendered)
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, (tag, rendered)
        for name, value in attrs:
            assert (tag, name) in ALLOWED_ATTRIBUTES, (tag, name, rendered)
            if name == "class":
                assert value in {"wb-markdown", "wb-link", "wb-url", "wb-image"}, rendered
            else:
                assert (value or "").isdigit(), rendered
    # and read without a parser: every '<' left opens one of our own plain tags
    for raw_tag in rendered.split("<")[1:]:
        assert OWN_TAG.match(raw_tag), (raw_tag, rendered)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_samples_render_inert(text):
    _assert_inert(safe_markdown(text))


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(HOSTILE),
            st.sampled_from(
                [
                    "<",
                    ">",
                    "&",
                    "#",
                    "`",
                    "```",
                    "~~~",
                    "*",
                    "_",
                    "[",
                    "]",
                    "(",
                    ")",
                    "!",
                    "|",
                    "-",
                    ":",
                    "\n",
                    "\n\n",
                    "    ",
                    '"',
                    "'",
                    "=",
                    "javascript:",
                    "href=",
                    "src=",
                    "onerror=",
                    "<a ",
                    "<img ",
                    "&#",
                    ";",
                    "http://x/",
                    "1. ",
                    "> ",
                ]
            ),  # fmt: skip
            st.text(max_size=12),
        ),
        max_size=30,
    ).map("".join)
)
def test_any_text_renders_inert(text):
    _assert_inert(safe_markdown(text))


def test_markdown_structure_is_rendered():
    rendered = safe_markdown("## Steps\n\n1. mix\n2. bake\n\n- *soft*\n- **firm**\n\n```python\nprint(1 < 2)\n```\n")
    assert "<h2>Steps</h2>" in rendered
    assert "<li>mix</li>" in rendered and "<em>soft</em>" in rendered and "<strong>firm</strong>" in rendered
    assert "<pre><code>print(1 &lt; 2)\n</code></pre>" in rendered  # no highlighting, no language class
    indented = safe_markdown("text\n\n    code line\n")
    assert "<pre><code>code line\n</code></pre>" in indented


def test_a_list_keeps_its_start_number_and_tables_render():
    assert '<ol start="3">' in safe_markdown("3. three\n4. four")
    table = safe_markdown("| a | b |\n|:-|-:|\n| 1 | 2 |")
    assert "<th>a</th>" in table and "<td>2</td>" in table  # alignment styles dropped


def test_raw_html_shows_as_text():
    rendered = safe_markdown("<b>bold</b> and <script>window.__xss=1</script>")
    assert "&lt;b&gt;bold&lt;/b&gt;" in rendered
    assert "<b>" not in rendered
    assert "window.__xss=1" in "".join(_parse(rendered).text)


def test_links_and_images_show_their_text_and_address_but_are_inert():
    link = safe_markdown('see [the docs](https://example.com/a?b=1&c=2 "title")')
    assert '<span class="wb-link">the docs</span> <span class="wb-url">(https://example.com/a?b=1&amp;c=2)</span>' in (
        link
    )
    assert "title" not in link
    image = safe_markdown("![a *cat*](http://127.0.0.1:9/x.png)")
    text = "".join(_parse(image).text)
    assert "image: a cat" in text and "(http://127.0.0.1:9/x.png)" in text
    # markdown-it refuses javascript: links, so they stay as the text that was written
    script_link = safe_markdown("[click](javascript:window.__xss=1)")
    assert "[click](javascript:window.__xss=1)" in html.unescape(script_link)
    # autolinks are off: the address stays as typed
    assert "&lt;http://example.com/&gt;" in safe_markdown("<http://example.com/>")


def test_template_syntax_and_entities_show_as_written():
    rendered = safe_markdown("Hello {{ name }} and ${1+1} &amp; &lt;tag&gt;")
    assert "".join(_parse(rendered).text).strip() == "Hello {{ name }} and ${1+1} & <tag>"


def test_the_rendering_is_wrapped_for_scrolling_and_empty_text_stays_empty():
    assert safe_markdown("hi").startswith('<div class="wb-markdown">')
    assert safe_markdown("") == ""
    assert safe_markdown("line one\nline two").count("<br") == 1  # a model's single line break is kept

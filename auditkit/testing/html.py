"""A checker for scorecard HTML, for tests: a page or a plugin's section must be self-contained
(no script, no request outside the file), well formed, with unique ids and working anchors."""
from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["lint_html"]

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_FORBIDDEN = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "link", "base", "form"}
_URL_ATTRS = {"src", "href", "xlink:href", "srcset", "action", "formaction", "data", "poster", "background", "ping"}


class _Linter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: set[str] = set()
        self.anchors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
            return
        self.problems.append(f"line {self.getpos()[0]}: </{tag}> does not close <{self.stack[-1] if self.stack else '(nothing)'}>")
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style" and ("url(" in data or "@import" in data):
            self.problems.append(f"line {self.getpos()[0]}: <style> loads a resource (url( or @import)")

    def _check(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        where = f"line {self.getpos()[0]}: <{tag}>"
        if tag in _FORBIDDEN:
            self.problems.append(f"{where} is not allowed in a self-contained scorecard")
        for name, value in attrs:
            value = (value or "").strip()
            if name.startswith("on"):
                self.problems.append(f"{where} has an event handler attribute {name}")
            elif name == "id":
                if value in self.ids:
                    self.problems.append(f"{where} repeats id {value!r}")
                self.ids.add(value)
            elif name in _URL_ATTRS:
                if name == "href" and value.startswith("#"):
                    self.anchors.append(value[1:])
                elif not value.lower().startswith("data:image/"):
                    self.problems.append(f"{where} {name}={value[:60]!r} refers outside the file")
            elif name == "style" and "url(" in value:
                self.problems.append(f"{where} style loads a resource (url()")
            elif tag == "meta" and name == "http-equiv" and value.lower() == "refresh":
                self.problems.append(f"{where} refreshes or redirects the page")


def lint_html(text: str, *, fragment: bool = False) -> list[str]:
    """What keeps ``text`` from being a valid self-contained scorecard (or, with ``fragment``,
    a section's html): unbalanced tags, scripts, frames, stylesheets or anything else that
    loads a resource, references outside the file (only ``data:image/...`` and ``#anchors``
    are allowed), event-handler attributes, repeated ids and, for a page, links to anchors
    that do not exist. An empty list means none. Meant for tests of scorecard sections::

        assert lint_html(section["html"], fragment=True) == []
    """
    linter = _Linter()
    linter.feed(text)
    linter.close()
    problems = list(linter.problems)
    open_tags = [t for t in linter.stack if fragment or t not in ("html", "body", "head")]
    if open_tags:
        problems.append(f"unclosed tags at the end: {', '.join(f'<{t}>' for t in open_tags)}")
    if not fragment:
        problems += [f"link to #{a}, which no element has as id" for a in linter.anchors if a not in linter.ids]
    return problems

"""A small reader for protobuf's text format (TF Serving's config files), with line numbers in errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union


class TextFormatError(ValueError):
    """Malformed text format; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.detail = message


class Ident(str):
    """A bare identifier value: an enum name or true/false."""


Scalar = Union[str, int, float, Ident]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    value: Union[Scalar, "Message"]
    line: int


@dataclass(frozen=True, slots=True)
class Message:
    fields: tuple[Field, ...]
    line: int  # where the message opened (1 for the top level)


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[fF]?)
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:;,])
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _unescape(body: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        e = body[i]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 1
        elif e in "01234567":
            j = i
            while j < len(body) and j < i + 3 and body[j] in "01234567":
                j += 1
            out.append(chr(int(body[i:j], 8)))
            i = j
        elif e in "xX":
            j = i + 1
            while j < len(body) and j < i + 3 and body[j] in "0123456789abcdefABCDEF":
                j += 1
            if j == i + 1:
                raise TextFormatError(line, "\\x escape without hex digits")
            out.append(chr(int(body[i + 1:j], 16)))
            i = j
        else:
            raise TextFormatError(line, f"unknown escape \\{e} in string")
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise TextFormatError(line, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup
        value = m.group()
        if kind == "nl":
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append((kind, value, line))
        pos = m.end()
    tokens.append(("eof", "", line))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, punct: str) -> None:
        kind, value, line = self.take()
        if kind != "punct" or value != punct:
            raise TextFormatError(line, f"expected '{punct}', found {_describe(kind, value)}")

    def message(self, closer: str | None, line: int) -> Message:
        fields: list[Field] = []
        while True:
            kind, value, tline = self.peek()
            if closer is None and kind == "eof":
                return Message(tuple(fields), line)
            if closer is not None and kind == "punct" and value == closer:
                self.take()
                return Message(tuple(fields), line)
            if kind == "eof":
                raise TextFormatError(tline, f"missing '{closer}' for the message opened on line {line}")
            if kind != "ident" or value.startswith("-"):
                raise TextFormatError(tline, f"expected a field name, found {_describe(kind, value)}")
            self.take()
            fields.extend(self.field(value, tline))
            kind, value, _ = self.peek()
            if kind == "punct" and value in ";,":
                self.take()

    def field(self, name: str, line: int) -> list[Field]:
        kind, value, vline = self.peek()
        if kind == "punct" and value in "{<":
            self.take()
            return [Field(name, self.message("}" if value == "{" else ">", vline), line)]
        if not (kind == "punct" and value == ":"):
            raise TextFormatError(vline, f"expected ':' or '{{' after '{name}', found {_describe(kind, value)}")
        self.take()
        kind, value, vline = self.peek()
        if kind == "punct" and value in "{<":
            self.take()
            return [Field(name, self.message("}" if value == "{" else ">", vline), line)]
        if kind == "punct" and value == "[":
            self.take()
            items: list[Field] = []
            kind, value, _ = self.peek()
            if kind == "punct" and value == "]":
                self.take()
                return items
            while True:
                items.append(Field(name, self.scalar(), line))
                kind, value, vline = self.take()
                if kind == "punct" and value == "]":
                    return items
                if not (kind == "punct" and value == ","):
                    raise TextFormatError(vline, f"expected ',' or ']' in the list of '{name}', found {_describe(kind, value)}")
        return [Field(name, self.scalar(), line)]

    def scalar(self) -> Scalar:
        kind, value, line = self.take()
        if kind == "string":
            parts = [_unescape(value[1:-1], line)]
            # Adjacent string literals concatenate, as in C and protobuf.
            while self.peek()[0] == "string":
                _, more, mline = self.take()
                parts.append(_unescape(more[1:-1], mline))
            return "".join(parts)
        if kind == "number":
            return _number(value, line)
        if kind == "ident":
            if value.lstrip("-").lower() in ("inf", "infinity", "nan"):
                return float(value)
            return Ident(value)
        raise TextFormatError(line, f"expected a value, found {_describe(kind, value)}")


def _number(text: str, line: int) -> int | float:
    body = text[:-1] if text[-1] in "fF" and not text.lower().startswith(("0x", "-0x")) else text
    try:
        if body.lower().startswith(("0x", "-0x")):
            return int(body, 16)
        if re.fullmatch(r"-?\d+", body):
            return int(body)
        return float(body)
    except ValueError:
        raise TextFormatError(line, f"bad number {text!r}") from None


def _describe(kind: str, value: str) -> str:
    if kind == "eof":
        return "end of input"
    return f"{value!r}"


def parse(text: str) -> Message:
    """Parse a whole text-format document into a tree of fields (no schema)."""
    return _Parser(text).message(None, 1)

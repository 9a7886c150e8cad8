"""The one scanner of CEL text: tokens, literals, variable references, request reads, clock use."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import celpy
import lark

# Two ways to read CEL, chosen by what a wrong answer costs the caller:
# - the token scan (a regex) reads any text, even what no grammar accepts, and cannot tell a
#   comprehension variable from a request root spelled the same: it errs towards finding a
#   read (replay must never miss one);
# - the grammar parse (cel-python's lark grammar, with positions) knows what binds a name,
#   and yields nothing for text it refuses: it errs towards silence (lint must not cry wolf).
# `selections(..., miss_nothing=...)` is where a caller picks one.

# --- tokens -----------------------------------------------------------------------------------

_TOKENS = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<comment>//[^\n]*)
    # Raw strings first: they have no escapes, so a backslash must not swallow the quote.
    |(?P<raw>(?:[rR][bB]?|[bB][rR])(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'[^']*'|"[^"]*"))
    |(?P<string>[bB]?(?:'''(?:\\[\s\S]|[\s\S])*?'''|\"\"\"(?:\\[\s\S]|[\s\S])*?\"\"\"
        |'(?:\\[\s\S]|[^'\\])*'|"(?:\\[\s\S]|[^"\\])*"))
    # A literal never closed runs to the end: nothing after its quote is code.
    |(?P<unclosed>[rRbB]{0,2}(?:'''|\"\"\"|'|")[\s\S]*)
    |(?P<quoted>`[^`]*`)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<number>[0-9][0-9A-Za-z_.]*)
    |(?P<punct>[\s\S])
    """,
    re.VERBOSE,
)
_LITERALS = frozenset({"comment", "raw", "string", "unclosed"})


class Token(NamedTuple):
    kind: str  # comment, raw, string, unclosed, quoted, ident, number or punct
    text: str
    start: int


def tokens(text: str) -> list[Token]:
    """CEL tokens without blanks; each string literal and comment is a single token, so text
    inside them never reads as code."""
    out: list[Token] = []
    for m in _TOKENS.finditer(text):
        kind = m.lastgroup or "punct"
        if kind != "space":
            out.append(Token(kind, m.group(), m.start()))
    return out


def literal_spans(text: str) -> list[tuple[int, int]]:
    """Spans of string and bytes literals and of comments: text that is not code."""
    return [(t.start, t.start + len(t.text)) for t in tokens(text) if t.kind in _LITERALS]


# --- policy variables -------------------------------------------------------------------------

_VARIABLE = re.compile(r"(?<![\w.])V\.([A-Za-z_][A-Za-z0-9_]*)")


def variable_references(text: str) -> list[tuple[str, int]]:
    """Policy variable references `V.name` as (name, offset), outside literals and comments."""
    if "V." not in text:
        return []  # nothing the pattern could match: skip scanning for literals
    spans = literal_spans(text)
    return [
        (m[1], m.start())
        for m in _VARIABLE.finditer(text)
        if not any(a <= m.start() < b for a, b in spans)
    ]


# --- what an expression selects from the request ---------------------------------------------


@dataclass(frozen=True)
class Selection:
    """`root.a.b` as written: a root variable and the field names selected from it."""

    root: str
    names: tuple[str, ...]  # by `.name` or `.?name`, up to an index, a quoted name or a call
    offset: int  # of the root in the text
    before: str  # the token before the root ("" at the start)
    after: str  # the token after the last name ("" at the end)
    method: str  # the method called right after the last name, if any


def selections(text: str, roots: frozenset[str], *, miss_nothing: bool) -> list[Selection]:
    """Every selection from one of `roots` in `text`.

    `miss_nothing`: from the token scan, so a comprehension variable spelled like a root
    counts too, and so does text the grammar refuses. Otherwise only what the grammar parse
    shows to be a root: nothing for text it refuses, and no comprehension variable.
    """
    found = _token_selections(text, roots)
    if miss_nothing or not found:
        return found
    tree = parse(text)
    if tree is None:
        return []
    bound: set[int] = set()

    def visit(node: lark.Tree[Any], names: frozenset[str]) -> None:
        if node.data == "ident" and str(node.children[0]) in names:
            bound.add(node.meta.start_pos)  # a use of a comprehension variable
        kids = node.children
        if node.data == "member_dot_arg" and len(kids) == 3 and str(kids[1]) in MACROS:
            args = kids[2].children if isinstance(kids[2], lark.Tree) else []
            binder = unwrap(args[0]) if args else None
            if isinstance(binder, lark.Tree) and ident(binder) is not None:
                bound.add(binder.meta.start_pos)  # where it is bound

    walk(tree, frozenset(), visit)
    return [s for s in found if s.offset not in bound]


def _token_selections(text: str, roots: frozenset[str]) -> list[Selection]:
    toks = [t for t in tokens(text) if t.kind != "comment"]
    out: list[Selection] = []
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or tok.text not in roots:
            continue
        if i > 1 and toks[i - 1].text == "." and _is_operand_end(toks[i - 2]):
            continue  # a member of something else, such as `f.payload`; `.payload` is the root
        names, end = _selects(toks, i + 1)
        method = ""
        if end + 2 < len(toks) and toks[end].text == "." and toks[end + 2].text == "(":
            method = toks[end + 1].text
        out.append(
            Selection(
                tok.text,
                tuple(names),
                tok.start,
                toks[i - 1].text if i > 0 else "",
                toks[end].text if end < len(toks) else "",
                method,
            )
        )
    return out


def _is_operand_end(tok: Token) -> bool:
    return tok.kind != "punct" or tok.text in (")", "]", "}")


def _selects(toks: Sequence[Token], start: int) -> tuple[list[str], int]:
    """The names selected by `.name` (or `.?name`) from `start` on, up to a method call."""
    names: list[str] = []
    j = start
    while j < len(toks) and toks[j].text == ".":
        k = j + 1
        if k < len(toks) and toks[k].text == "?":
            k += 1
        if k >= len(toks) or toks[k].kind != "ident":
            break
        if k + 1 < len(toks) and toks[k + 1].text == "(":
            break  # a method such as `.startsWith(`: not a field
        names.append(toks[k].text)
        j = k + 1
    return names, j


# --- the grammar parse ------------------------------------------------------------------------

# The cel-python parse tree wraps every operand in one node per precedence level.
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication"}
    | {"unary", "member", "primary"}
)
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def _keyword(token: lark.Token) -> lark.Token:
    # cel-python's own callback makes these tokens anew, without positions; keep them.
    if token.value in ("true", "false"):
        return lark.Token.new_borrow_pos("BOOL_LIT", token.value, token)
    return token


@functools.cache
def _parser() -> lark.Lark:
    """cel-python's CEL grammar, parsed with every node's position in the text."""
    grammar = (Path(celpy.__file__).parent / "cel.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        start="expr",
        g_regex_flags=re.M,
        lexer_callbacks={"IDENT": _keyword},
        propagate_positions=True,
        maybe_placeholders=False,
        priority="invert",
    )


def parse(text: str) -> lark.Tree[Any] | None:
    """The parse tree of `text`, or None where the grammar refuses it."""
    try:
        tree: lark.Tree[Any] = _parser().parse(text)
    except Exception:  # any refusal only means there is nothing to analyse here
        return None
    return tree


def unwrap(node: Any) -> Any:
    """The node under its single-child precedence wrappers and parentheses."""
    while isinstance(node, lark.Tree):
        if node.data == "paren_expr" or (node.data in _WRAPPERS and len(node.children) == 1):
            node = node.children[0]
        else:
            break
    return node


def span(node: Any, text: str) -> tuple[int, int, str]:
    start, end = node.meta.start_pos, node.meta.end_pos
    return start, end, text[start:end]


def mentions(node: lark.Tree[Any], names: frozenset[str]) -> bool:
    """Whether any identifier in `node` is spelled as one of `names`, even a field name."""
    return any(
        isinstance(t, lark.Token) and t.type == "IDENT" and t.value in names
        for t in node.scan_values(lambda v: isinstance(v, lark.Token))
    )


def walk(
    node: Any, bound: frozenset[str], visit: Callable[[lark.Tree[Any], frozenset[str]], None]
) -> None:
    """Visit every subtree with the comprehension variables bound around it."""
    if not isinstance(node, lark.Tree):
        return
    visit(node, bound)
    kids = node.children
    if node.data == "member_dot_arg" and len(kids) == 3 and str(kids[1]) in MACROS:
        args = kids[2].children if isinstance(kids[2], lark.Tree) else []
        name = ident(args[0]) if args else None
        walk(kids[0], bound, visit)
        for k, arg in enumerate(args):
            walk(arg, bound | {name} if name and k > 0 else bound, visit)
        return
    for kid in kids:
        walk(kid, bound, visit)


def ident(node: Any) -> str | None:
    node = unwrap(node)
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def path_of(node: Any, bound: frozenset[str]) -> tuple[str, ...] | None:
    """`principal.attr.x[...]` as ("principal", "attr", "x", "[]"), or None."""
    node = unwrap(node)
    if not isinstance(node, lark.Tree):
        return None
    if node.data == "ident":
        name = str(node.children[0])
        return None if name in bound else (name,)
    if node.data in ("member_dot", "member_index"):
        base = path_of(node.children[0], bound)
        if base is None:
            return None
        return (*base, str(node.children[1]) if node.data == "member_dot" else "[]")
    return None


# --- literals finer than signoff keeps time ---------------------------------------------------

# A timestamp('...') literal with non-zero digits past the sixth of its fraction. Request times
# and cel-python's timestamps hold microseconds, cel-expr's literals nanoseconds: such a literal
# would make the two backends disagree, so it is refused on both.
_SUB_MICROSECOND = re.compile(
    r"""(?<![\w.])timestamp\s*\(\s*(['"])[0-9T:+\-Zz ]*\.\d{6}0*[1-9]\d*[^'"]*\1\s*\)"""
)
_DURATION_LITERAL = re.compile(r"""(?<![\w.])duration\s*\(\s*(['"])([^'"]*)\1\s*\)""")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_NANOS["h"] = 60 * _NANOS["m"]


def finer_than_a_microsecond(text: str) -> tuple[int, str] | None:
    """Where a timestamp or duration literal holds a non-zero part below a microsecond."""
    found = _SUB_MICROSECOND.search(text)
    if found is not None:
        return found.start(), "timestamp"
    for literal in _DURATION_LITERAL.finditer(text):
        nanos = sum(
            Decimal(number) * _NANOS[unit] for number, unit in _DURATION_PART.findall(literal[2])
        )
        if nanos % 1000:
            return literal.start(), "duration"
    return None


# --- reading the clock ------------------------------------------------------------------------

# `now`, and what is called on it with its arguments. A leading dot (`.now`) names the same
# top-level variable, and `x.now` is counted too: over-counting only costs cache entries.
_CLOCK = re.compile(r"(?<!\w)now(?!\w)(\s*\.\s*(\w+)\s*\(([^()]*)\))?")
# Accessors whose value cannot change within the given number of seconds of UTC time. Hours
# and coarser hold for 15 minutes in a zone whose offset is a whole quarter hour, which every
# named zone's is today; a literal offset is checked, and anything else gets a minute.
_STEADY_FOR = {
    "getHours": 900,
    "getDayOfWeek": 900,
    "getDate": 900,
    "getDayOfMonth": 900,
    "getDayOfYear": 900,
    "getMonth": 900,
    "getFullYear": 900,
    "getMinutes": 60,
    "getSeconds": 1,
}
_QUARTER_HOUR_ZONE = re.compile(
    r"""\s*(?:(['"])(?:[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*|[+-]?\d{1,2}:(?:00|15|30|45))\1)?\s*"""
)
CLOCK_FREE = float("inf")


@functools.lru_cache(maxsize=16384)
def clock_steady_for(source: str) -> float:
    """For how many seconds of time the expression's value cannot change, as far as reading
    `now` goes: CLOCK_FREE if it never reads it, 0 if `now` is used any other way than through
    the accessors above. Errs towards 0: a string or a comprehension variable spelled `now`
    counts too, which only costs a missed cache entry."""
    steady = CLOCK_FREE
    for m in _CLOCK.finditer(source):
        step = _STEADY_FOR.get(m[2] or "", 0)
        if step > 60 and not _QUARTER_HOUR_ZONE.fullmatch(m[3] or ""):
            step = 60  # a zone from a variable, or an odd offset: hours may turn any minute
        steady = min(steady, step)
    return steady


# --- names in error messages ------------------------------------------------------------------


def spelled_in(key: str, source: str) -> bool:
    """Whether `key` is written in the policy text as a field name or a string literal."""
    if not key or len(key) > 128:
        return False
    if key.isidentifier() and re.search(rf"\.\s*{re.escape(key)}(?!\w)", source):
        return True
    return f"'{key}'" in source or f'"{key}"' in source

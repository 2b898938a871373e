"""Mutants of one source file: every place where one small change could hide a bug.

Each mutant is one AST node changed (a comparison flipped at its boundary or negated, a
number moved by one, a boolean swapped, `and` for `or`, `min` for `max`, an arithmetic or
bit operator swapped, a `not` or a minus dropped, a `raise`, an early `return`, a
`break`/`continue`, a call statement or an in-place update removed, a dict entry left
out), written back as a splice of the original bytes, so the rest of the file stays byte
for byte what it was and a mutant reads like a diff.

Not mutated, because a change there is not a behaviour the tests should pin: docstrings
and other strings, f-strings (messages), annotations, decorators, `assert`, logging calls.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Edit = tuple[int, int, bytes]  # byte span [start, end) of the source and what replaces it

_COMPARE_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}
_COMPARE_TEXT: dict[type[ast.cmpop], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}
_BINARY_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.BitXor: ast.BitOr,
}
_BINARY_TEXT: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
}
_LOGGING = frozenset({"debug", "info", "warning", "error", "exception", "critical", "msg"})
_SWAPPED_CALLS = {"min": "max", "max": "min"}


@dataclass(frozen=True)
class Mutant:
    """One change to one module; `key` names it across edits elsewhere in the file."""

    module: str  # path from the repository root, e.g. "drivers/pmbus.py"
    line: int  # 1-based, in the unmutated file
    col: int  # characters from the first non-blank of that line
    code: str  # that line, stripped
    mutation: str  # what changed, e.g. "`<` → `<=`"
    edits: tuple[Edit, ...]
    column: int = 0  # 1-based in the file's line, for people reading a report
    scope: str = ""  # the function, class or class attribute it lies in, e.g. "Foo.bar"
    occurrence: int = 0  # among mutants with the same scope, code, col and mutation

    @property
    def key(self) -> tuple[str, str, str, int, str, int]:
        """What names this mutant however the lines around its scope move."""
        return (self.module, self.scope, self.code, self.col, self.mutation, self.occurrence)

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}:{self.column}"

    def apply(self, source: bytes) -> bytes:
        """The mutated file (edits never overlap; applied from the end backwards)."""
        out = source
        for start, end, text in sorted(self.edits, reverse=True):
            out = out[:start] + text + out[end:]
        return out


class _Source:
    """Byte offsets of AST positions (which count UTF-8 bytes within a line)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.lines = data.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def position(self, offset: int) -> tuple[int, int]:
        """(1-based line, byte column) of a byte offset."""
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1]

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.data[start:end].decode()

    def find_token(self, start: int, end: int, token: str) -> tuple[int, int]:
        """The byte span of an operator token between two operands."""
        gap = self.data[start:end].decode()
        words = r"\s+".join(re.escape(word) for word in token.split())
        pattern = rf"(?<![\w]){words}(?![\w])" if token[0].isalpha() else re.escape(token)
        match = re.search(pattern, gap)
        if match is None:
            raise ValueError(f"operator {token!r} not found in {gap!r}")
        before = len(gap[: match.start()].encode())
        return start + before, start + before + len(match.group().encode())


def mutants_of(module: str, source: bytes) -> list[Mutant]:
    """Every mutant of a module's source, in source order."""
    tree = ast.parse(source)
    src = _Source(source)
    skipped = _skipped_nodes(tree)
    final_returns = _final_returns(tree)
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        for mutation, edits in _mutations(node, src, final_returns):
            found.append(_mutant(module, src, mutation, edits))
    found.sort(key=lambda m: (m.line, m.col, m.mutation))
    scopes = _scopes(tree)
    seen: dict[tuple[str, str, int, str], int] = {}
    named = []
    for mutant in found:
        scope = _innermost(scopes, mutant.line)
        same = (scope, mutant.code, mutant.col, mutant.mutation)
        seen[same] = seen.get(same, -1) + 1
        named.append(dataclasses.replace(mutant, scope=scope, occurrence=seen[same]))
    return named


def _scopes(tree: ast.AST) -> list[tuple[int, int, str]]:
    """(first line, last line, dotted name) of each function, class and named assignment."""
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = None
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = child.name
            elif isinstance(node, ast.ClassDef | ast.Module) and isinstance(
                child, ast.Assign | ast.AnnAssign
            ):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                name = ",".join(t.id for t in targets if isinstance(t, ast.Name)) or None
            if name is None:
                visit(child, prefix)
                continue
            dotted = f"{prefix}.{name}" if prefix else name
            assert isinstance(child, ast.stmt)
            found.append((child.lineno, child.end_lineno or child.lineno, dotted))
            visit(child, dotted)

    visit(tree, "")
    return found


def _innermost(scopes: Sequence[tuple[int, int, str]], line: int) -> str:
    containing = [(last - first, name) for first, last, name in scopes if first <= line <= last]
    return min(containing)[1] if containing else ""


def _mutant(module: str, src: _Source, mutation: str, edits: Sequence[Edit]) -> Mutant:
    """A mutant placed where its first edit is (an operator's own token, not its node)."""
    line, byte_col = src.position(min(start for start, _, _ in edits))
    raw = src.lines[line - 1].decode()
    indent = len(raw) - len(raw.lstrip())
    col = len(raw.encode()[:byte_col].decode()) - indent
    return Mutant(module, line, col, raw.strip(), mutation, tuple(edits), indent + col + 1)


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Ids of nodes never mutated: strings, f-strings, annotations, decorators, asserts."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr | ast.Assert):
            roots.append(node)
        elif isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            roots.extend(node.decorator_list)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
                roots.append(node.returns)
        elif _is_logging_call(node):
            roots.append(node)
    skipped: set[int] = set()
    for root in roots:
        skipped.update(id(child) for child in ast.walk(root))
    return skipped


def _is_logging_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr in _LOGGING
    )


def _final_returns(tree: ast.AST) -> set[int]:
    """Returns that end a function: removing one only returns None, a trivial mutant."""
    final: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            last = node.body[-1]
            if isinstance(last, ast.Return):
                final.add(id(last))
    return final


def _mutations(
    node: ast.AST, src: _Source, final_returns: set[int]
) -> Iterator[tuple[str, list[Edit]]]:
    if isinstance(node, ast.Compare):
        yield from _compare(node, src)
    elif isinstance(node, ast.BinOp):
        yield from _binary(node, src)
    elif isinstance(node, ast.BoolOp):
        yield from _boolean(node, src)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        start, _ = src.span(node)
        dropped = "not" if isinstance(node.op, ast.Not) else "-"
        yield f"`{dropped}` removed", [(start, start + len(dropped), b"")]
    elif isinstance(node, ast.Constant):
        yield from _constant(node, src)
    elif isinstance(node, ast.Dict):
        yield from _dict_entries(node, src)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        other = _SWAPPED_CALLS.get(node.func.id)
        if other is not None:
            start, end = src.span(node.func)
            yield f"`{node.func.id}` → `{other}`", [(start, end, other.encode())]
    elif _removable(node, final_returns):
        assert isinstance(node, ast.stmt)
        yield _removed(node, src)


def _removable(node: ast.AST, final_returns: set[int]) -> bool:
    """A statement whose removal is a plausible bug: a raise, a jump, an update, a call."""
    if isinstance(node, ast.Raise | ast.Continue | ast.Break | ast.AugAssign):
        return True
    if isinstance(node, ast.Return):
        return id(node) not in final_returns
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and not _is_logging_call(node)
    )


def _removed(node: ast.stmt, src: _Source) -> tuple[str, list[Edit]]:
    kind = {
        ast.Raise: "raise",
        ast.Return: "return",
        ast.Continue: "continue",
        ast.Break: "break",
        ast.AugAssign: "update",
        ast.Expr: "call",
    }[type(node)]
    start, end = src.span(node)
    return f"{kind} removed", [(start, end, b"pass")]


def _compare(node: ast.Compare, src: _Source) -> Iterator[tuple[str, list[Edit]]]:
    operands = [node.left, *node.comparators]
    for index, op in enumerate(node.ops):
        _, gap_start = src.span(operands[index])
        gap_end, _ = src.span(operands[index + 1])
        old = _COMPARE_TEXT[type(op)]
        start, end = src.find_token(gap_start, gap_end, old)
        for new_type in _COMPARE_SWAPS[type(op)]:
            new = _COMPARE_TEXT[new_type]
            yield f"`{old}` → `{new}`", [(start, end, new.encode())]


def _binary(node: ast.BinOp, src: _Source) -> Iterator[tuple[str, list[Edit]]]:
    swapped = _BINARY_SWAPS.get(type(node.op))
    if swapped is None:
        return
    _, gap_start = src.span(node.left)
    gap_end, _ = src.span(node.right)
    old, new = _BINARY_TEXT[type(node.op)], _BINARY_TEXT[swapped]
    start, end = src.find_token(gap_start, gap_end, old)
    yield f"`{old}` → `{new}`", [(start, end, new.encode())]


def _boolean(node: ast.BoolOp, src: _Source) -> Iterator[tuple[str, list[Edit]]]:
    old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
    edits: list[Edit] = []
    for left, right in zip(node.values, node.values[1:], strict=False):
        _, gap_start = src.span(left)
        gap_end, _ = src.span(right)
        start, end = src.find_token(gap_start, gap_end, old)
        edits.append((start, end, new.encode()))
    yield f"`{old}` → `{new}`", edits


def _dict_entries(node: ast.Dict, src: _Source) -> Iterator[tuple[str, list[Edit]]]:
    """Each entry of a dict literal left out (a transition, a mapping, a word)."""
    for index, value in enumerate(node.values):
        key = node.keys[index]
        start, _ = src.span(key if key is not None else value)
        if key is None:  # `**mapping`: the two stars come before the value
            start = src.data.rindex(b"**", 0, start)
        _, end = src.span(value)
        if index + 1 == len(node.values) and index > 0:  # the last: take the comma before
            _, start = src.span(node.values[index - 1])
        elif index + 1 < len(node.values):
            following = node.keys[index + 1] or node.values[index + 1]
            end, _ = src.span(following)
            if node.keys[index + 1] is None:
                end = src.data.rindex(b"**", 0, end)
        shown = src.text(key) if key is not None else "**" + src.text(value)
        shown = " ".join(shown.split())
        yield f"entry `{shown[:40]}` removed", [(start, end, b"")]


def _constant(node: ast.Constant, src: _Source) -> Iterator[tuple[str, list[Edit]]]:
    value = node.value
    start, end = src.span(node)
    old = src.text(node)
    if isinstance(value, bool):
        new = str(not value)
    elif isinstance(value, int):
        new = f"0x{value + 1:X}" if old.lower().startswith("0x") else str(value + 1)
    elif isinstance(value, float):
        new = repr(value + 1.0)
    else:
        return
    yield f"`{old}` → `{new}`", [(start, end, new.encode())]

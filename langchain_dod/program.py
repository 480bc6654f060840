"""The answer of a solver that replies with a program: arithmetic assignments, computed without running Python.

With ``answer_format="program"`` the solver writes ``name = expression`` lines (program of thought) and the
arithmetic is done here, not by the model. The reply is read with :mod:`ast` and only numbers, earlier names,
``+ - * / // % **``, unary minus, ``x if a > b else y`` and ``round/int/float/abs/min/max`` are evaluated; no
``eval``, no imports, no loops, no attribute access, so a hostile or confused reply cannot run anything. A reply
that needs more is unrunnable: :func:`program_answer` returns ``None``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import textwrap
from collections.abc import Callable

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_CALLS: dict[str, Callable[..., float]] = {
    "round": round,
    "int": int,
    "float": float,
    "abs": abs,
    "min": min,
    "max": max,
}
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)
_LIMIT = 1e15  # larger intermediate values are no GSM8K answer; also stops 9**9**9


__all__ = ["ProgramError", "program_answer", "run_program"]


class ProgramError(ValueError):
    """The reply is no program of arithmetic assignments this evaluator runs."""


def _value(node: ast.AST, names: dict[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if not math.isfinite(node.value) or abs(node.value) > _LIMIT:  # `1e999` is inf
            raise ProgramError("number out of range")
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ProgramError(f"{node.id!r} is used before it is assigned")
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, names)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _value(node.left, names), _value(node.right, names)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            raise ProgramError("exponent out of range")
        try:
            v = _BIN[type(node.op)](a, b)
        except (ZeroDivisionError, OverflowError, ValueError) as e:
            raise ProgramError(str(e)) from None
        if isinstance(v, complex) or abs(v) > _LIMIT or (isinstance(v, float) and not math.isfinite(v)):
            raise ProgramError("value out of range")
        return v
    if isinstance(node, ast.IfExp):  # `2 if tickets > 3 else 0`
        return _value(node.body if _test(node.test, names) else node.orelse, names)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _CALLS
        and not node.keywords
        and node.args
    ):
        args = [_value(a, names) for a in node.args]
        if node.func.id == "round" and len(args) == 2 and abs(args[1]) > 15:  # round(5, -10**9) would never end
            raise ProgramError("round() to more than 15 digits")
        try:
            return _CALLS[node.func.id](*args)
        except (OverflowError, ValueError, TypeError) as e:  # int(inf), round(1, 2, 3), ...
            raise ProgramError(f"{node.func.id}(): {e}") from None
    raise ProgramError(f"unsupported expression: {ast.dump(node)[:60]}")


def _test(node: ast.AST, names: dict[str, float]) -> bool:
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        return _COMPARE[type(node.ops[0])](_value(node.left, names), _value(node.comparators[0], names))
    raise ProgramError(f"unsupported condition: {ast.dump(node)[:60]}")


_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*]|let)\s+")
_SINGLE_EQ = re.compile(r"(?<![=!<>+\-*/%])=(?!=)")


def _lines(code: str) -> list[ast.stmt]:
    """The statements of a reply that is no clean program, line by line.

    List numbering, backticks, ``x = 2 * 3 = 6`` and prose lines between the assignments are tolerated (a line
    that does not parse is skipped).
    """
    out = []
    for line in code.splitlines():
        line = _NUMBERING.sub("", line.replace("`", "")).strip()
        parts = _SINGLE_EQ.split(line)
        if len(parts) > 2:  # `total = 2 * 3 = 6`: the expression, not the model's own result
            line = f"{parts[0]}={parts[1]}"
        try:
            out.extend(ast.parse(line).body)
        except SyntaxError:
            continue
    return out


def _called(call: ast.Call) -> str | None:
    return call.func.id if isinstance(call.func, ast.Name) else None


def code_of(reply: str) -> str:
    """The program in a reply: its last fenced block, else the whole reply."""
    blocks = _FENCE.findall(reply)
    return blocks[-1] if blocks else reply


def run_program(code: str) -> dict[str, float]:
    """Every name the program assigns, in order. Raises :class:`ProgramError` on anything but assignments."""
    names: dict[str, float] = {}
    try:
        try:
            body = ast.parse(textwrap.dedent(code)).body
        except SyntaxError:
            body = _lines(code)
        _run(body, names)
    except RecursionError:  # `1 + 1 + ... + 1` thousands deep
        raise ProgramError("expression nested too deeply") from None
    if not names:
        raise ProgramError("no assignment in the reply")
    return names


def _run(body: list[ast.stmt], names: dict[str, float]) -> None:
    for stmt in body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a docstring
        targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)] if isinstance(stmt, ast.Assign) else []
        if isinstance(stmt, ast.Assign) and len(targets) == len(stmt.targets):
            v = _value(stmt.value, names)
            names.update(dict.fromkeys(targets, v))
            continue
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and type(stmt.op) in _BIN:
            target = ast.Name(id=stmt.target.id, ctx=ast.Load())  # `x -= 3` is `x = x - 3`
            names[stmt.target.id] = _value(ast.BinOp(left=target, op=stmt.op, right=stmt.value), names)
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and _called(stmt.value) == "print":
            continue  # print(answer): harmless, ignored
        raise ProgramError(f"unsupported statement: {type(stmt).__name__}")


def program_answer(reply: str) -> str | None:
    """The value of ``answer`` (else the last assigned name) as GSM8K writes numbers; ``None`` if unrunnable."""
    try:
        names = run_program(code_of(reply))
    except ProgramError:
        return None
    v = names.get("answer", list(names.values())[-1])
    if isinstance(v, float):
        v = round(v, 2)
        if v == int(v):
            v = int(v)
    return str(v)

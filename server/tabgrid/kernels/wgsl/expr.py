"""Tiny arithmetic expressions over a unit's params, for sizes and workgroup counts.

Parsed with ``ast`` and compiled into closures: nothing is ever passed to ``eval``, only
numbers, parameter names, ``+ - * / // % **``, unary minus, ``ceil floor min max`` and the
inputs' sizes ``len(x)`` (elements of input ``x``) and ``shape(x, k)`` (its k-th dimension) are
accepted, and every intermediate value is bounded so that an expression cannot stall the
coordinator.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

Number = int | float
Params = Mapping[str, Any]
Shapes = Mapping[str, tuple[str, tuple[int, ...]]]  # input name: (dtype, shape)
Fn = Callable[[Params, Shapes], Number]
NO_SHAPES: Shapes = {}

MAX_LENGTH = 200
MAX_MAGNITUDE = 2**63
MAX_EXPONENT = 64


class ExprError(ValueError):
    """An expression that does not parse, is not allowed, or cannot be evaluated."""


def _power(a: Number, b: Number) -> Number:
    if abs(b) > MAX_EXPONENT:
        raise ExprError(f"exponent {b} is larger than {MAX_EXPONENT}")
    if a == 0 and b < 0:
        raise ExprError("zero to a negative power")
    if a < 0 and b != int(b):
        raise ExprError("negative number to a fractional power")
    return a**b


_BINARY: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    # name: (function, fewest arguments, most arguments)
    "ceil": (math.ceil, 1, 1),
    "floor": (math.floor, 1, 1),
    "min": (min, 2, 8),
    "max": (max, 2, 8),
}
SIZES = frozenset({"len", "shape"})  # functions of an input, not of numbers
FUNCTIONS = frozenset(_FUNCTIONS) | SIZES


def _lookup(params: Params, name: str) -> Number:
    try:
        value = params[name]
    except KeyError:
        raise ExprError(f"unknown parameter {name!r}") from None
    if type(value) is not int and type(value) is not float:
        raise ExprError(f"parameter {name!r} is {type(value).__name__}, not a number")
    return value


def _constant(node: ast.Constant) -> Fn:
    value = node.value
    if type(value) is not int and type(value) is not float:
        raise ExprError(f"constant {value!r} is not a number")
    if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
        raise ExprError(f"constant {value!r} is too large")
    return lambda _params, _shapes: value


def _name(node: ast.Name) -> Fn:
    if node.id in FUNCTIONS:
        raise ExprError(f"function {node.id!r} used without calling it")
    name = node.id

    def lookup(params: Params, _shapes: Shapes) -> Number:
        value = params.get(name)
        if type(value) is int or type(value) is float:
            return value
        return _lookup(params, name)  # for its message

    return lookup


def _binary(node: ast.BinOp) -> Fn:
    op = _BINARY.get(type(node.op))
    if op is None:
        raise ExprError(f"operator {type(node.op).__name__} is not allowed")
    left, right = _compile(node.left), _compile(node.right)

    def binary(params: Params, shapes: Shapes) -> Number:
        value = op(left(params, shapes), right(params, shapes))
        # Also false for NaN, so non-finite values stop here too.
        if -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
            return value
        raise ExprError(f"value {value} is out of range")

    return binary


def _unary(node: ast.UnaryOp) -> Fn:
    operand = _compile(node.operand)
    if isinstance(node.op, ast.USub):
        return lambda params, shapes: -operand(params, shapes)
    if isinstance(node.op, ast.UAdd):
        return operand
    raise ExprError(f"operator {type(node.op).__name__} is not allowed")


def _shape_of(shapes: Shapes, name: str) -> tuple[int, ...]:
    try:
        return shapes[name][1]
    except KeyError:
        raise ExprError(f"unknown input {name!r}") from None


def _size(fn: str, node: ast.Call) -> Fn:
    """``len(x)``: elements of input x (all dimensions); ``shape(x, k)``: its k-th dimension."""
    usage = "len(input)" if fn == "len" else "shape(input, dimension)"
    count = 1 if fn == "len" else 2
    if node.keywords or len(node.args) != count or not isinstance(node.args[0], ast.Name):
        raise ExprError(f"{fn}() takes an input's name: {usage}")
    name = node.args[0].id
    if fn == "len":

        def length(_params: Params, shapes: Shapes) -> Number:
            total = 1
            for n in _shape_of(shapes, name):
                total *= n
            return total

        return length
    k = node.args[1]
    if not isinstance(k, ast.Constant) or type(k.value) is not int or k.value < 0:
        raise ExprError(
            f"shape(): the dimension must be a whole number from 0, not {ast.unparse(k)}"
        )
    dim = k.value

    def dimension(_params: Params, shapes: Shapes) -> Number:
        shape = _shape_of(shapes, name)
        if dim >= len(shape):
            raise ExprError(f"input {name!r} has {len(shape)} dimension(s), no dimension {dim}")
        return shape[dim]

    return dimension


def _call(node: ast.Call) -> Fn:
    if isinstance(node.func, ast.Name) and node.func.id in SIZES:
        return _size(node.func.id, node)
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise ExprError(f"unknown function {shown!r}; allowed: {', '.join(sorted(FUNCTIONS))}")
    fn, fewest, most = _FUNCTIONS[node.func.id]
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise ExprError(f"{node.func.id}() takes plain positional arguments")
    if not fewest <= len(node.args) <= most:
        count = f"{fewest} argument" if fewest == most else f"{fewest} to {most} arguments"
        raise ExprError(f"{node.func.id}() takes {count}")
    args = [_compile(a) for a in node.args]
    if len(args) == 1:
        (only,) = args
        return lambda params, shapes: fn(only(params, shapes))
    return lambda params, shapes: fn(*[a(params, shapes) for a in args])


_COMPILERS: dict[type, Callable[[Any], Fn]] = {
    ast.Constant: _constant,
    ast.Name: _name,
    ast.BinOp: _binary,
    ast.UnaryOp: _unary,
    ast.Call: _call,
}


def _compile(node: ast.AST) -> Fn:
    compiler = _COMPILERS.get(type(node))
    if compiler is None:
        raise ExprError(f"{type(node).__name__} is not allowed")
    return compiler(node)


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled expression; ``evaluate`` it with a unit's params."""

    text: str
    fn: Fn
    names: frozenset[str] = frozenset()  # the params it reads
    count: int | None = None  # set by ``as_count`` when it reads no params and no inputs
    inputs: frozenset[str] = frozenset()  # the inputs whose sizes it reads


def evaluate(expr: Expr, params: Params, shapes: Shapes = NO_SHAPES) -> Number:
    """The value of ``expr`` for ``params`` and the inputs' ``shapes``; raises ExprError
    naming the expression."""
    try:
        return expr.fn(params, shapes)
    except ExprError as e:
        raise ExprError(f"{expr.text!r}: {e}") from None
    except ZeroDivisionError:
        raise ExprError(f"{expr.text!r}: division by zero") from None
    except (OverflowError, ValueError, TypeError) as e:
        raise ExprError(f"{expr.text!r}: {e}") from None


def parse(source: str | int | float) -> Expr:
    """Compile ``source`` (an expression string or a plain number); raises ExprError."""
    if type(source) is int or type(source) is float:
        return Expr(repr(source), _constant(ast.Constant(source)))
    if not isinstance(source, str):
        raise ExprError(f"{source!r} is {type(source).__name__}, not an expression or number")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise ExprError(f"{source!r} does not parse: {e.msg}") from None
    try:
        fn = _compile(tree.body)
    except ExprError as e:
        raise ExprError(f"{source!r}: {e}") from None
    except RecursionError:
        raise ExprError(f"{source!r} is nested too deeply") from None
    sized = [  # the input named by each len()/shape(), which _size has checked is a Name
        n.args[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in SIZES
    ]
    skip = {id(n) for n in sized}
    names = frozenset(
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id not in FUNCTIONS and id(n) not in skip
    )
    inputs = frozenset(n.id for n in sized if isinstance(n, ast.Name))
    return Expr(source, fn, names, inputs=inputs)


def as_count(expr: Expr) -> Expr:
    """``expr``, with its value folded in when it reads no params or inputs (checked positive
    now)."""
    if expr.names or expr.inputs:
        return expr
    return replace(expr, count=evaluate_count(expr, {}))


def evaluate_count(expr: Expr, params: Params, shapes: Shapes = NO_SHAPES) -> int:
    """The value of ``expr`` as a positive whole number; raises ExprError otherwise."""
    if expr.count is not None:
        return expr.count
    value = evaluate(expr, params, shapes)
    if type(value) is float:
        if not value.is_integer():
            raise ExprError(f"{expr.text!r} = {value}, not a whole number")
        value = int(value)
    if value < 1:
        raise ExprError(f"{expr.text!r} = {value}, not a positive number")
    return value

"""The wgsl kernel's manifest checks, its shader scanner and its expression evaluator."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import pytest

from tabgrid.kernels import wgsl
from tabgrid.kernels.wgsl.expr import ExprError, evaluate, evaluate_count, parse
from tabgrid.kernels.wgsl.source import element_scalar, scan, strip_comments

SHADER = """
// y = a * x + y, over n elements
struct Params {
    a: f32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
/* an old binding, kept for reference:
@group(0) @binding(5) var<storage, read> w: array<f32>;
*/

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < p.n) {
        y[id.x] = p.a * x[id.x] + y[id.x];
    }
}
"""


def manifest() -> dict[str, Any]:
    return {
        "entry": "main",
        "bindings": [
            {"binding": 0, "input": "x"},
            {"binding": 1, "output": "y", "type": "f32", "length": "n"},
            {"binding": 2, "uniform": [{"name": "a", "type": "f32"}, {"name": "n", "type": "u32"}]},
        ],
        "workgroups": ["ceil(n / 64)", 1, 1],
    }


def job_errors(m: Any, shader: str = SHADER, inputs: dict[str, Any] | None = None) -> list[str]:
    return wgsl.validate_job({"shader": shader, "manifest": m}, inputs or {})


def assert_named(errors: list[str], *fragments: str) -> None:
    assert errors, "expected an error"
    text = "\n".join(errors)
    for fragment in fragments:
        assert fragment in text, text


def test_a_correct_manifest_passes() -> None:
    assert job_errors(manifest(), inputs={"x": ("float32", (100,))}) == []
    params = {"shader": SHADER, "manifest": manifest(), "a": 0.5, "n": 100}
    assert wgsl.validate_unit(params, {"x": ("float32", (100,))}) == []


# ---- job-level mistakes, one at a time ------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    m = manifest()
    del m[key]
    return m


def _with(**changes: Any) -> dict[str, Any]:
    return {**manifest(), **changes}


def _binding(index: int, **changes: Any) -> dict[str, Any]:
    m = manifest()
    m["bindings"][index] = {**m["bindings"][index], **changes}
    return m


def _drop_binding_key(index: int, key: str) -> dict[str, Any]:
    m = manifest()
    del m["bindings"][index][key]
    return m


MISTAKES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("missing key", _without("workgroups"), ("manifest: missing key(s) 'workgroups'",)),
    ("extra key", _with(entrypoint="main"), ("manifest: unknown key(s) 'entrypoint'",)),
    ("not an object", ["main"], ("'manifest' must be an object",)),
    ("bindings not a list", _with(bindings={"0": "x"}), ("'bindings' must be a non-empty list",)),
    ("binding number is text", _binding(0, binding="0"), ("'binding' must be an integer",)),
    ("binding number is bool", _binding(0, binding=True), ("'binding' must be an integer",)),
    ("duplicate binding", _binding(1, binding=0), ("binding 0 appears more than once",)),
    ("two kinds", _binding(0, output="z"), ("exactly one of 'input', 'output', 'uniform'",)),
    ("no kind", _drop_binding_key(0, "input"), ("has none",)),
    ("output without length", _drop_binding_key(1, "length"), ("missing key(s) 'length'",)),
    ("unknown binding key", _binding(0, access="read"), ("binding 0: unknown key(s) 'access'",)),
    ("unknown element type", _binding(1, type="f64"), ("unknown element type 'f64'",)),
    ("name not a name", _binding(0, input="x y"), ("'x y' is not a name",)),
    ("length does not parse", _binding(1, length="n *"), ("'n *' does not parse",)),
    ("unknown function", _binding(1, length="sqrt(n)"), ("unknown function 'sqrt'",)),
    ("attribute access", _binding(1, length="n.real"), ("Attribute is not allowed",)),
    ("workgroups length", _with(workgroups=[1, 1]), ("'workgroups' must be a list of 3",)),
    ("workgroups zero", _with(workgroups=[0, 1, 1]), ("workgroups[0]: '0' = 0, not a positive",)),
    ("workgroups huge", _with(workgroups=[70000, 1, 1]), ("70000 is more than 65535",)),
    ("workgroups wrong type", _with(workgroups=[None, 1, 1]), ("NoneType, not an expression",)),
    ("entry not found", _with(entry="mian"), ("entry point 'mian'", "found: main")),
    ("entry not a name", _with(entry=3), ("manifest 'entry': 3 is not a name",)),
    (
        "uniform field type",
        _binding(2, uniform=[{"name": "a", "type": "float"}, {"name": "n", "type": "u32"}]),
        ("unknown type 'float'",),
    ),
    (
        "uniform field twice",
        _binding(2, uniform=[{"name": "a", "type": "f32"}, {"name": "a", "type": "f32"}]),
        ("field 'a' appears twice",),
    ),
    (
        "uniform fields in the wrong order",
        _binding(2, uniform=[{"name": "n", "type": "u32"}, {"name": "a", "type": "f32"}]),
        ("shader struct Params is {a: f32, n: u32}, manifest lists {n: u32, a: f32}",),
    ),
    (
        "uniform field with a stray key",
        _binding(
            2, uniform=[{"name": "a", "type": "f32", "value": 1}, {"name": "n", "type": "u32"}]
        ),
        ("uniform[0]: unknown key(s) 'value'",),
    ),
]


@pytest.mark.parametrize(("mistake", "bad", "fragments"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_manifest_mistake_is_named(mistake: str, bad: Any, fragments: tuple[str, ...]) -> None:
    assert_named(job_errors(bad), *fragments)


SHADER_MISTAKES: list[tuple[str, str, Any, tuple[str, ...]]] = [
    (
        "manifest binding missing from the shader",
        SHADER,
        _binding(0, binding=7),
        ("manifest binding 7 has no @group(0) @binding(7) in the shader",),
    ),
    (
        "shader binding missing from the manifest",
        SHADER,
        {**manifest(), "bindings": manifest()["bindings"][:2]},
        ("shader declares @group(0) @binding(2) (var 'p') but the manifest has no binding 2",),
    ),
    (
        "input bound to a read_write var",
        SHADER.replace("var<storage, read> x", "var<storage, read_write> x"),
        manifest(),
        ("binding 0 (input 'x')", "an input needs var<storage, read>"),
    ),
    (
        "output bound to a read-only var",
        SHADER.replace("var<storage, read_write> y", "var<storage> y"),
        manifest(),
        ("binding 1 (output 'y')", "an output needs var<storage, read_write>"),
    ),
    (
        "uniform bound to a storage var",
        SHADER.replace("var<uniform> p", "var<storage, read> p"),
        manifest(),
        ("binding 2 (uniform)", "needs var<uniform>"),
    ),
    (
        "output element type differs",
        SHADER.replace("y: array<f32>", "y: array<u32>"),
        manifest(),
        ("manifest type f32 but the shader's array<u32> holds u32",),
    ),
    (
        "storage type is not an array",
        SHADER.replace("x: array<f32>", "x: Params"),
        manifest(),
        ("shader type Params is not an array of f32, i32 or u32",),
    ),
    (
        "another bind group",
        SHADER.replace("@group(0) @binding(2)", "@group(1) @binding(2)"),
        manifest(),
        ("'p' is in @group(1); only 0 is bound",),
    ),
    (
        "binding number not a literal",
        SHADER.replace("@binding(2)", "@binding(TWO)"),
        manifest(),
        ("@group and @binding must both be integer literals",),
    ),
]


@pytest.mark.parametrize(
    ("mistake", "shader", "bad", "fragments"), SHADER_MISTAKES, ids=[m[0] for m in SHADER_MISTAKES]
)
def test_each_shader_mismatch_is_named(
    mistake: str, shader: str, bad: Any, fragments: tuple[str, ...]
) -> None:
    assert_named(job_errors(bad, shader), *fragments)


def test_several_mistakes_are_reported_together() -> None:
    m = _binding(1, type="f64", length="sqrt(n)")
    m["entry"] = "mian"
    assert_named(job_errors(m), "unknown element type 'f64'", "'sqrt'", "entry point 'mian'")


def test_job_inputs_must_be_bound_and_match_the_shaders_element_type() -> None:
    assert_named(job_errors(manifest(), inputs={"z": ("float32", (4,))}), "'z' is not bound")
    assert_named(
        job_errors(manifest(), inputs={"x": ("int32", (4,))}),
        "input 'x' is int32 but binding 0 in the shader is array<f32> (needs float32)",
    )


def test_shader_and_manifest_params_are_required() -> None:
    assert_named(wgsl.validate_job({"manifest": manifest()}, {}), "param 'shader' is required")
    assert_named(wgsl.validate_unit({"shader": SHADER}, {}), "param 'manifest' is required")
    assert_named(job_errors(manifest(), shader="  "), "'shader' must be the WGSL source text")


def test_too_many_storage_bindings() -> None:
    shader = "\n".join(
        f"@group(0) @binding({i}) var<storage, read> v{i}: array<f32>;" for i in range(9)
    )
    m = {
        "entry": "main",
        "bindings": [{"binding": i, "input": f"v{i}"} for i in range(9)],
        "workgroups": [1, 1, 1],
    }
    assert_named(job_errors(m, shader + "\n@compute @workgroup_size(1) fn main() {}"), "only 8")


# ---- unit-level checks ----------------------------------------------------------------------


def unit_errors(params: dict[str, Any], inputs: dict[str, Any] | None = None) -> list[str]:
    full = {"shader": SHADER, "manifest": manifest(), "a": 1.0, "n": 10, **params}
    return wgsl.validate_unit(full, {"x": ("float32", (10,))} if inputs is None else inputs)


@pytest.mark.parametrize(
    ("params", "inputs", "fragments"),
    [
        ({"n": 0}, None, ("'n' = 0, not a positive number",)),
        ({"n": 10.5}, None, ("'n' = 10.5, not a whole number",)),
        ({"n": "10"}, None, ("parameter 'n' is str, not a number",)),
        ({"a": float("inf")}, None, ("param 'a' = inf is not a finite f32",)),
        ({"n": 2**40}, None, ("param 'n' = 1099511627776 is not an integer in range",)),
        ({}, {}, ("input 'x' (binding 0) is missing",)),
        ({}, {"x": ("uint32", (10,))}, ("input 'x' is uint32",)),
        ({}, {"x": ("float32", (0, 3))}, ("input 'x' is empty",)),
        ({}, {"x": ("float32", (10,)), "q": ("float32", (1,))}, ("'q' is not bound",)),
    ],
)
def test_unit_checks_name_the_problem(
    params: dict[str, Any], inputs: dict[str, Any] | None, fragments: tuple[str, ...]
) -> None:
    assert_named(unit_errors(params, inputs), *fragments)


def test_a_missing_param_is_named() -> None:
    params = {"shader": SHADER, "manifest": manifest(), "a": 1.0}
    assert_named(
        wgsl.validate_unit(params, {"x": ("float32", (4,))}),
        "output 'y' length: 'n': unknown parameter 'n'",
        "workgroups: 'ceil(n / 64)': unknown parameter 'n'",
        "uniform field 'n' needs a param 'n'",
    )


def test_validate_unit_costs_microseconds() -> None:
    params = {"shader": SHADER, "manifest": manifest(), "a": 1.0, "n": 1000}
    inputs = {"x": ("float32", (1000,))}
    assert wgsl.validate_unit(params, inputs) == []
    start = time.perf_counter()
    for _ in range(100_000):
        wgsl.validate_unit(params, inputs)
    assert time.perf_counter() - start < 3.0


def test_equal_but_differently_typed_manifests_are_told_apart() -> None:
    assert job_errors(manifest()) == []
    assert_named(job_errors(_binding(1, binding=True)), "'binding' must be an integer")
    assert_named(job_errors(_binding(1, binding=1.0)), "'binding' must be an integer")


def test_a_changed_manifest_is_checked_again() -> None:
    m = manifest()
    assert job_errors(m) == []
    m["entry"] = "mian"  # the same object, edited after it was checked once
    assert_named(job_errors(m), "entry point 'mian'")
    assert job_errors(manifest()) == []


# ---- the shader scanner ---------------------------------------------------------------------


def test_scanner_ignores_comments_and_reads_declarations() -> None:
    info = scan(SHADER)
    assert info.entries == ["main"]
    assert [(v.binding, v.space, v.access, v.type) for v in info.bindings] == [
        (0, "storage", "read", "array<f32>"),
        (1, "storage", "read_write", "array<f32>"),
        (2, "uniform", "", "Params"),
    ]
    assert info.structs == {"Params": [("a", "f32"), ("n", "u32")]}
    assert "binding(5)" not in strip_comments(SHADER)
    assert strip_comments("a /* b /* c */ d */ e // f\ng") == "a   e \ng"


def test_scanner_reads_attributes_in_any_order() -> None:
    info = scan("@workgroup_size(8, 8) @compute\nfn second() {}\n fn helper() {}")
    assert info.entries == ["second"]


@pytest.mark.parametrize(
    ("text", "scalar"),
    [
        ("array<f32>", "f32"),
        ("array< vec4 < u32 > >", "u32"),
        ("array<vec2i>", "i32"),
        ("array<atomic<u32>>", "u32"),
        ("array<f32, 16>", "f32"),
        ("array<f16>", None),
        ("array<array<f32, 4>>", None),
        ("Params", None),
    ],
)
def test_element_scalar(text: str, scalar: str | None) -> None:
    assert element_scalar(text) == scalar


# ---- the expression evaluator ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("ceil(n / 64)", 16),
        ("floor(n / 64)", 15),
        ("n // 64 + 1", 16),
        ("max(1, min(n, 4))", 4),
        ("2 ** 10 - n", 24),
        ("-n + 2 * n", 1000),
        (7, 7),
    ],
)
def test_expressions_evaluate(text: str | int, value: int) -> None:
    assert evaluate(parse(text), {"n": 1000}) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "unknown function"),
        ("__import__('os')", "unknown function '__import__'"),
        ("n.bit_length()", "unknown function 'n.bit_length'"),
        ("n.real", "Attribute is not allowed"),
        ("(lambda: 1)()", "unknown function"),
        ("[1, 2][0]", "Subscript is not allowed"),
        ("n if n else 1", "IfExp is not allowed"),
        ("min(n=1, m=2)", "plain positional arguments"),
        ("ceil(1, 2)", "ceil() takes 1 argument"),
        ("max(1)", "max() takes 2 to 8 arguments"),
        ("n > 0", "Compare is not allowed"),
        ("ceil", "used without calling it"),
        ("'text'", "constant 'text' is not a number"),
        ("True", "constant True is not a number"),
        ("n + " * 60 + "n", "longer than 200"),
        ("1e999", "too large"),
    ],
)
def test_unsafe_or_unknown_expressions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        parse(text)


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("n / 0", {"n": 1}, "division by zero"),
        ("n % m", {"n": 1, "m": 0}, "division by zero"),
        ("9 ** 99", {}, "exponent 99 is larger than 64"),
        ("n ** 64 * n ** 64", {"n": 10**9}, "out of range"),
        ("(-8) ** 0.5", {}, "fractional power"),
        ("m + 1", {"n": 1}, "unknown parameter 'm'"),
        ("flag + 1", {"flag": True}, "parameter 'flag' is bool"),
    ],
)
def test_evaluation_errors_name_the_problem(
    text: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExprError, match=message):
        evaluate_count(parse(text), params)


def test_manifest_is_not_mutated_by_checking() -> None:
    m = manifest()
    before = copy.deepcopy(m)
    job_errors(m)
    wgsl.validate_unit({"shader": SHADER, "manifest": m, "a": 1.0, "n": 3}, {})
    assert m == before


# ---- the inputs' sizes in expressions -------------------------------------------------------

SHAPES = {"x": ("float32", (1000,)), "a": ("float32", (30, 40))}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("len(x)", 1000),
        ("ceil(len(x) / 64)", 16),
        ("len(a)", 1200),
        ("shape(a, 0) * 2 + shape(a, 1)", 100),
        ("min(len(x), n)", 7),
    ],
)
def test_sizes_of_inputs_evaluate(text: str, value: int) -> None:
    assert evaluate(parse(text), {"n": 7}, SHAPES) == value


def test_an_expression_knows_which_params_and_inputs_it_reads() -> None:
    expr = parse("ceil(len(x) / n) + shape(a, 1) + x")
    assert expr.names == {"n", "x"}  # the last x is a param of that name
    assert expr.inputs == {"x", "a"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("len(1)", "len() takes an input's name: len(input)"),
        ("len(x, 2)", "len() takes an input's name: len(input)"),
        ("shape(x)", "shape() takes an input's name: shape(input, dimension)"),
        ("shape(x, -1)", "the dimension must be a whole number from 0, not -1"),
        ("shape(x, n)", "the dimension must be a whole number from 0, not n"),
        ("len", "function 'len' used without calling it"),
    ],
)
def test_misused_size_functions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        parse(text)


def test_sizes_of_unknown_inputs_or_dimensions_are_named() -> None:
    with pytest.raises(ExprError, match=re.escape("'len(z)': unknown input 'z'")):
        evaluate(parse("len(z)"), {}, SHAPES)
    with pytest.raises(ExprError, match=re.escape("input 'x' has 1 dimension(s), no dimension 1")):
        evaluate(parse("shape(x, 1)"), {}, SHAPES)

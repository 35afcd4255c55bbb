"""The silent wrong answers a wgsl manifest allowed: each refused at submission (validate_unit,
the check api/submission.py runs for every unit) or turned into an error by the kernel's run
on a real GPU (lavapipe here), never a result with zeros or cut-off elements in it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gpu_fixture import arrays, run, shared_gpu, to_numpy
from tabgrid.kernels import wgsl
from tabgrid.kernels.wgsl.source import scan
from tabgrid.runtime import KernelError, run_unit

# One element per invocation, bounded by a uniform n: the shape most element-wise shaders have.
SCALE = """
struct Params { n: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < p.n) {
        y[id.x] = 2.0 * x[id.x];
    }
}
"""

# One partial sum per workgroup of 256 (each invocation adds one element): a reduction.
PARTIAL = """
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
var<workgroup> scratch: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) local: vec3<u32>,
        @builtin(workgroup_id) group: vec3<u32>) {
    let i = group.x * 256u + local.x;
    scratch[local.x] = select(0.0, x[i], i < arrayLength(&x));
    workgroupBarrier();
    for (var live = 128u; live > 0u; live = live / 2u) {
        if (local.x < live) { scratch[local.x] = scratch[local.x] + scratch[local.x + live]; }
        workgroupBarrier();
    }
    if (local.x == 0u) { partial[group.x] = scratch[0]; }
}
"""


@pytest.fixture(scope="module")
def gpu() -> Any:
    return shared_gpu()


def scale_manifest(length: Any = "n", workgroups: Any = "ceil(n / 256)", **x: Any) -> dict:
    return {
        "entry": "main",
        "bindings": [
            {"binding": 0, "input": "x", **x},
            {"binding": 1, "output": "y", "type": "f32", "length": length},
            {"binding": 2, "uniform": [{"name": "n", "type": "u32"}]},
        ],
        "workgroups": [workgroups, 1, 1],
    }


def partial_manifest(length: Any, written_by: str | None = "workgroup") -> dict:
    out: dict[str, Any] = {"binding": 1, "output": "partial", "type": "f32", "length": length}
    if written_by is not None:
        out["written_by"] = written_by
    return {
        "entry": "main",
        "bindings": [{"binding": 0, "input": "x"}, out],
        "workgroups": ["ceil(len(x) / 256)", 1, 1],
    }


def unit_errors(shader: str, manifest: dict, n: int | None, length: int) -> list[str]:
    params = {"shader": shader, "manifest": manifest} | ({} if n is None else {"n": n})
    return wgsl.validate_unit(params, {"x": ("float32", (length,))})


def only(errors: list[str]) -> str:
    assert len(errors) == 1, errors
    return errors[0]


N = 25_600


# ---- refused at submission ------------------------------------------------------------------


def test_a_correct_element_wise_unit_passes() -> None:
    assert unit_errors(SCALE, scale_manifest(), N, N) == []
    # sized by the input itself: no n to get wrong
    m = scale_manifest(length="len(x)", workgroups="ceil(len(x) / 256)")
    assert unit_errors(SCALE, m, N, N) == []


def test_too_few_workgroups_is_refused_with_the_numbers() -> None:
    """The issue's n/2560: a tenth of the outputs written, the rest zeros."""
    message = only(unit_errors(SCALE, scale_manifest(workgroups="n / 2560"), N, N))
    assert message == (
        "output 'y' has 25600 elements, but workgroups [10, 1, 1] × @workgroup_size(256, 1, 1) "
        "= 2560 invocations write one each, so 23040 would stay zero: dispatch "
        'ceil(25600 / 256) = 100 workgroups in x, or declare "written_by": "any" if each '
        "invocation writes several"
    )


def test_a_cut_short_output_is_refused_with_the_numbers() -> None:
    """The issue's length n/512: the shader writes n elements into a buffer of n/512."""
    message = only(unit_errors(SCALE, scale_manifest(length="n // 512"), N, N))
    assert message == (
        "output 'y' has 50 elements, but workgroups [100, 1, 1] × @workgroup_size(256, 1, 1) "
        "= 25600 invocations write one each: 99 whole workgroup(s) have no element to write, "
        "so the shader's writes past the end are dropped (or land on other elements): make its "
        "'length' cover every element the shader writes (up to 25600), dispatch "
        'ceil(50 / 256) = 1 workgroups, or declare "written_by": "workgroup" (one element '
        'per workgroup) or "any"'
    )


def test_a_param_larger_than_the_input_is_refused_when_the_input_declares_its_length() -> None:
    m = scale_manifest(length="n")
    m["bindings"][0]["length"] = "n"
    assert unit_errors(SCALE, m, N, N) == []
    message = only(unit_errors(SCALE, m, 2 * N, N))
    assert message == (
        "input 'x' holds 25600 elements, but its 'length' 'n' = 51200: the shader would read "
        "25600 elements past its end, where WebGPU returns zeros or other elements instead of "
        "failing; pass a smaller 'n' or a longer 'x'"
    )


def test_a_param_larger_than_an_undeclared_input_fails_on_the_worker(gpu: Any) -> None:
    """The issue's n larger than the input, with no 'length' declared for it: only the run can
    tell, by running again with the input followed by SENTINEL elements and seeing the outputs
    change. A shader that bounds its reads by arrayLength is left alone."""
    n, have = 2048, 1024
    params = {"shader": SCALE, "manifest": scale_manifest(), "n": n}
    assert wgsl.validate_unit(params, {"x": ("float32", (have,))}) == []
    x = np.arange(1, have + 1, dtype=np.float32)
    with pytest.raises(KernelError) as info:
        run(run_unit(gpu, "wgsl", params, arrays(x=x)))
    assert str(info.value) == (
        "the shader reads past the end of input 'x' (outputs y change with what lies beyond "
        "it), so its answer would be wrong: a param is larger than the input ('n' = 2048; "
        "input lengths 'x' 1024); pass a param that fits the input, bound the reads by "
        "arrayLength, or declare the input's 'length' so the mismatch is refused at submission"
    )
    # The same shader with a param that fits, and one bounded by arrayLength, run as before.
    out = run(run_unit(gpu, "wgsl", params | {"n": have}, arrays(x=x)))
    np.testing.assert_array_equal(to_numpy(out["y"]), 2 * x)
    bounded = SCALE.replace("if (id.x < p.n) {", "if (id.x < p.n && id.x < arrayLength(&x)) {")
    m = scale_manifest()
    m["bindings"][1]["written_by"] = "any"  # the tail past x stays zero on purpose
    out = run(run_unit(gpu, "wgsl", {"shader": bounded, "manifest": m, "n": n}, arrays(x=x)))
    np.testing.assert_array_equal(to_numpy(out["y"])[:have], 2 * x)


def test_per_workgroup_outputs_must_match_the_workgroups_exactly() -> None:
    assert unit_errors(PARTIAL, partial_manifest("ceil(len(x) / 256)"), None, N) == []
    short = only(unit_errors(PARTIAL, partial_manifest("ceil(len(x) / 512)"), None, N))
    assert short == (
        "output 'partial' is written one element per workgroup but has 50 elements for "
        "workgroups [100, 1, 1] = 100 workgroups: 50 workgroups' elements would be dropped; "
        "make its 'length' 100 (the workgroups' product)"
    )
    padded = only(unit_errors(PARTIAL, partial_manifest("len(x)"), None, N))
    assert padded == (
        "output 'partial' is written one element per workgroup and has 25600 elements, but "
        "workgroups [100, 1, 1] = 100 workgroups leave 25500 at zero: make its 'length' 100 "
        "or dispatch 25600 workgroups"
    )


def test_vector_outputs_count_scalars_but_cover_by_vectors() -> None:
    shader = SCALE.replace("y: array<f32>", "y: array<vec4<f32>>").replace(
        "y[id.x] = 2.0 * x[id.x];", "y[id.x] = vec4<f32>(x[id.x]);"
    )
    # 4n scalars, n vec4 elements: n invocations cover it
    assert unit_errors(shader, scale_manifest(length="4 * n"), N, N) == []
    message = only(unit_errors(shader, scale_manifest(length="8 * n"), N, N))
    assert "output 'y' has 204800 elements (51200 vec4)" in message
    assert "25600 would stay zero" in message


def test_written_by_any_skips_the_coverage_check() -> None:
    m = scale_manifest(workgroups=1)
    assert "would stay zero" in only(unit_errors(SCALE, m, N, N))
    m["bindings"][1]["written_by"] = "any"
    assert unit_errors(SCALE, m, N, N) == []


def test_manifest_mistakes_in_the_new_keys_are_named() -> None:
    m = scale_manifest()
    m["bindings"][1]["written_by"] = "thread"
    assert only(wgsl.validate_job({"shader": SCALE, "manifest": m}, {})) == (
        "binding 1: 'written_by' is 'thread'; use one of 'invocation', 'workgroup', 'any' "
        "(see docs/kernels.md)"
    )
    m = scale_manifest(length="len(z)", workgroups="ceil(shape(q, 0) / 256)")
    assert wgsl.validate_job({"shader": SCALE, "manifest": m}, {}) == [
        "binding 1 length: 'len(z)' reads the size of 'z', which is not an input of the "
        "manifest (inputs: x)",
        "workgroups[0]: 'ceil(shape(q, 0) / 256)' reads the size of 'q', which is not an "
        "input of the manifest (inputs: x)",
    ]
    m = scale_manifest(length="shape(x, 1)")
    assert only(unit_errors(SCALE, m, N, N)) == (
        "output 'y' length: 'shape(x, 1)': input 'x' has 1 dimension(s), no dimension 1"
    )
    m = scale_manifest(length="len(x, 2)")
    assert only(wgsl.validate_job({"shader": SCALE, "manifest": m}, {})) == (
        "binding 1 length: 'len(x, 2)': len() takes an input's name: len(input)"
    )
    m = scale_manifest()
    m["bindings"][0]["length"] = "n *"
    assert "binding 0 length: 'n *' does not parse" in only(
        wgsl.validate_job({"shader": SCALE, "manifest": m}, {})
    )


def test_sizes_read_the_inputs_shapes() -> None:
    shader = SCALE.replace("@workgroup_size(256)", "@workgroup_size(16, 16)")
    m = scale_manifest(length="shape(x, 0) * shape(x, 1)")
    m["workgroups"] = ["ceil(shape(x, 1) / 16)", "ceil(shape(x, 0) / 16)", 1]
    params = {"shader": shader, "manifest": m, "n": 40 * 30}
    assert wgsl.validate_unit(params, {"x": ("float32", (40, 30))}) == []
    assert wgsl.flops(params, {"x": ("float32", (40, 30))}) == 1200.0
    m["workgroups"] = [1, "ceil(shape(x, 0) / 16)", 1]  # 16 columns of 30
    assert "would stay zero: dispatch workgroups whose product times 256 is at least 1200" in (
        only(wgsl.validate_unit(params, {"x": ("float32", (40, 30))}))
    )


def test_the_scanner_reads_workgroup_sizes_from_literals_and_constants() -> None:
    sizes = scan(
        "const WG: u32 = 128u;\noverride H = 2;\n"
        "@compute @workgroup_size(WG, H) fn a() {}\n"
        "@compute @workgroup_size(64) fn b() {}\n"
        "@compute @workgroup_size(WG * 2) fn c() {}\n"
    ).workgroup_sizes
    assert sizes == {"a": (128, 2, 1), "b": (64, 1, 1), "c": None}


# ---- turned into an error result by the worker's run ----------------------------------------


def test_unknown_workgroup_size_too_few_workgroups_fails_on_the_worker(gpu: Any) -> None:
    """@workgroup_size(WG * 4) cannot be read at submission; the run sees the zeros."""
    shader = SCALE.replace("@workgroup_size(256)", "@workgroup_size(WG * 4)").replace(
        "struct Params", "const WG: u32 = 64u;\nstruct Params"
    )
    n = 2560
    params = {"shader": shader, "manifest": scale_manifest(workgroups="n / 2560"), "n": n}
    assert wgsl.validate_unit(params, {"x": ("float32", (n,))}) == []
    x = np.arange(1, n + 1, dtype=np.float32)
    with pytest.raises(KernelError) as info:
        run(run_unit(gpu, "wgsl", params, arrays(x=x)))
    assert str(info.value) == (
        "output 'y': 2304 of its 2560 elements (indices 256 to 2559) were never written by "
        "the shader and would come back as zeros: make its 'length' the number of elements "
        "the shader writes, or dispatch enough workgroups to cover them; if the shader leaves "
        "elements at zero on purpose (a histogram, atomics, a sparse result), declare "
        '"written_by": "any" for this output (docs/kernels.md)'
    )
    params["manifest"] = scale_manifest(workgroups="n / 256")
    out = run(run_unit(gpu, "wgsl", params, arrays(x=x)))
    np.testing.assert_array_equal(to_numpy(out["y"]), 2 * x)


def test_zero_padding_a_shader_that_writes_less_fails_on_the_worker(gpu: Any) -> None:
    """The issue's length n when the shader writes less: the reduction's output declared as
    one element per invocation. The dispatch covers n, so only the run can tell."""
    n = 1024
    params = {"shader": PARTIAL, "manifest": partial_manifest("len(x)", written_by=None)}
    assert wgsl.validate_unit(params, {"x": ("float32", (n,))}) == []
    x = np.ones(n, dtype=np.float32)
    with pytest.raises(KernelError) as info:
        run(run_unit(gpu, "wgsl", params, arrays(x=x)))
    assert str(info.value).startswith(
        "output 'partial': 1020 of its 1024 elements (indices 4 to 1023) were never written"
    )
    params["manifest"] = partial_manifest("ceil(len(x) / 256)")
    out = run(run_unit(gpu, "wgsl", params, arrays(x=x)))
    np.testing.assert_array_equal(to_numpy(out["partial"]), [256.0] * 4)


def test_a_shader_bounded_by_a_smaller_param_fails_on_the_worker(gpu: Any) -> None:
    """Output length m, shader guarded by its own n < m: the tail is never written."""
    shader = SCALE.replace("struct Params { n: u32 }", "struct Params { n: u32, m: u32 }")
    m = scale_manifest(length="m", workgroups="ceil(m / 256)")
    m["bindings"][2]["uniform"].append({"name": "m", "type": "u32"})
    params = {"shader": shader, "manifest": m, "n": 1000, "m": 1200}
    x = np.ones(1200, dtype=np.float32)
    assert wgsl.validate_unit(params, {"x": ("float32", (1200,))}) == []
    with pytest.raises(KernelError, match=r"^output 'y': 200 of its 1200 elements \(indices 1000 "):
        run(run_unit(gpu, "wgsl", params, arrays(x=x)))


def test_written_zeros_and_declared_sparse_outputs_are_not_flagged(gpu: Any) -> None:
    n = 512
    params = {"shader": SCALE, "manifest": scale_manifest(), "n": n}
    x = np.zeros(n, dtype=np.float32)
    x[::3] = 1.0  # two thirds of the outputs are zeros the shader wrote
    out = run(run_unit(gpu, "wgsl", params, arrays(x=x)))
    np.testing.assert_array_equal(to_numpy(out["y"]), 2 * x)
    histogram = """
    @group(0) @binding(0) var<storage, read> x: array<u32>;
    @group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>>;
    @compute @workgroup_size(64)
    fn main(@builtin(global_invocation_id) id: vec3<u32>) {
        if (id.x < arrayLength(&x)) { atomicAdd(&bins[x[id.x]], 1u); }
    }
    """
    manifest = {
        "entry": "main",
        "bindings": [
            {"binding": 0, "input": "x"},
            {"binding": 1, "output": "bins", "type": "u32", "length": 8, "written_by": "any"},
        ],
        "workgroups": ["ceil(len(x) / 64)", 1, 1],
    }
    values = np.array([1, 1, 3, 5, 5, 5], dtype=np.uint32)  # bins 0, 2, 4, 6, 7 stay zero
    out = run(run_unit(gpu, "wgsl", {"shader": histogram, "manifest": manifest}, arrays(x=values)))
    np.testing.assert_array_equal(to_numpy(out["bins"]), np.bincount(values, minlength=8))


def test_the_worker_refuses_a_dispatch_that_cannot_cover_before_running_it(gpu: Any) -> None:
    """A unit that reached a worker without the coordinator's check (an older coordinator, a
    direct run) is refused by the same rule, with the same numbers, before any dispatch."""
    params = {"shader": SCALE, "manifest": scale_manifest(workgroups="n / 2560"), "n": N}
    with pytest.raises(KernelError) as info:
        run(run_unit(gpu, "wgsl", params, arrays(x=np.ones(N, dtype=np.float32))))
    assert str(info.value) == only(unit_errors(SCALE, scale_manifest(workgroups="n / 2560"), N, N))
    assert str(info.value).startswith("output 'y' has 25600 elements, but workgroups [10, 1, 1]")

"""A researcher's own kernel for tests: SAXPY as WGSL, with its manifest."""

SAXPY = """
struct Params {
    a: f32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < p.n) {
        out[i] = p.a * x[i] + y[i];
    }
}
"""
SAXPY_MANIFEST = {
    "entry": "main",
    "bindings": [
        {"binding": 0, "input": "x"},
        {"binding": 1, "input": "y"},
        {"binding": 2, "output": "out", "type": "f32", "length": "n"},
        {"binding": 3, "uniform": [{"name": "a", "type": "f32"}, {"name": "n", "type": "u32"}]},
    ],
    "workgroups": ["ceil(n / 64)", 1, 1],
}

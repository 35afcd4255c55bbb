// A 31-tap 1-D convolution ("valid" mode): y[i] = sum over k of w[k] * x[i + k],
// for i from 0 to n - 1, where x holds n + 30 samples and w the 31 taps.

struct Params {
    n: u32,  // outputs to compute
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TAPS: u32 = 31u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= p.n) {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < TAPS; k = k + 1u) {
        acc = acc + w[k] * x[i + k];
    }
    y[i] = acc;
}

// y[r] = LayerNorm(x[r]) * gamma + beta: one workgroup per row.

struct Dims {
    rows: u32,
    hidden: u32,
    eps: f32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) group: vec3<u32>) {
    let base = group.x * dims.hidden;
    let h = dims.hidden;
    var row: array<f32, PER>;
    for (var i = 0u; i < PER; i++) {
        let j = lid + i * WG;
        if (j < h) {
            row[i] = x[base + j];
        }
    }
    normalize_row(lid, &row, h, dims.eps);
    for (var i = 0u; i < PER; i++) {
        let j = lid + i * WG;
        if (j < h) {
            y[base + j] = row[i] * gamma[j] + beta[j];
        }
    }
}

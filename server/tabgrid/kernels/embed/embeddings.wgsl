// x[t] = LayerNorm(word[token t] + position[t % L] + token_type[0]): one workgroup per token.

struct Dims {
    tokens: u32,
    seq: u32,
    hidden: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> word: array<f32>;
@group(0) @binding(2) var<storage, read> position: array<f32>;
@group(0) @binding(3) var<storage, read> token_type: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<uniform> dims: Dims;

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) group: vec3<u32>) {
    let t = group.x;
    let h = dims.hidden;
    // The driver checked every id against the vocabulary before dispatch.
    let w = u32(ids[t]) * h;
    let p = (t % dims.seq) * h;
    var row: array<f32, PER>;
    for (var i = 0u; i < PER; i++) {
        let j = lid + i * WG;
        if (j < h) {
            row[i] = word[w + j] + position[p + j] + token_type[j];
        }
    }
    normalize_row(lid, &row, h, dims.eps);
    for (var i = 0u; i < PER; i++) {
        let j = lid + i * WG;
        if (j < h) {
            x[t * h + j] = row[i] * gamma[j] + beta[j];
        }
    }
}

// out[s] = normalize(mean of x[s, p] over p < length[s]): one workgroup per text.

struct Dims {
    texts: u32,
    seq: u32,
    hidden: u32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> lengths: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> shared_length: u32;

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) group: vec3<u32>) {
    let s = group.x;
    let h = dims.hidden;
    if (lid == 0u) {
        shared_length = u32(lengths[s]);
    }
    let length = workgroupUniformLoad(&shared_length);
    let base = s * dims.seq * h;
    var row: array<f32, PER>;
    var squares = 0.0;
    for (var i = 0u; i < PER; i++) {
        let j = lid + i * WG;
        if (j < h) {
            var acc = 0.0;
            for (var p = 0u; p < length; p++) {
                acc += x[base + p * h + j];
            }
            row[i] = acc / f32(length);
            squares += row[i] * row[i];
        }
    }
    // As torch.nn.functional.normalize: divide by max(norm, 1e-12).
    let norm = max(sqrt(workgroup_sum(lid, squares)), 1e-12);
    for (var i = 0u; i < PER; i++) {
        let j = lid + i * WG;
        if (j < h) {
            out[s * h + j] = row[i] / norm;
        }
    }
}

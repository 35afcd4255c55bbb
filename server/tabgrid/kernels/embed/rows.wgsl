// Shared by the row-wise passes of the embed kernel (embeddings, layer norm, pooling): one
// workgroup of WG invocations per row, each holding up to PER of the row's elements (element
// j lives in invocation j % WG, slot j / WG). The driver prepends this to each pass's source.

const WG: u32 = 128u;
const PER: u32 = 8u;

var<workgroup> partial: array<f32, WG>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier(); // every invocation has read the total before partial is reused
    return total;
}

// (x - mean) / sqrt(variance + eps) over a row of h elements, variance from the centred
// values (two passes: one pass loses digits when the mean is large against the spread).
fn normalize_row(lid: u32, row: ptr<function, array<f32, PER>>, h: u32, eps: f32) {
    var s = 0.0;
    for (var i = 0u; i < PER; i++) {
        if (lid + i * WG < h) {
            s += (*row)[i];
        }
    }
    let mean = workgroup_sum(lid, s) / f32(h);
    var q = 0.0;
    for (var i = 0u; i < PER; i++) {
        if (lid + i * WG < h) {
            let d = (*row)[i] - mean;
            q += d * d;
        }
    }
    let inv = 1.0 / sqrt(workgroup_sum(lid, q) / f32(h) + eps);
    for (var i = 0u; i < PER; i++) {
        (*row)[i] = ((*row)[i] - mean) * inv;
    }
}

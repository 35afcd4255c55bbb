// Sum of a float32 array, as one partial sum per workgroup.
// Each workgroup of 256 invocations loads 512 elements (two each), then halves the number
// of live values every step (a tree) until one is left, which it writes to partial[group].
// The host adds the partial sums (in float64) for the total.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;

const WG: u32 = 256u;
var<workgroup> scratch: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let n = arrayLength(&x);
    let i = group.x * (2u * WG) + local.x;
    var value = 0.0;
    if (i < n) {
        value = x[i];
    }
    if (i + WG < n) {
        value = value + x[i + WG];
    }
    scratch[local.x] = value;
    workgroupBarrier();
    for (var live = WG / 2u; live > 0u; live = live / 2u) {
        if (local.x < live) {
            scratch[local.x] = scratch[local.x] + scratch[local.x + live];
        }
        workgroupBarrier();
    }
    if (local.x == 0u) {
        partial[group.x] = scratch[0];
    }
}

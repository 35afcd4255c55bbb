// c = a @ b for row-major f32 matrices a (m x k), b (k x n), c (m x n).
// Each 16x16 workgroup computes one 16x16 tile of c, staging 16x16 tiles of a and b in
// workgroup memory so that every element loaded from storage is used 16 times.

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    pad: u32,
}

const TILE: u32 = 16u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> tile_a: array<array<f32, 16>, 16>;
var<workgroup> tile_b: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) local: vec3<u32>,
        @builtin(workgroup_id) group: vec3<u32>) {
    let row = group.y * TILE + local.y;
    let col = group.x * TILE + local.x;
    var acc = 0.0;
    let tiles = (dims.k + TILE - 1u) / TILE;
    for (var t = 0u; t < tiles; t = t + 1u) {
        // Out-of-range elements load as zero so edge tiles need no special case below.
        let ka = t * TILE + local.x;
        var va = 0.0;
        if (row < dims.m && ka < dims.k) {
            va = a[row * dims.k + ka];
        }
        tile_a[local.y][local.x] = va;
        let kb = t * TILE + local.y;
        var vb = 0.0;
        if (kb < dims.k && col < dims.n) {
            vb = b[kb * dims.n + col];
        }
        tile_b[local.y][local.x] = vb;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i = i + 1u) {
            acc = acc + tile_a[local.y][i] * tile_b[i][local.x];
        }
        workgroupBarrier();
    }
    if (row < dims.m && col < dims.n) {
        c[row * dims.n + col] = acc;
    }
}

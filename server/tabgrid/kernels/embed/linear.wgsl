// y = x w^T + b (then GELU, or plus a residual r) for row-major f32 x (m x k), w (n x k) as
// safetensors stores a linear layer's weight [out, in], b (n), y and r (m x n).
// Each 16x16 workgroup computes a 64x64 tile of y, 4x4 outputs per invocation, staging
// 64x16 slices of x and w in workgroup memory: every element loaded from storage is used 64
// times, and each invocation does 16 multiply-adds per pair of workgroup loads.

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    pad: u32,
}

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;
@group(0) @binding(5) var<storage, read> r: array<f32>;

// Stored k-major so that the inner loop reads four consecutive rows or columns as a vec4.
var<workgroup> tile_x: array<array<vec4<f32>, 16>, BK>;
var<workgroup> tile_w: array<array<vec4<f32>, 16>, BK>;

// The 4x4 outputs of invocation (lx, ly): rows row0 + 4 ly + i, columns col0 + 4 lx + j.
fn product(local: vec3<u32>, lid: u32, row0: u32, col0: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let tiles = (dims.k + BK - 1u) / BK;
    for (var t = 0u; t < tiles; t++) {
        let k0 = t * BK;
        // 1024 elements of each slice, 4 per invocation; out of range loads as zero.
        for (var e = lid; e < BM * BK; e += 256u) {
            let i = e / BK;
            let kk = e % BK;
            let kg = k0 + kk;
            var vx = 0.0;
            if (row0 + i < dims.m && kg < dims.k) {
                vx = x[(row0 + i) * dims.k + kg];
            }
            tile_x[kk][i / 4u][i % 4u] = vx;
            var vw = 0.0;
            if (col0 + i < dims.n && kg < dims.k) {
                vw = w[(col0 + i) * dims.k + kg];
            }
            tile_w[kk][i / 4u][i % 4u] = vw;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = tile_x[kk][local.y];
            let c = tile_w[kk][local.x];
            acc[0] = fma(vec4(a.x), c, acc[0]);
            acc[1] = fma(vec4(a.y), c, acc[1]);
            acc[2] = fma(vec4(a.z), c, acc[2]);
            acc[3] = fma(vec4(a.w), c, acc[3]);
        }
        workgroupBarrier();
    }
    return acc;
}

// erf(x) to 6.5e-8 (4.2e-7 evaluated in f32): the rational approximation on [-4, 4] that
// Eigen and XLA use for float; beyond 4, erf is 1 to within f32's precision. WGSL has no erf.
fn erf(v: f32) -> f32 {
    let x = clamp(v, -4.0, 4.0);
    let x2 = x * x;
    var p = -2.72614225801306e-10;
    p = fma(p, x2, 2.77068142495902e-08);
    p = fma(p, x2, -2.10102402082508e-06);
    p = fma(p, x2, -5.69250639462346e-05);
    p = fma(p, x2, -7.34990630326855e-04);
    p = fma(p, x2, -2.95459980854025e-03);
    p = fma(p, x2, -1.60960333262415e-02);
    var q = -1.45660718464996e-05;
    q = fma(q, x2, -2.13374055278905e-04);
    q = fma(q, x2, -1.68282697438203e-03);
    q = fma(q, x2, -7.37332916720468e-03);
    q = fma(q, x2, -1.42647390514189e-02);
    return x * p / q;
}

// BERT's exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf(v * 0.7071067811865476));
}

@compute @workgroup_size(16, 16, 1)
fn plain(@builtin(local_invocation_id) local: vec3<u32>,
         @builtin(local_invocation_index) lid: u32,
         @builtin(workgroup_id) group: vec3<u32>) {
    let row0 = group.y * BM;
    let col0 = group.x * BN;
    let acc = product(local, lid, row0, col0);
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + 4u * local.y + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + 4u * local.x + j;
            if (row < dims.m && col < dims.n) {
                y[row * dims.n + col] = acc[i][j] + b[col];
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn with_gelu(@builtin(local_invocation_id) local: vec3<u32>,
             @builtin(local_invocation_index) lid: u32,
             @builtin(workgroup_id) group: vec3<u32>) {
    let row0 = group.y * BM;
    let col0 = group.x * BN;
    let acc = product(local, lid, row0, col0);
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + 4u * local.y + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + 4u * local.x + j;
            if (row < dims.m && col < dims.n) {
                y[row * dims.n + col] = gelu(acc[i][j] + b[col]);
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn with_residual(@builtin(local_invocation_id) local: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(workgroup_id) group: vec3<u32>) {
    let row0 = group.y * BM;
    let col0 = group.x * BN;
    let acc = product(local, lid, row0, col0);
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + 4u * local.y + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + 4u * local.x + j;
            if (row < dims.m && col < dims.n) {
                let at = row * dims.n + col;
                y[at] = acc[i][j] + b[col] + r[at];
            }
        }
    }
}

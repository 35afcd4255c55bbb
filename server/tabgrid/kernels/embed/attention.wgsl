// ctx = softmax(q k^T * scale over keys p < length) v, per text s, head h and query row i.
// q, k, v and ctx are (texts * seq) x hidden, row-major, head h in columns
// h * head_dim ... (h + 1) * head_dim - 1. One workgroup per (64 query rows, head, text),
// one invocation per query row; keys and values pass through workgroup memory KT rows at a
// time and each invocation keeps a running (online) softmax, so every key and value loaded
// from storage serves 64 queries. Query rows past the text's length are padding: they get
// zeros (pooling never reads them).

struct Dims {
    seq: u32,
    hidden: u32,
    head_dim: u32,
    scale: f32,
}

const QT: u32 = 64u;
const KT: u32 = 16u;
const MAX_D: u32 = 64u;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> lengths: array<i32>;
@group(0) @binding(4) var<storage, read_write> ctx: array<f32>;
@group(0) @binding(5) var<uniform> dims: Dims;

var<workgroup> tile_k: array<array<f32, MAX_D>, KT>;
var<workgroup> tile_v: array<array<f32, MAX_D>, KT>;
var<workgroup> shared_length: u32;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) group: vec3<u32>) {
    let i = group.x * QT + lid;
    let hoff = group.y * dims.head_dim;
    let s = group.z;
    let d = dims.head_dim;
    let hidden = dims.hidden;
    if (lid == 0u) {
        shared_length = u32(lengths[s]);
    }
    let length = workgroupUniformLoad(&shared_length);
    let first = s * dims.seq;
    let live = i < length;
    var query: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    if (live) {
        for (var c = 0u; c < d; c++) {
            query[c] = q[(first + i) * hidden + hoff + c] * dims.scale;
        }
    }
    var best = -1e30; // below any score; the first key fades it to exactly 0
    var total = 0.0;
    let tiles = (length + KT - 1u) / KT;
    for (var t = 0u; t < tiles; t++) {
        let j0 = t * KT;
        for (var e = lid; e < KT * d; e += QT) {
            let j = e / d;
            let c = e % d;
            if (j0 + j < length) {
                let at = (first + j0 + j) * hidden + hoff + c;
                tile_k[j][c] = k[at];
                tile_v[j][c] = v[at];
            }
        }
        workgroupBarrier();
        if (live) {
            let count = min(KT, length - j0);
            for (var j = 0u; j < count; j++) {
                var score = 0.0;
                for (var c = 0u; c < d; c++) {
                    score = fma(query[c], tile_k[j][c], score);
                }
                // Rescale what came before when the running maximum grows.
                let top = max(best, score);
                let fade = exp(best - top);
                let weight = exp(score - top);
                total = total * fade + weight;
                for (var c = 0u; c < d; c++) {
                    acc[c] = fma(acc[c], fade, weight * tile_v[j][c]);
                }
                best = top;
            }
        }
        workgroupBarrier();
    }
    if (i < dims.seq) {
        let row = (first + i) * hidden + hoff;
        for (var c = 0u; c < d; c++) {
            ctx[row + c] = select(0.0, acc[c] / total, live);
        }
    }
}

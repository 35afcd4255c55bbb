// Escape iteration counts of one tile of the Mandelbrot set, one invocation per pixel.
// Pixel coordinates come precomputed from the host so that every device starts from the
// same float32 values; only the iteration itself runs here.

struct Tile {
    width: u32,
    height: u32,
    max_iter: u32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> xs: array<f32>;
@group(0) @binding(1) var<storage, read> ys: array<f32>;
@group(0) @binding(2) var<storage, read_write> iters: array<u32>;
@group(0) @binding(3) var<uniform> tile: Tile;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= tile.width || id.y >= tile.height) {
        return;
    }
    let cx = xs[id.x];
    let cy = ys[id.y];
    var zx = 0.0;
    var zy = 0.0;
    var i = 0u;
    loop {
        if (i >= tile.max_iter) {
            break;
        }
        let x2 = zx * zx;
        let y2 = zy * zy;
        if (x2 + y2 > 4.0) {
            break;
        }
        let next_x = x2 - y2 + cx;
        zy = 2.0 * zx * zy + cy;
        zx = next_x;
        i = i + 1u;
    }
    iters[id.y * tile.width + id.x] = i;
}

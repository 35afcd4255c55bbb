"""``tabgrid.tiling``, as README imports it; the helpers live in ``tabgrid.client.tiling``."""

from tabgrid.client.tiling import assemble_mandelbrot, mandelbrot_units, matmul_units

__all__ = ["assemble_mandelbrot", "mandelbrot_units", "matmul_units"]

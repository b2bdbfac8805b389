"""Grey images with one white square at a known grid cell: the inputs that check a token grid's order."""

from __future__ import annotations

from PIL import Image

GREY = (128, 128, 128)


def bright_cell_image(size: tuple[int, int], row: int, col: int, cell: int) -> Image.Image:
    """A grey image of `size` (width, height) with one white cell×cell square at grid cell (row, col)."""
    image = Image.new("RGB", size, GREY)
    image.paste((255, 255, 255), (col * cell, row * cell, (col + 1) * cell, (row + 1) * cell))
    return image

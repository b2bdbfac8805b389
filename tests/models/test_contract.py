"""The stage contract, checked on every preset small enough for a CPU (timm's forward-intermediates
style): declared grids and widths, one pass equals one pass per stage, a batch equals its items, a
bright patch lands at its cell at every stage (corners included), and the raster conversions are
exact inverses of each other inside the model (what a planting hook relies on)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import stageprobe as sp
from stageprobe.models import PRESETS, HFStageModel, StageModel, describe_stages
from stageprobe.models._stages import capture, replace_stage
from stageprobe.models._tiled import TiledVLModel

# the published-size presets are checked on the meta device only (test_every_preset_describes_…)
CPU_PRESETS = sorted(name for name in PRESETS if not name.endswith("-random"))
GREY = (128, 128, 128)
#: small enough to keep one forward of every tiny preset fast, large enough for several cells
SMALL = (224, 224)


@pytest.fixture(scope="module", params=CPU_PRESETS)
def model(request: pytest.FixtureRequest) -> StageModel:
    return sp.load_model(request.param, device="cpu")


def patch_side(model: StageModel, size: tuple[int, int]) -> tuple[int, int, int]:
    """(rows, cols, input px per cell) of the finest grid for an input of size (height, width)."""
    height, width = size
    _, rows, cols = max((info.grid for info in model.stages_for(height, width)), key=lambda g: g[1])
    assert height // rows == width // cols
    return rows, cols, height // rows


def bright_cell_image(size: tuple[int, int], row: int, col: int, cell: int) -> Image.Image:
    image = Image.new("RGB", (size[1], size[0]), GREY)
    image.paste((255, 255, 255), (col * cell, row * cell, (col + 1) * cell, (row + 1) * cell))
    return image


def sizes_of(model: StageModel) -> list[tuple[int, int]]:
    """(height, width) inputs: a square and a non-square one the model keeps as they are."""
    if model.resizes_to_native_size:  # resized whole to its native size: feed 2× it
        height, width = model.default_image_size
        return [(2 * height, 2 * width)]
    if isinstance(model, TiledVLModel):  # square and non-square images cut into tiles (seams both ways), at
        tile = model.tile_px  # the size the processor resizes them to, so the grid covers the input as it is
        sizes = [model.processed_size(tile * rows, tile * cols) for rows, cols in [(1, 1), (1, 2), (2, 3)]]
        return list(dict.fromkeys(sizes))
    height, width = SMALL
    cell = patch_side(model, (height, width))[2]
    return [(height, width), (height - 4 * cell, width)]


def test_stages_have_the_declared_grid_and_width(model: StageModel) -> None:
    for height, width in sizes_of(model):
        features = model.extract([Image.new("RGB", (width, height), GREY)])
        infos = model.stages_for(height, width)
        assert list(features) == [info.name for info in infos]
        resized = model.resizes_to_native_size
        seen_h, seen_w = model.default_image_size if resized else (height, width)
        for info in infos:
            assert tuple(features[info.name].shape) == (1, *info.grid, info.dim), info.name
            # every stage's grid covers the whole (resized) input: nothing cropped
            assert (info.grid[1] * info.stride_px, info.grid[2] * info.stride_px) == (seen_h, seen_w), info.name


def test_all_stages_at_once_equal_each_stage_alone(model: StageModel) -> None:
    images = [bright_cell_image(SMALL, 1, 2, 16)]
    together = model.extract(images)
    for name in together:
        alone = model.extract(images, stages=[name])
        assert list(alone) == [name]
        torch.testing.assert_close(alone[name], together[name], rtol=1e-5, atol=1e-5, msg=name)


def test_batch_of_four_equals_four_batches_of_one(model: StageModel) -> None:
    images = [bright_cell_image(SMALL, r, c, 16) for r, c in [(0, 0), (3, 1), (5, 6), (2, 9)]]
    batched = model.extract(images)
    for b, image in enumerate(images):
        for name, grid in model.extract([image]).items():
            torch.testing.assert_close(batched[name][b], grid[0], rtol=1e-4, atol=1e-4, msg=name)


def test_bright_patch_lands_at_its_cell_in_every_stage(model: StageModel) -> None:
    assert_bright_cells_land(model, sizes_of(model))


def seam_cells(model: StageModel, rows: int, cols: int) -> list[tuple[int, int]]:
    """The four patch cells around the first corner where tiles meet (none for an untiled model)."""
    if not isinstance(model, TiledVLModel):
        return []
    side = model.tile_px // model.patch_px
    return [(side + dr, side + dc) for dr in (-1, 0) for dc in (-1, 0)] if rows > side and cols > side else []


def assert_bright_cells_land(model: StageModel, sizes: list[tuple[int, int]]) -> None:
    for size in sizes:
        rows, cols, cell = patch_side(model, size)
        cells = [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1), (rows // 2, cols // 3)]
        cells += seam_cells(model, rows, cols)
        images = [Image.new("RGB", (size[1], size[0]), GREY)]
        images += [bright_cell_image(size, r, c, cell) for r, c in cells]
        features = model.extract(images)
        for name, grid in features.items():
            _, h, w = grid.shape[1:4]
            for k, (row, col) in enumerate(cells, start=1):
                change = (grid[k, 0] - grid[0, 0]).norm(dim=-1)
                assert divmod(int(change.argmax()), w) == (row * h // rows, col * w // cols), (name, size, row, col)


def test_raster_conversions_invert_each_other_on_the_models_own_tensors(model: StageModel) -> None:
    if not isinstance(model, HFStageModel):
        pytest.skip("no module holds the pixel baseline's tokens")
    size = model.default_image_size
    images = [bright_cell_image(size, 0, 1, 16), bright_cell_image(size, 2, 2, 16)]
    inputs, layout = model.prepare_batch(images, None)
    points = [model.stage_point(info.name, *size) for info in model.stages_for(*size)]
    raw: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), capture(points, raw):
        model.run_forward(inputs, [p.name for p in points])
    for point in points:
        grid = point.to_raster(raw[point.name], layout)
        assert grid.shape[:2] == (len(images), 1), point.name
        torch.testing.assert_close(point.from_raster(grid, layout, like=raw[point.name]), raw[point.name],
                                   rtol=0, atol=0, msg=point.name)


def test_a_cell_planted_before_the_connector_reaches_only_its_merged_cell(model: StageModel) -> None:
    pre, post = model.connector_stages
    if pre not in model.stage_names:
        pytest.skip("no connector")
    assert isinstance(model, HFStageModel)
    size = model.default_image_size
    infos = {info.name: info for info in model.stages_for(*size)}
    factor = infos[post].stride_px // infos[pre].stride_px
    images = [bright_cell_image(size, 3, 3, 16)]
    _, layout = model.prepare_batch(images, None)
    clean = model.extract(images, stages=[post])[post]

    def erase_cell(grid: torch.Tensor) -> torch.Tensor:
        grid = grid.clone()
        grid[:, :, 5, 2] = 0
        return grid

    with replace_stage(model.stage_point(pre), layout, erase_cell):
        planted = model.extract(images, stages=[post])[post]
    moved = (planted - clean)[0, 0].norm(dim=-1)
    # patch cell (5, 2) lies in merged cell (5 // factor, 2 // factor), and in no other
    assert torch.nonzero(moved > 1e-6).tolist() == [[5 // factor, 2 // factor]]


def test_every_preset_describes_its_stages_without_weights() -> None:
    for name in PRESETS:
        infos = describe_stages(name, 448, 448)
        assert infos and all(info.tokens > 0 for info in infos), name


def test_every_family_registers_exactly_what_the_catalog_declares() -> None:
    from stageprobe.models import ARCHITECTURES, _catalog
    from stageprobe.models.registry import SKELETONS

    for family in _catalog.FAMILIES:
        registered = {name for name, preset in PRESETS.items() if preset.factory.__module__ == family.module}
        assert registered == set(family.presets), family.module
        loads = {t for t, factory in ARCHITECTURES.items() if factory.__module__ == family.module}
        assert loads == set(family.model_types), family.module
    assert set(SKELETONS) == set(ARCHITECTURES)
    assert [PRESETS[n].description for n in _catalog.preset_descriptions()] == list(
        _catalog.preset_descriptions().values())


def test_a_preset_missing_from_the_catalog_cannot_register() -> None:
    from stageprobe.models.registry import register_preset

    with pytest.raises(KeyError, match="not declared"):
        register_preset("no-such-preset")

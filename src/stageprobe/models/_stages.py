"""Stages declared as data: where each stage is read, and how its tokens map to the raster grid.

Every adapter built on `transformers` describes its stages as a table of `StageSpec` rows (name,
module path, input/output hook, grid, token order to undo). One capture helper reads them in one
forward pass, and one pair of conversions (`to_raster`, `from_raster`) maps between the order a
module holds its tokens in and the raster grid `(B, T, H, W, D)` — the same pair a hook that
*replaces* a stage's tensor (planting a known loss) uses to write a modified grid back.

Token orders (`StageSpec.order`):

* ``merge_units`` — one row per patch, images concatenated, each in the processor's 2×2
  merge-window order ``(t, h/m, w/m, m, m)``; under window attention (`windowed`) the merge units
  are further permuted into attention-window order.
* ``merged`` — one row per merged patch, images concatenated, ``(t, h/m, w/m)``; window-permuted
  when `windowed`.
* ``text`` — the LLM sequence ``(B, L, D)``; the visual tokens sit where ``visual_mask`` is true.
* ``prefixed`` — a ViT sequence ``(B, prefix + H·W, D)``: CLS / register tokens, then raster patches
  (on the merged grid, ``H·W`` merged cells: a pooled sequence).
* ``indexed`` — any order the adapter maps cell by cell: ``Layout.indices[spec.index]`` holds, for each
  raster cell ``(B, T, H, W)``, the row of the module's tensor (flattened over all axes but the last)
  that holds its token. Tiled inputs use it: tiles of one image form one raster mosaic, and tokens
  no cell maps to (CLS, thumbnail / global images, row newlines) are left out of the grid and kept
  as they are when a grid is written back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

HookKind = Literal["input", "output"]
TokenOrder = Literal["merge_units", "merged", "text", "prefixed", "indexed"]


@dataclass(frozen=True)
class StageSpec:
    """One row of an adapter's stage table."""

    name: str
    #: dotted path of the module from the adapter's root module (`hf_model`)
    module: str
    #: read the module's first positional input ("input") or its output ("output")
    hook: HookKind
    #: "patch" (stride = patch px) or "merged" (stride = patch px × merge)
    grid: Literal["patch", "merged"]
    order: TokenOrder
    dim: int
    description: str
    #: tokens are in attention-window order (Qwen2.5-VL blocks and merger)
    windowed: bool = False
    #: for order "indexed": the `Layout.indices` entry that maps raster cells to this module's tokens
    index: str = ""


@dataclass(frozen=True)
class Layout:
    """What one batch's token orders depend on; made from the processed inputs of that batch."""

    #: patch grid (T, H, W) of each image or clip, in batch order
    grids: tuple[tuple[int, int, int], ...]
    merge: int = 1
    #: merge-unit permutation applied before the first windowed block (transformers' window_index)
    window_order: torch.Tensor | None = None
    #: (B, L) true at the LLM positions that hold visual tokens
    visual_mask: torch.Tensor | None = None
    #: CLS / register tokens ahead of the patches in a ViT sequence
    prefix: int = 0
    #: for "indexed" stages: name → (B, T, H, W) row of the flattened module tensor at each raster cell
    indices: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StagePoint:
    """Where a stage lives in a loaded model: the module, which side of it, and the conversions."""

    spec: StageSpec
    module: nn.Module

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hook(self) -> HookKind:
        return self.spec.hook

    def to_raster(self, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
        """Module order → raster grid (B, T, H, W, D), on the tensor's device and dtype."""
        return to_raster(self.spec, tensor, layout)

    def from_raster(self, grid: torch.Tensor, layout: Layout, like: torch.Tensor) -> torch.Tensor:
        """Raster grid → the module's order; `like` is the tensor it replaces (keeps text tokens)."""
        return from_raster(self.spec, grid, layout, like)


def _restore_windows(spec: StageSpec, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
    if not spec.windowed or layout.window_order is None:
        return tensor
    restore = torch.argsort(layout.window_order.to(tensor.device))
    unit = 1 if spec.order == "merged" else layout.merge**2
    return tensor.reshape(-1, unit, tensor.shape[-1])[restore].reshape(-1, tensor.shape[-1])


def _apply_windows(spec: StageSpec, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
    if not spec.windowed or layout.window_order is None:
        return tensor
    unit = 1 if spec.order == "merged" else layout.merge**2
    order = layout.window_order.to(tensor.device)
    return tensor.reshape(-1, unit, tensor.shape[-1])[order].reshape(-1, tensor.shape[-1])


def to_raster(spec: StageSpec, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
    m = layout.merge
    if spec.order == "indexed":
        return tensor.reshape(-1, tensor.shape[-1])[layout.indices[spec.index].to(tensor.device)]
    if spec.order == "prefixed":
        _, h, w = layout.grids[0]
        if spec.grid == "merged":  # a pooled sequence (Gemma 3's 4×4 average pool): merged raster
            h, w = h // m, w // m
        return tensor[:, layout.prefix :].reshape(tensor.shape[0], 1, h, w, tensor.shape[-1])
    if spec.order == "text":
        assert layout.visual_mask is not None, "text-order stages need the visual-token mask"
        mask = layout.visual_mask.to(tensor.device)
        rows = [tensor[b][mask[b]].reshape(t, h // m, w // m, -1) for b, (t, h, w) in enumerate(layout.grids)]
        return torch.stack(rows)
    tensor = _restore_windows(spec, tensor, layout)
    merged = spec.order == "merged"
    sizes = [t * h * w // (m * m if merged else 1) for t, h, w in layout.grids]
    grids = []
    for chunk, (t, h, w) in zip(torch.split(tensor, sizes), layout.grids, strict=True):
        if merged:
            grids.append(chunk.reshape(t, h // m, w // m, -1))
        else:
            blocks = chunk.reshape(t, h // m, w // m, m, m, -1)
            grids.append(blocks.permute(0, 1, 3, 2, 4, 5).reshape(t, h, w, -1))
    return torch.stack(grids)


def from_raster(spec: StageSpec, grid: torch.Tensor, layout: Layout, like: torch.Tensor) -> torch.Tensor:
    m = layout.merge
    grid = grid.to(device=like.device, dtype=like.dtype)
    if spec.order == "indexed":
        rows = like.reshape(-1, like.shape[-1]).clone()
        rows[layout.indices[spec.index].to(like.device).reshape(-1)] = grid.reshape(-1, grid.shape[-1])
        return rows.reshape(like.shape)
    if spec.order == "prefixed":
        patches = grid.reshape(grid.shape[0], -1, grid.shape[-1])
        return torch.cat([like[:, : layout.prefix], patches], dim=1)
    if spec.order == "text":
        assert layout.visual_mask is not None, "text-order stages need the visual-token mask"
        mask = layout.visual_mask.to(like.device)
        out = like.clone()
        for b in range(grid.shape[0]):
            out[b, mask[b]] = grid[b].reshape(-1, grid.shape[-1])
        return out
    rows = []
    for item in grid:
        t, h, w, d = item.shape
        if spec.order == "merged":
            rows.append(item.reshape(-1, d))
        else:
            blocks = item.reshape(t, h // m, m, w // m, m, d).permute(0, 1, 3, 2, 4, 5)
            rows.append(blocks.reshape(-1, d))
    return _apply_windows(spec, torch.cat(rows), layout)


class StopForward(Exception):
    """Raised after the last needed stage: later layers would compute unused output."""


@contextlib.contextmanager
def capture(
    points: Sequence[StagePoint], store: dict[str, torch.Tensor], stop_after: str | None = None
) -> Iterator[None]:
    """Hooks that copy each stage's tensor into `store` (module order) while the block runs.

    `stop_after` names a stage after whose capture the forward is cut short; the `StopForward`
    it raises is swallowed here.
    """

    def keeper(name: str) -> Callable[..., None]:
        def keep(_module: nn.Module, args: Any, output: Any = None) -> None:
            value = args[0] if output is None else output
            store[name] = value[0] if isinstance(value, tuple) else value
            if name == stop_after:
                raise StopForward

        return keep

    handles = []
    for point in points:
        if point.hook == "input":
            handles.append(point.module.register_forward_pre_hook(keeper(point.name)))
        else:
            handles.append(point.module.register_forward_hook(keeper(point.name)))
    try:
        with contextlib.suppress(StopForward):
            yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replace_stage(
    point: StagePoint, layout: Layout, edit: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """While the block runs, the stage's tensor is swapped for `edit(raster grid)` written back in
    the module's order (a planted loss); downstream modules read the edited tensor."""

    def replace(tensor: torch.Tensor) -> torch.Tensor:
        return point.from_raster(edit(point.to_raster(tensor, layout)), layout, like=tensor)

    def on_input(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (replace(args[0]), *args[1:])

    def on_output(_module: nn.Module, _args: Any, output: Any) -> Any:
        return (replace(output[0]), *output[1:]) if isinstance(output, tuple) else replace(output)

    if point.hook == "input":
        handle = point.module.register_forward_pre_hook(on_input)
    else:
        handle = point.module.register_forward_hook(on_output)
    try:
        yield
    finally:
        handle.remove()

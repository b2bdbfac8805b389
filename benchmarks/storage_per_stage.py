"""Disk a feature store needs: tokens × width × bytes per stage, per image and per dataset.

The stage list comes from the model itself (`stages_for`), built on the `meta` device so even the
7B architecture costs no memory and no weights; a feature store adds only a small header per
shard file and one JSON record per shard on top of these numbers.

    python benchmarks/storage_per_stage.py                          # Qwen2.5-VL-7B, 448 px, 5,000 images
    python benchmarks/storage_per_stage.py --stages 'vision.pre_merge' 'language.layer.*' --store-dtype bf16
    python benchmarks/storage_per_stage.py --recipes                # the disk-budget recipes of docs/scale.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from stageprobe.features.store import STORE_DTYPES, resolve_store_dtype
from stageprobe.models import StageInfo, load_model, select_stages

#: (what it keeps, --stages patterns, store dtype) — the recipes docs/scale.md lists
RECIPES: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("every stage", None, "float16"),
    ("every stage, fp32", None, "float32"),
    ("full-attention ViT blocks, merge, every LLM layer",
     ("vision.patch_embed", "vision.block.7", "vision.block.15", "vision.block.23", "vision.pre_merge",
      "vision.post_merge", "language.layer.*", "language.norm"), "float16"),
    ("every 4th ViT block, merge, every 4th LLM layer",
     ("vision.patch_embed", "vision.block.3", "vision.block.7", "vision.block.11", "vision.block.15",
      "vision.block.19", "vision.block.23", "vision.block.27", "vision.pre_merge", "vision.post_merge",
      "language.layer.[048]", "language.layer.1[26]", "language.layer.2[047]", "language.norm"), "float16"),
    ("pre/post merge + every LLM layer", ("vision.pre_merge", "vision.post_merge", "language.layer.*"), "float16"),
    ("merged grid only (post-merge + LLM)", ("vision.post_merge", "language.*"), "float16"),
    ("pre/post merge + 4 LLM layers", ("vision.pre_merge", "vision.post_merge", "language.layer.0",
                                       "language.layer.9", "language.layer.18", "language.layer.27"), "float16"),
)


def stage_bytes(info: StageInfo, store_dtype: str) -> int:
    element = STORE_DTYPES[resolve_store_dtype(store_dtype)].itemsize
    return info.tokens * info.dim * element


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def stage_table(infos: Sequence[StageInfo], store_dtype: str, images: int) -> str:
    """Markdown table; consecutive stages of one shape are folded into one row."""
    lines = [f"| stages | tokens × width | per stage per image ({store_dtype}) | per image, all of them "
             f"| per {images:,} images |", "|---|---|---|---|---|"]
    groups: list[list[StageInfo]] = []
    for info in infos:
        if groups and (groups[-1][0].tokens, groups[-1][0].dim) == (info.tokens, info.dim):
            groups[-1].append(info)
        else:
            groups.append([info])
    for group in groups:
        each = stage_bytes(group[0], store_dtype)
        names = group[0].name if len(group) == 1 else f"{group[0].name} … {group[-1].name} ({len(group)})"
        lines.append(f"| {names} | {group[0].tokens} × {group[0].dim} | {human(each)} | "
                     f"{human(each * len(group))} | {human(each * len(group) * images)} |")
    total = sum(stage_bytes(info, store_dtype) for info in infos)
    lines.append(f"| **total, {len(infos)} stages** | | | **{human(total)}** | **{human(total * images)}** |")
    return "\n".join(lines)


def recipe_table(infos: Sequence[StageInfo], images: int) -> str:
    names = [info.name for info in infos]
    by_name = {info.name: info for info in infos}
    lines = [f"| keeps | `--stages` | `--store-dtype` | stages | per image | per {images:,} images |",
             "|---|---|---|---|---|---|"]
    for label, patterns, dtype in RECIPES:
        chosen = select_stages(names, patterns)
        per_image = sum(stage_bytes(by_name[name], dtype) for name in chosen)
        flags = "(all)" if patterns is None else " ".join(f"`{p}`" for p in patterns)
        lines.append(f"| {label} | {flags} | {dtype} | {len(chosen)} | {human(per_image)} | "
                     f"{human(per_image * images)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-vl-7b-random")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--images", type=int, default=5000, help="dataset size to project to")
    parser.add_argument("--stages", nargs="*", default=None, help="stage glob patterns (default: all)")
    parser.add_argument("--store-dtype", default="float16")
    parser.add_argument("--recipes", action="store_true", help="also print the disk-budget recipes")
    args = parser.parse_args()

    model = load_model(args.model, device="meta")  # shapes only: no weights, no memory
    infos = model.stages_for(args.image_size, args.image_size)
    chosen = set(select_stages([info.name for info in infos], args.stages))
    print(f"{args.model} at {args.image_size}×{args.image_size} px\n")
    print(stage_table([info for info in infos if info.name in chosen], args.store_dtype, args.images))
    if args.recipes:
        print()
        print(recipe_table(infos, args.images))


if __name__ == "__main__":
    main()

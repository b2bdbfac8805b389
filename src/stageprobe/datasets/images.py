"""`images:DIR`: every image file under a folder (recursive, sorted by path), with no labels.

Each image is centre-cropped to a square and resized to `image_size`, since models take one
size per batch and there are no boxes whose geometry a crop could break. Every file is decoded
once when the dataset is built, so a corrupt or truncated file is reported up front, by name.

Each file is its own group; files are split by rank of their hash (`ranked_splits`), so even a
small folder gives train, val and test their shares. `n` is the number of images needed: a folder
with fewer readable images is an error that says how many are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from stageprobe.datasets._options import check_int, image_problem, load_rgb, seeded_subset
from stageprobe.datasets.base import SPLITS, Dataset, Sample, Split, ranked_splits
from stageprobe.datasets.registry import register_dataset
from stageprobe.errors import UserInputError


def image_extensions() -> set[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


@register_dataset("images", "any folder of images (recursive), no labels", argument="dir")
class ImageFolderDataset(Dataset):
    """Unlabelled images from a folder."""

    name = "images"

    def __init__(
        self,
        directory: str,
        n: int | None = None,
        seed: int = 0,
        image_size: int = 448,
        skip_bad: bool = False,
    ) -> None:
        self.root = Path(directory).resolve()
        self.n = None if n is None else check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.image_size = check_int(self.name, "image_size", image_size, 16)
        self.skip_bad = bool(skip_bad)
        self.class_names = []
        if not self.root.is_dir():
            raise UserInputError(
                f"images: {self.root} is not a folder; give images:DIR with DIR a folder of images"
            )
        extensions = image_extensions()
        candidates = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in extensions
        )
        chosen = [candidates[i] for i in seeded_subset(candidates, self.n, self.seed)]
        self.skipped: list[dict[str, str]] = []
        self.files: list[str] = []
        for relative in chosen:
            problem = image_problem(self.root / relative)
            if problem is None:
                self.files.append(relative)
            elif self.skip_bad:
                self.skipped.append({"record": relative, "reason": problem})
            else:
                raise UserInputError(
                    f"images: {self.root / relative} {problem}; fix or remove it, "
                    "or add :skip_bad=true to the dataset spec (extract: --skip-bad) to leave unreadable images out"
                )
        if self.n is not None and len(self.files) < self.n:
            raise UserInputError(
                f"images: {self.root} holds {len(self.files)} readable images but {self.n} are needed; "
                f"add {self.n - len(self.files)} more or ask for fewer (n={len(self.files)}, or --limit)"
            )
        if len(self.files) < len(SPLITS):
            raise UserInputError(
                f"images: {self.root} holds {len(self.files)} readable images; train, val and test need "
                f"at least {len(SPLITS)}"
            )
        self._splits = ranked_splits([self.key(i) for i in range(len(self.files))])

    def __len__(self) -> int:
        return len(self.files)

    def key(self, index: int) -> str:
        return f"images-{self.files[index]}"

    def sample_group(self, index: int) -> str:
        # Each sample is drawn independently (or is its own file): it is its own source.
        return self.key(index)

    def sample_split(self, index: int) -> Split:
        return self._splits[self.key(index)]

    def spec(self) -> dict[str, Any]:
        options = {"n": self.n, "seed": self.seed, "image_size": self.image_size, "skip_bad": self.skip_bad}
        return {"name": self.name, "source": f"images:{self.root}", "options": options,
                "skipped": self.skipped}

    def __getitem__(self, index: int) -> Sample:
        relative = self.files[index]
        original = load_rgb(self.root / relative, self.name)
        image = ImageOps.fit(original, (self.image_size, self.image_size), Image.Resampling.BICUBIC)
        key = self.key(index)
        target = {"path": relative, "original_size": (original.height, original.width)}
        return Sample(key=key, split=self.sample_split(index), image=image, target=target)

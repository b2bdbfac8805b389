"""`coco:PATH`: COCO instances annotations + images, resized to a fixed square; and `write_coco`.

PATH is an `instances_*.json` file (images in the sibling folder named after its split:
`annotations/instances_val2017.json` → `val2017/`, or the `image_dir` option), or a directory
holding `annotations/instances_*.json` and that image folder.

Images are stretched to `image_size`×`image_size`, so x and y scale separately; `scale` = (sx, sy)
maps original pixel coordinates onto the resized image and so onto the token grid exactly.
Crowd annotations are left out of `boxes`/`labels`, as COCO's own training and evaluation do, and
kept in `crowd_boxes`/`crowd_labels` so an evaluator can ignore detections on them.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from stageprobe.datasets._options import check_int, image_problem, load_rgb, seeded_subset
from stageprobe.datasets.base import Dataset, Sample, Split, stable_split
from stageprobe.datasets.registry import register_dataset
from stageprobe.errors import UserInputError

# COCO's own boxes stray past the image edge by float rounding; more than this is an error.
EDGE_TOLERANCE_PX = 1.0
SKIP_HINT = "or pass skip_bad (--skip-bad) to leave such records out"


@register_dataset("coco", "COCO instances JSON + image folder (val2017 layout)", argument="path")
class CocoDataset(Dataset):
    """COCO-format detection data: boxes, labels and category ids in the resized image."""

    name = "coco"

    def __init__(
        self,
        path: str,
        n: int | None = None,
        seed: int = 0,
        image_size: int = 448,
        categories: str | list[str] | None = None,
        image_dir: str | None = None,
        skip_bad: bool = False,
    ) -> None:
        self.n = None if n is None else check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.image_size = check_int(self.name, "image_size", image_size, 16)
        self.skip_bad = bool(skip_bad)
        self.annotation_file, self.image_dir = _locate(Path(path), image_dir)
        self.categories = _category_names(categories)
        self.skipped: list[dict[str, str]] = []

        self.coco = _read_coco(self.annotation_file)
        category_ids = self._select_categories()
        self.class_names = [c["name"] for c in self.coco.loadCats(category_ids)]
        self._label_of = {cat_id: i for i, cat_id in enumerate(category_ids)}
        self._annotations = self._valid_annotations(set(category_ids))

        image_ids = sorted(self.coco.getImgIds())
        if self.categories is not None:
            image_ids = [i for i in image_ids if self._annotations.get(i)]
        image_ids = [i for i in image_ids if self._image_is_usable(i)]
        if not image_ids:
            raise UserInputError(
                f"coco: no usable images in {self.annotation_file}; check the path and categories"
            )
        keys = [self._key(i) for i in image_ids]
        self.image_ids = [image_ids[i] for i in seeded_subset(keys, self.n, self.seed)]

    def __len__(self) -> int:
        return len(self.image_ids)

    def spec(self) -> dict[str, Any]:
        options = {
            "n": self.n, "seed": self.seed, "image_size": self.image_size, "categories": self.categories,
            "image_dir": str(self.image_dir), "skip_bad": self.skip_bad,
        }
        return {"name": self.name, "source": f"coco:{self.annotation_file}", "options": options,
                "class_names": self.class_names, "skipped": self.skipped}

    def sample_split(self, index: int) -> Split:
        return stable_split(self._key(self.image_ids[index]))

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = load_rgb(self.image_dir / info["file_name"], self.name)
        width, height = image.size
        size = self.image_size
        sx, sy = size / width, size / height
        scale = np.array([sx, sy, sx, sy], dtype=np.float64)

        objects, crowds = [], []
        for ann in self._annotations.get(image_id, []):
            x, y, w, h = ann["bbox"]
            box = np.clip(np.array([x, y, x + w, y + h]), 0, [width, height, width, height]) * scale
            (crowds if ann.get("iscrowd", 0) else objects).append((box, ann["category_id"]))

        boxes = _stack_boxes([b for b, _ in objects])
        category_ids = np.array([c for _, c in objects], dtype=np.int64)
        target = {
            "boxes": boxes,
            "boxes_norm": (boxes / np.float32(size)).astype(np.float32),
            "labels": np.array([self._label_of[c] for c in category_ids], dtype=np.int64),
            "category_ids": category_ids,
            "crowd_boxes": _stack_boxes([b for b, _ in crowds]),
            "crowd_labels": np.array([self._label_of[c] for _, c in crowds], dtype=np.int64),
            "image_id": int(image_id),
            "file_name": info["file_name"],
            "original_size": (height, width),
            "scale": (sx, sy),
            "image_size": (size, size),
        }
        key = self._key(image_id)
        resized = image.resize((size, size), Image.Resampling.BICUBIC)
        return Sample(key=key, split=stable_split(key), image=resized, target=target)

    def _key(self, image_id: int) -> str:
        return f"coco-{image_id}"

    def _select_categories(self) -> list[int]:
        if self.categories is None:
            return sorted(self.coco.getCatIds())
        known = {c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        unknown = [c for c in self.categories if c not in known]
        if unknown:
            raise UserInputError(
                f"coco: no category named {', '.join(map(repr, unknown))} in {self.annotation_file}; "
                f"its categories are: {', '.join(sorted(known))}"
            )
        return sorted(self.coco.getCatIds(catNms=self.categories))

    def _valid_annotations(self, wanted: set[int]) -> dict[int, list[dict[str, Any]]]:
        """Annotations of the wanted categories by image id; bad records raise or are skipped."""
        all_categories = set(self.coco.getCatIds())
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in self.coco.dataset["annotations"]:
            problem = self._annotation_problem(ann, all_categories)
            if problem is not None:
                self._bad(f"annotation id {ann.get('id')} (image id {ann.get('image_id')})", problem,
                          "fix or remove it")
                continue
            if ann["category_id"] in wanted:
                by_image.setdefault(ann["image_id"], []).append(ann)
        return by_image

    def _annotation_problem(self, ann: dict[str, Any], categories: set[int]) -> str | None:
        if ann.get("image_id") not in self.coco.imgs:
            return f"refers to image id {ann.get('image_id')}, which is not in 'images'"
        if ann.get("category_id") not in categories:
            return f"has category id {ann.get('category_id')}, which is not in 'categories'"
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            return f"has bbox {bbox!r}; expected [x, y, width, height]"
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            return f"has a zero-area bbox {bbox}"
        info = self.coco.imgs[ann["image_id"]]
        width, height = info.get("width"), info.get("height")
        if not isinstance(width, int) or not isinstance(height, int):
            return f"is on image id {ann['image_id']}, which has no integer width/height"
        tol = EDGE_TOLERANCE_PX
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            return f"has bbox {bbox} outside its {width}×{height} image"
        return None

    def _image_is_usable(self, image_id: int) -> bool:
        info = self.coco.imgs[image_id]
        file_name = info.get("file_name")
        if not isinstance(file_name, str):
            self._bad(f"image id {image_id}", "has no file_name", "fix the annotation file")
            return False
        path = self.image_dir / file_name
        if not path.is_file():
            self._bad(f"image id {image_id}", f"its file {path} does not exist",
                      "check the image folder (option image_dir)")
            return False
        if self.skip_bad:
            # Decoding every image up front is slow, so it is done only when bad ones are to be
            # skipped; otherwise a corrupt file is reported when it is read.
            problem = image_problem(path)
            if problem is not None:
                self._bad(f"image {path}", problem, "replace it")
                return False
        return True

    def _bad(self, record: str, problem: str, fix: str) -> None:
        if not self.skip_bad:
            raise UserInputError(f"coco: {record} in {self.annotation_file} {problem}; {fix}, {SKIP_HINT}")
        self.skipped.append({"record": record, "reason": problem})


def write_coco(dataset: Dataset, out_dir: Path, name: str = "shapes") -> Path:
    """Write a dataset with boxes, labels and masks (e.g. `shapes`) as a COCO folder; returns the JSON path.

    Layout: `out_dir/annotations/instances_{name}.json` and images as PNG in `out_dir/{name}/`, so
    `coco:out_dir` reads it back. Segmentations are RLE of the instance masks.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / name
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, sample in enumerate(dataset, start=1):
        if sample.image is None or "boxes" not in sample.target or "masks" not in sample.target:
            raise UserInputError(f"write_coco needs images with boxes and masks; {dataset.name} has none")
        file_name = f"{sample.key}.png"
        sample.image.save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": sample.image.width,
                       "height": sample.image.height, "stageprobe_key": sample.key})
        for label, mask in zip(sample.target["labels"], sample.target["masks"], strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(label) + 1,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "area": float(mask_utils.area(rle)),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
            })
    categories = [
        {"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(dataset.class_names)
    ]
    annotation_file = out_dir / "annotations" / f"instances_{name}.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    document = {"info": {"description": json.dumps(dataset.spec(), sort_keys=True)}, "images": images,
                "annotations": annotations, "categories": categories}
    annotation_file.write_text(json.dumps(document))
    return annotation_file


def _locate(path: Path, image_dir: str | None) -> tuple[Path, Path]:
    """(annotation JSON, image folder) from PATH and the image_dir option."""
    if path.is_dir():
        candidates = sorted((path / "annotations").glob("instances_*.json"))
        if not candidates:
            raise UserInputError(
                f"coco: no annotations/instances_*.json under {path}; give the JSON file itself"
            )
        if len(candidates) > 1:
            names = ", ".join(c.name for c in candidates)
            raise UserInputError(
                f"coco: {path}/annotations holds several files ({names}); give one as coco:FILE"
            )
        path = candidates[0]
    elif not path.is_file():
        raise UserInputError(
            f"coco: {path} does not exist; give an instances_*.json file or its dataset folder"
        )
    if image_dir is not None:
        images = Path(image_dir)
    else:
        split = path.stem.removeprefix("instances_")
        images = path.parent.parent / split
        if not images.is_dir():
            images = path.parent / split
    if not images.is_dir():
        raise UserInputError(f"coco: image folder {images} for {path.name} does not exist; pass image_dir")
    return path.resolve(), images.resolve()


def _category_names(categories: str | list[str] | None) -> list[str] | None:
    if categories is None:
        return None
    names = categories.split(",") if isinstance(categories, str) else list(categories)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UserInputError(
            "coco: option categories is empty; give category names, e.g. categories=person,dog"
        )
    return names


def _read_coco(annotation_file: Path) -> COCO:
    try:
        document = json.loads(annotation_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(
            f"coco: {annotation_file} is not valid JSON ({error}); fix or replace it"
        ) from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(document, dict)
               or not isinstance(document.get(k), list)]
    if missing:
        raise UserInputError(
            f"coco: {annotation_file} has no list {', '.join(map(repr, missing))}; "
            "it is not a COCO instances file"
        )
    for section in ("images", "categories"):
        for record in document[section]:
            if not isinstance(record, dict) or not isinstance(record.get("id"), int):
                raise UserInputError(f"coco: a record in {section!r} of {annotation_file} has no integer id: "
                                     f"{str(record)[:120]}; fix it")
    for record in document["annotations"]:
        if not isinstance(record, dict) or not all(k in record for k in ("id", "image_id", "category_id")):
            raise UserInputError(
                f"coco: an annotation in {annotation_file} lacks id, image_id or category_id: "
                f"{str(record)[:120]}; fix it"
            )
    coco = COCO()
    coco.dataset = document
    # pycocotools reports progress on stdout, which would interleave with a CLI's output.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _stack_boxes(boxes: list[np.ndarray]) -> np.ndarray:
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)

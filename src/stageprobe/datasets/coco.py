"""`coco:PATH`: COCO instances annotations + images, on one canvas the model's processor keeps; and `write_coco`.

PATH is an `instances_*.json` file (images in the sibling folder named after its split:
`annotations/instances_val2017.json` → `val2017/`), or a directory holding
`annotations/instances_*.json` and that image folder. For any other layout give the image folder
in the spec: `coco:ANN.json:image_dir=DIR` (any option can be written `:name=value` after the path).

Geometry. Every image is resized onto one canvas (a feature store holds one input size): the
canvas is what Qwen's processor makes of an `image_size`² image (`smart_resize` with `factor`,
`min_pixels`, `max_pixels`, all recorded), so the processor does not resize it again and the
token grid covers it exactly. `resize="pad"` (default) keeps the aspect ratio — one scale for
both axes, image at the top-left, grey padding — and `resize="stretch"` scales x and y apart.
`transform` = (sx, sy, ox, oy) maps original pixels onto the canvas (canvas = original·s + o);
boxes and instance masks go through it.

Targets: `boxes`, `labels` (0..C-1 over the selected categories, C = 80 for COCO),
`category_ids`, `masks` (instance masks on the canvas, from the segmentation, so per-token
targets follow the object and not its box), `centroids`, `relations` between objects whose
category occurs once in the image (named by category, in `colors` — the key the relation probe
reads object names from — and `names`). Crowd annotations are kept out of the objects, as COCO's
own training and evaluation do, and kept as `crowd_boxes`/`crowd_labels` so COCOeval ignores
detections on them. For evaluation in COCO's own terms the target also holds `boxes_original`,
`areas` (the annotation's area, in original pixels, which decides small/medium/large) and the
crowd equivalents; `GroundTruth.from_target` reads them.
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

from stageprobe.datasets._options import check_choice, check_int, image_problem, load_rgb, seeded_subset
from stageprobe.datasets.base import Dataset, Sample, Split, ranked_splits
from stageprobe.datasets.registry import register_dataset
from stageprobe.datasets.shapes import mask_centroid, relation
from stageprobe.errors import UserInputError

# COCO's own boxes stray past the image edge by float rounding; more than this is an error.
EDGE_TOLERANCE_PX = 1.0
SKIP_HINT = "or add :skip_bad=true to the dataset spec (extract: --skip-bad) to leave such records out"
RESIZE_MODES = ["pad", "stretch"]
# Qwen2.5-VL's image processor defaults (preprocessor_config.json of the Hub checkpoints).
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384
PAD_GREY = (128, 128, 128)


@register_dataset("coco", "COCO instances JSON + image folder (coco:ANN.json[:image_dir=DIR])", argument="path")
class CocoDataset(Dataset):
    """COCO-format data: boxes, instance masks, categories, relations and crowd regions on one canvas."""

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
        resize: str = "pad",
        factor: int = 28,
        min_pixels: int = QWEN_MIN_PIXELS,
        max_pixels: int = QWEN_MAX_PIXELS,
    ) -> None:
        self.n = None if n is None else check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.image_size = check_int(self.name, "image_size", image_size, 16)
        self.resize = check_choice(self.name, "resize", resize, RESIZE_MODES)
        self.factor = check_int(self.name, "factor", factor, 1)
        self.min_pixels = check_int(self.name, "min_pixels", min_pixels, 1)
        self.max_pixels = check_int(self.name, "max_pixels", max_pixels, self.min_pixels)
        # the files first: a wrong path is refused before the processor's rule loads transformers (seconds)
        self.annotation_file, self.image_dir = _locate(Path(path), image_dir)
        self.canvas = _processor_canvas(self.image_size, self.factor, self.min_pixels, self.max_pixels)
        self.skip_bad = bool(skip_bad)
        self.categories = _category_names(categories)
        self.skipped: list[dict[str, str]] = []
        self._splits: dict[str, Split] = {}

        self.coco = _read_coco(self.annotation_file)
        category_ids = self._select_categories()
        self.class_names = [c["name"] for c in self.coco.loadCats(category_ids)]
        self._label_of = {cat_id: i for i, cat_id in enumerate(category_ids)}
        self._annotations = self._valid_annotations(set(category_ids))
        self.image_ids = self._choose_images()

    def __len__(self) -> int:
        return len(self.image_ids)

    def spec(self) -> dict[str, Any]:
        options = {
            "n": self.n, "seed": self.seed, "image_size": self.image_size, "categories": self.categories,
            "image_dir": str(self.image_dir), "skip_bad": self.skip_bad, "resize": self.resize,
            "factor": self.factor, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels,
        }
        return {"name": self.name, "source": f"coco:{self.annotation_file}", "options": options,
                "class_names": self.class_names, "skipped": self.skipped, "canvas": list(self.canvas)}

    def sample_group(self, index: int) -> str:
        # One COCO image is one source: it is never in two splits.
        return self._key(self.image_ids[index])

    def sample_split(self, index: int) -> Split:
        return self.split_of_image(self.image_ids[index])

    def split_of_image(self, image_id: int) -> Split:
        """The split of a COCO image (and so of every sample made from it)."""
        return self._splits[self._key(image_id)]

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        original = load_rgb(self.image_dir / info["file_name"], self.name)
        transform, placed = self._transform(original.width, original.height)
        canvas = Image.new("RGB", self.canvas[::-1], PAD_GREY)
        canvas.paste(original.resize(placed, Image.Resampling.BICUBIC), (0, 0))
        annotations = self._annotations.get(image_id, [])
        objects = [a for a in annotations if not a.get("iscrowd", 0)]
        crowds = [a for a in annotations if a.get("iscrowd", 0)]
        target = self._object_target(objects, original.size, transform, placed)
        target.update(self._crowd_target(crowds, original.size, transform))
        target.update({
            "image_id": int(image_id), "file_name": info["file_name"],
            "original_size": (original.height, original.width), "transform": transform,
            "scale": transform[:2], "image_size": self.canvas, "resize": self.resize,
        })
        key = self._key(image_id)
        return Sample(key=key, split=self.split_of_image(image_id), image=canvas, target=target, group=key)

    def annotations_of(self, image_id: int) -> list[dict[str, Any]]:
        """The image's valid annotations of the selected categories (crowds included)."""
        return list(self._annotations.get(image_id, []))

    def label_of(self, category_id: int) -> int:
        """The 0-based label of a COCO category id."""
        return self._label_of[category_id]

    def _transform(self, width: int, height: int) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
        """(sx, sy, ox, oy) from original pixels to the canvas, and the size the image is resized to."""
        canvas_h, canvas_w = self.canvas
        if self.resize == "stretch":
            return (canvas_w / width, canvas_h / height, 0.0, 0.0), (canvas_w, canvas_h)
        scale = min(canvas_w / width, canvas_h / height)
        placed = (max(1, round(width * scale)), max(1, round(height * scale)))
        # The exact per-axis scale of the resized image, so boxes land on the pixels they cover.
        return (placed[0] / width, placed[1] / height, 0.0, 0.0), placed

    def _object_target(self, objects: list[dict[str, Any]], size: tuple[int, int],
                       transform: tuple[float, ...], placed: tuple[int, int]) -> dict[str, Any]:
        width, height = size
        boxes_original = _stack_boxes([_xyxy(a["bbox"]) for a in objects])
        boxes = _to_canvas(np.clip(boxes_original, 0, [width, height, width, height]), transform)
        masks = np.stack([self._canvas_mask(a, size, placed) for a in objects]) if objects else \
            np.zeros((0, *self.canvas), dtype=bool)
        centroids = np.array([mask_centroid(m) if m.any() else (b[:2] + b[2:]) / 2
                              for m, b in zip(masks, boxes, strict=True)], dtype=np.float32).reshape(-1, 2)
        category_ids = np.array([a["category_id"] for a in objects], dtype=np.int64)
        names = [self.class_names[self._label_of[int(c)]] for c in category_ids]
        return {
            "boxes": boxes, "boxes_norm": (boxes / np.array(self.canvas[::-1] * 2, dtype=np.float32)),
            "labels": np.array([self._label_of[int(c)] for c in category_ids], dtype=np.int64),
            "category_ids": category_ids, "masks": masks, "centroids": centroids,
            "names": names, "colors": names, "relations": _relations(names, centroids),
            "boxes_original": boxes_original,
            "areas": np.array([_area(a) for a in objects], dtype=np.float64),
            "annotation_ids": [int(a["id"]) for a in objects],
        }

    def _crowd_target(self, crowds: list[dict[str, Any]], size: tuple[int, int],
                      transform: tuple[float, ...]) -> dict[str, Any]:
        width, height = size
        original = _stack_boxes([_xyxy(a["bbox"]) for a in crowds])
        return {
            "crowd_boxes": _to_canvas(np.clip(original, 0, [width, height, width, height]), transform),
            "crowd_boxes_original": original,
            "crowd_labels": np.array([self._label_of[a["category_id"]] for a in crowds], dtype=np.int64),
            "crowd_areas": np.array([_area(a) for a in crowds], dtype=np.float64),
        }

    def _canvas_mask(self, annotation: dict[str, Any], size: tuple[int, int], placed: tuple[int, int]) -> np.ndarray:
        """The instance mask on the canvas: its segmentation (its box when it has none), resized nearest."""
        width, height = size
        if annotation.get("segmentation"):
            original = self.coco.annToMask(annotation).astype(bool)
        else:
            original = np.zeros((height, width), dtype=bool)
            x0, y0, x1, y1 = np.rint(_xyxy(annotation["bbox"])).astype(int)
            original[max(0, y0):y1, max(0, x0):x1] = True
        resized = np.asarray(Image.fromarray(original).resize(placed, Image.Resampling.NEAREST), dtype=bool)
        mask = np.zeros(self.canvas, dtype=bool)
        mask[:placed[1], :placed[0]] = resized
        return mask

    def _choose_images(self) -> list[int]:
        image_ids = sorted(self.coco.getImgIds())
        if self.categories is not None:
            image_ids = [i for i in image_ids if self._annotations.get(i)]
        image_ids = [i for i in image_ids if self._image_is_usable(i)]
        if not image_ids:
            raise UserInputError(
                f"coco: no usable images in {self.annotation_file}; check the path and categories"
            )
        if not any(not a.get("iscrowd", 0) for i in image_ids for a in self._annotations.get(i, [])):
            raise UserInputError(
                f"coco: every annotation of the {len(image_ids)} images in {self.annotation_file} is a crowd "
                "region (iscrowd=1); probes need single objects — use a set with non-crowd annotations"
            )
        keys = [self._key(i) for i in image_ids]
        # Ranked over every usable image before `n` picks some, so a small set still gets val and test
        # images and an image's split does not change with `n` (--limit).
        self._splits = ranked_splits(keys)
        return [image_ids[i] for i in seeded_subset(keys, self.n, self.seed)]
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
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _processor_canvas(image_size: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) Qwen's processor gives an image_size² image; it leaves an image of that size as it is."""
    # imported here: transformers' image processing pulls in torchvision (2 s), which every probe
    # worker would otherwise import to read any dataset
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    try:
        return tuple(smart_resize(image_size, image_size, factor=factor, min_pixels=min_pixels,
                                  max_pixels=max_pixels))  # type: ignore[return-value]
    except ValueError as error:
        raise UserInputError(f"coco: image_size={image_size} does not fit the processor's rule ({error}); "
                             "choose another image_size, factor, min_pixels or max_pixels") from None


def _xyxy(bbox: list[float]) -> np.ndarray:
    x, y, w, h = bbox
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def _to_canvas(boxes: np.ndarray, transform: tuple[float, ...]) -> np.ndarray:
    sx, sy, ox, oy = transform
    return (boxes * [sx, sy, sx, sy] + [ox, oy, ox, oy]).astype(np.float32).reshape(-1, 4)


def _area(annotation: dict[str, Any]) -> float:
    """The annotation's own area (original pixels, what COCOeval bins by); its box area if it has none."""
    area = annotation.get("area")
    if isinstance(area, int | float) and area > 0:
        return float(area)
    return float(annotation["bbox"][2] * annotation["bbox"][3])


def _relations(names: list[str], centroids: np.ndarray) -> list[dict[str, str]]:
    """Where each object is relative to each other, for objects whose category names them uniquely."""
    unique = [k for k, name in enumerate(names) if names.count(name) == 1]
    return [{"a": names[a], "b": names[b], "relation": relation(centroids[a], centroids[b])}
            for a in unique for b in unique if a != b]

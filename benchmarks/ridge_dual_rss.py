"""Peak RSS and CPU seconds of one `recon-linear` fit on a wide pixel stage, primal vs dual ridge.

SmolVLM's pixel ceiling `pixels.merged` has a 64-px stride: each token is its cell's 64·64·3 = 12,288
pixels, wider than the quick study's training rows (28 images × 8×8 tokens = 1,792). The primal ridge
eigendecomposes a 12,288² float64 Gram (1.2 GB a copy); the dual one a 1,792² row Gram. Each form runs
in its own process (peak RSS is per process); the images are smooth random fields, like the textures.

Run: python benchmarks/ridge_dual_rss.py [--stride 64] [--train 28] [--form primal dual]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from stageprobe.probes import ProbeData


def _images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random RGB images in [0, 1] (upsampled noise), (n, size, size, 3) float32."""
    noise = torch.rand(n, 3, size // 16, size // 16, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=(size, size), mode="bicubic").clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _split(images: np.ndarray, stride: int) -> ProbeData:
    n, size = len(images), images.shape[1]
    grid = size // stride
    cells = images.reshape(n, grid, stride, grid, stride, 3).transpose(0, 1, 3, 2, 4, 5)
    features = torch.from_numpy(cells.reshape(n, 1, grid, grid, stride * stride * 3).copy()).half()
    return ProbeData(features, [{} for _ in range(n)], (size, size), images)


def fit_once(form: str, stride: int, train: int) -> dict[str, float]:
    from stageprobe.metrics.reconstruction import LpipsMetric
    from stageprobe.probes import recon_linear, training

    torch.set_num_threads(1)
    splits = [_split(_images(m, 8 * stride, seed), stride) for seed, m in enumerate((train, 10, 10))]
    solver = training.RidgeSolver
    recon_linear.RidgeSolver = lambda *a, **k: solver(*a, **k, form=form)  # type: ignore[assignment,misc]
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = recon_linear.fit_recon_linear("reconstruction", *splits, seed=0, lpips_metric=LpipsMetric())
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"form": form, "width": 3 * stride * stride, "rows": train * 64,
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "wall_s": round(time.perf_counter() - started, 1), "peak_rss_gb": round(after.ru_maxrss / 2**20, 2),
            "psnr": round(result.metrics["psnr"], 3), "ssim": round(result.metrics["ssim"], 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--train", type=int, default=28, help="training images (8×8 tokens each)")
    parser.add_argument("--form", nargs="+", default=["primal", "dual"], choices=("primal", "dual"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(fit_once(args.form[0], args.stride, args.train)))
        return
    for form in args.form:
        out = subprocess.run([sys.executable, __file__, "--child", "--form", form, "--stride", str(args.stride),
                              "--train", str(args.train)], capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()

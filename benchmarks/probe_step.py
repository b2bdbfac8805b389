"""CPU milliseconds of one training step (forward + backward, one thread) of the two costliest probes, at the
default run's shapes: where their time goes, and how close to the hardware it is.

- `dense-context`: its `ContextHead` on a batch of 16 images of 32×32 tokens reduced to 128 dims, in float32
  and as `--probe-precision bfloat16` runs it (autocast, channels-last); beside it the same head with ReLU
  instead of GELU, to show what the activation costs. GFLOP/s counts the convolutions' multiply-adds × 2 × 3
  (forward and two backward products).
- `attention`: the whole `QueryDetector` (32 images, 16×16 tokens of 32 dims, 16 queries, d_model 64) and its
  cross-attention alone (`nn.MultiheadAttention` over the 256 tokens).

Run: python benchmarks/probe_step.py [--steps 40]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from stageprobe.probes.attention import QueryDetector
from stageprobe.probes.dense_context import ContextHead

BATCH, GRID, PCA_DIM, WIDTH, OUTPUTS = 16, 32, 128, 64, 10


def cpu_ms(step: Callable[[], None], steps: int) -> float:
    for _ in range(3):
        step()
    started = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - started) / steps * 1000


def dense_context_step(activation: type[nn.Module], bf16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    head = ContextHead(PCA_DIM, OUTPUTS - 6, WIDTH)
    for index, module in enumerate(head.net):
        if isinstance(module, nn.GELU):
            head.net[index] = activation()
    x = torch.randn(BATCH, PCA_DIM, GRID, GRID)
    if bf16:
        head, x = head.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = head(x).float()
        out.square().mean().backward()
    return step


def attention_steps() -> tuple[Callable[[], None], Callable[[], None]]:
    torch.manual_seed(0)
    model = QueryDetector(32, 4, (16, 16), 64, 16, 1, 4, 0.5)
    tokens = torch.randn(32, 256, 32)

    def whole() -> None:
        outputs, token_out = model(tokens)
        loss = sum(logits.square().mean() + boxes.square().mean() for logits, boxes in outputs)
        (loss + token_out.square().mean()).backward()

    attn = nn.MultiheadAttention(64, 4, batch_first=True)
    queries = torch.randn(32, 16, 64, requires_grad=True)
    memory = torch.randn(32, 256, 64, requires_grad=True)
    bias = torch.randn(16, 256)

    def cross() -> None:
        out, weights = attn(queries, memory, memory, attn_mask=bias, average_attn_weights=False)
        (out.square().mean() + weights.square().mean()).backward()
    return whole, cross


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    macs = BATCH * GRID * GRID * (PCA_DIM * WIDTH + 9 * WIDTH * WIDTH + WIDTH * OUTPUTS)
    for name, activation, bf16 in (("float32, GELU", nn.GELU, False), ("bfloat16, GELU (as run)", nn.GELU, True),
                                   ("bfloat16, ReLU", nn.ReLU, True)):
        ms = cpu_ms(dense_context_step(activation, bf16), args.steps)
        print(f"dense-context step, {name}: {ms:.1f} ms ({2 * 3 * macs / ms / 1e6:.0f} GFLOP/s of convolution)")
    whole, cross = attention_steps()
    print(f"attention step, whole model: {cpu_ms(whole, args.steps):.1f} ms; "
          f"its cross-attention alone: {cpu_ms(cross, args.steps):.1f} ms")


if __name__ == "__main__":
    main()

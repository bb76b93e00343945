"""CPU step time of the registry convnet in NCHW against channels_last (NHWC), interleaved in one process.

    python bench/channels_last_cpu.py [--widths 16 32 64] [--batch 200] [--rounds 6]

One fwd+bwd+Adam step of a classifier batch at 28×28 grey, 1 torch thread, CPU time (process_time) so
the figure holds on a shared machine; the ratio is what decides ssgan's memory format on CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ganft_core.models.registry import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build("convnet", {"in_channels": 1, "num_classes": 10, "widths": args.widths})
    x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(10, (args.batch,))
    opt = torch.optim.Adam(net.parameters())
    formats = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}

    def step(fmt: torch.memory_format) -> None:
        loss = F.cross_entropy(net(x.contiguous(memory_format=fmt)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for fmt in formats.values():  # warm-up: oneDNN primitive caches
        net.to(memory_format=fmt)
        step(fmt)
    cpu = dict.fromkeys(formats, 0.0)
    for _ in range(args.rounds):
        for name, fmt in formats.items():
            net.to(memory_format=fmt)
            start = time.process_time()
            step(fmt)
            step(fmt)
            cpu[name] += time.process_time() - start
    steps = 2 * args.rounds
    print(
        f"widths {args.widths}, batch {args.batch}: NCHW {1e3 * cpu['NCHW'] / steps:.0f} CPU-ms a step, "
        f"channels_last {1e3 * cpu['channels_last'] / steps:.0f}; ratio {cpu['channels_last'] / cpu['NCHW']:.2f}"
    )


if __name__ == "__main__":
    main()

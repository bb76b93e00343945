"""ssgan throughput: steps/s through `ganft_core.train` vs a plain PyTorch loop of the same work.

Both sides train the same networks (built by the same registry calls) on the digits split of
bench/ssgan_digits.py with the same batch sizes and losses, and do the same work per step: one D
step (cross-entropy + unsupervised terms), one G step (feature matching), one control step and
the EMA of both classifiers. The plain loop is written the way pytorch/examples/dcgan writes
one (default Adam, backward into everything, `zero_grad` each step). `train()` is timed
between its first and last progress report, so setup, evaluation at the end and artifact
export are left out; its logging, NaN checks and abort polls are inside. The two are run
alternately (plain, core, plain, core, ...) and the best round of each counts, in wall time
and in CPU time of the process (steadier on a shared CPU). Where the time goes: section timers
in the plain loop, torch.profiler over `train()`.

    python bench/ssgan_throughput.py [--steps 300] [--threads 2] [--rounds 3] [--no-record]

Writes the `## ssgan throughput` section of bench/RESULTS.md (`(N threads)` added with --threads N != 2).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from ssgan_digits import commit, digits_split, machine, write_section

from ganft_core.config import SsganHyperparameters, TrainSpec
from ganft_core.ssgan_nets import build_classifier, build_generator, resolved_lr
from ganft_core.train import ProgressUpdate, train

SEED = 1


def plain_loop(steps: int) -> tuple[float, float, dict[str, float]]:
    """The same per-step work as ssgan, written plainly: (steps per wall s, per CPU s, seconds per section)."""
    data, _ = digits_split(SEED)
    hp = SsganHyperparameters()
    torch.manual_seed(SEED)
    clf = build_classifier(hp, data, None)
    net, gen = clf.net, build_generator(hp, data, clf.net.head.in_features)
    control = copy.deepcopy(net)
    ema, ema_c = copy.deepcopy(net).eval(), copy.deepcopy(control).eval()
    lr_d, lr_g = resolved_lr(hp, clf)
    opt_d = torch.optim.Adam(net.parameters(), lr=lr_d, betas=(hp.beta1, hp.beta2))
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr_g, betas=(hp.beta1, hp.beta2))
    opt_c = torch.optim.Adam(control.parameters(), lr=lr_d, betas=(hp.beta1, hp.beta2))
    labeled = data.labeled
    x_lab, y_lab = torch.from_numpy(data.x[labeled]), torch.from_numpy(data.y[labeled])
    x_unl = torch.from_numpy(data.x)
    b, u = hp.batch_size, hp.unlabeled_batch_size
    sections: dict[str, float] = defaultdict(float)

    start, start_cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        t0 = time.perf_counter()
        i_lab = torch.randint(len(x_lab), (b,))
        xl, yl = x_lab[i_lab], y_lab[i_lab]
        xu, xu2 = x_unl[torch.randint(len(x_unl), (u,))], x_unl[torch.randint(len(x_unl), (u,))]
        t1 = time.perf_counter()
        fake = gen(torch.randn(u, gen.z_dim)).detach()
        logits_lab, logits_unl, logits_fake = net(xl), net(xu), net(fake)
        lse_u, lse_f = logits_unl.logsumexp(1), logits_fake.logsumexp(1)
        loss_unsup = -lse_u.mean() + F.softplus(lse_u).mean() + F.softplus(lse_f).mean()
        loss_d = F.cross_entropy(logits_lab, yl) + hp.unsupervised_weight * loss_unsup
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        t2 = time.perf_counter()
        f_real = net.features(xu2).detach()
        f_fake = net.features(gen(torch.randn(u, gen.z_dim)))
        loss_g = (f_real.mean(0) - f_fake.mean(0)).pow(2).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        t3 = time.perf_counter()
        loss_c = F.cross_entropy(control(xl), yl)
        opt_c.zero_grad()
        loss_c.backward()
        opt_c.step()
        t4 = time.perf_counter()
        with torch.no_grad():
            decay = min(hp.ema_decay, (1 + step) / (10 + step))
            for avg, m in ((ema, net), (ema_c, control)):
                for pa, p in zip(avg.parameters(), m.parameters(), strict=True):
                    pa.mul_(decay).add_(p, alpha=1 - decay)
        t5 = time.perf_counter()
        for name, dt in (
            ("sample batches", t1 - t0),
            ("D step", t2 - t1),
            ("G step", t3 - t2),
            ("control step", t4 - t3),
            ("EMA", t5 - t4),
        ):
            sections[name] += dt
        if step % hp.log_every == 0 and not torch.isfinite(loss_d):  # the same once-per-interval sync
            raise RuntimeError("NaN")
    return steps / (time.perf_counter() - start), steps / (time.process_time() - start_cpu), dict(sections)


def core_loop(steps: int, profile: bool = False) -> tuple[float, float, str]:
    """`train()` steps per wall s and per CPU s between its first and last step report; a top-ops table."""
    data, test = digits_split(SEED)
    stamps: dict[int, tuple[float, float]] = {}

    def on_progress(update: ProgressUpdate) -> None:
        if update.kind == "step":
            stamps[update.step] = (time.perf_counter(), time.process_time())

    hp = {"steps": steps, "log_every": 25, "eval_every": steps, "checkpoint_every": steps}
    spec = TrainSpec.model_validate({"method": "ssgan", "seed": SEED, "hyperparameters": hp})
    table = ""
    with tempfile.TemporaryDirectory(prefix="ssgan-throughput-") as out:
        if profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                train(spec, data, Path(out), validation=test, device="cpu", progress=on_progress)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        else:
            train(spec, data, Path(out), validation=test, device="cpu", progress=on_progress)
    first, last = min(stamps), max(stamps)
    wall, cpu = (stamps[last][i] - stamps[first][i] for i in (0, 1))
    return (last - first) / wall, (last - first) / cpu, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/train() rounds")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    plain_wall: list[float] = []
    plain_cpu: list[float] = []
    core_wall: list[float] = []
    core_cpu: list[float] = []
    sections: dict[str, float] = {}
    for round_ in range(args.rounds):
        wall, cpu, sec = plain_loop(args.steps)
        if not plain_cpu or cpu > max(plain_cpu):
            sections = sec  # the time split of the best plain round
        plain_wall.append(wall)
        plain_cpu.append(cpu)
        wall, cpu, _ = core_loop(args.steps)
        core_wall.append(wall)
        core_cpu.append(cpu)
        print(
            f"round {round_ + 1}: plain {plain_wall[-1]:.1f} steps/s ({plain_cpu[-1]:.1f} per CPU s), "
            f"train() {core_wall[-1]:.1f} steps/s ({core_cpu[-1]:.1f} per CPU s)",
            flush=True,
        )
    _, _, table = core_loop(min(args.steps, 100), profile=True)
    ratio_wall, ratio_cpu = max(core_wall) / max(plain_wall), max(core_cpu) / max(plain_cpu)
    total = sum(sections.values())
    split = ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in sections.items())
    print(
        f"best: plain {max(plain_wall):.1f} steps/s, train() {max(core_wall):.1f} steps/s, ratio {ratio_wall:.2f}; "
        f"per CPU second ratio {ratio_cpu:.2f}\nplain loop: {split}"
    )
    print(table)
    if args.no_record:
        return
    body = (
        f"`python bench/ssgan_throughput.py --steps {args.steps} --threads {args.threads}` — commit `{commit()}`, "
        f"{machine()}, torch {torch.__version__}, digits features, default hyperparameters. The CPU is shared "
        "with other work, so wall-clock rates swing with the load; steps per CPU second of the process are the "
        f"steadier comparison. Best of {args.rounds} alternating rounds each.\n\n"
        "| loop | steps/s (wall) | steps per CPU s |\n|---|---|---|\n"
        f"| plain PyTorch (same nets, losses, control, EMA) | {max(plain_wall):.1f} | {max(plain_cpu):.1f} |\n"
        f"| `train()` | {max(core_wall):.1f} | {max(core_cpu):.1f} |\n"
        f"| **ratio** (target >= 1.0) | **{ratio_wall:.2f}** | **{ratio_cpu:.2f}** |\n\n"
        f"Plain loop time split: {split}.\n\n"
        "`train()` profile (torch.profiler, 100 steps incl. setup and artifacts, top ops by self CPU time):\n\n"
        f"```\n{table.strip()}\n```\n"
    )
    threads = "" if args.threads == 2 else f" ({args.threads} thread{'s' if args.threads > 1 else ''})"
    write_section(f"ssgan throughput{threads}", body)


if __name__ == "__main__":
    main()

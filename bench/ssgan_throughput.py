"""ssgan throughput: steps/s through `ganft_core.train` vs a plain PyTorch loop of the same work.

Both sides train the same networks (built by the same registry calls) on the digits split of
bench/ssgan_digits.py with the same batch sizes and losses, and do the same work per step: one D
step (cross-entropy + unsupervised terms), one G step (feature matching), one control step and
the EMA of both classifiers. The plain loop is written the way pytorch/examples/dcgan writes
one (default Adam, backward into everything, `zero_grad` each step). `train()` is timed
between its first and last progress report, so setup, evaluation at the end and artifact
export are left out; its logging, NaN checks and abort polls are inside. The two are run
alternately (plain, core, plain, core) and the better round of each counts, since the CPU is
shared. Where the time goes: section timers in the plain loop, torch.profiler over `train()`.

    python bench/ssgan_throughput.py [--steps 300] [--no-record]

Writes the `## ssgan throughput` section of bench/RESULTS.md.
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


def plain_loop(steps: int) -> tuple[float, dict[str, float]]:
    """The same per-step work as ssgan, written plainly; returns (steps/s, seconds per section)."""
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

    start = time.perf_counter()
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
    return steps / (time.perf_counter() - start), dict(sections)


def core_loop(steps: int, profile: bool = False) -> tuple[float, str]:
    """steps/s of `train()` between its first and last step report; with `profile`, a top-ops table."""
    data, test = digits_split(SEED)
    stamps: dict[int, float] = {}

    def on_progress(update: ProgressUpdate) -> None:
        if update.kind == "step":
            stamps[update.step] = time.perf_counter()

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
    return (last - first) / (stamps[last] - stamps[first]), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    plain_rates: list[float] = []
    core_rates: list[float] = []
    sections: dict[str, float] = {}
    for round_ in range(2):
        rate, sec = plain_loop(args.steps)
        if not plain_rates or rate > max(plain_rates):
            sections = sec  # the time split of the best plain round
        plain_rates.append(rate)
        core_rates.append(core_loop(args.steps)[0])
        print(
            f"round {round_ + 1}: plain {plain_rates[-1]:.1f} steps/s, train() {core_rates[-1]:.1f} steps/s", flush=True
        )
    _, table = core_loop(min(args.steps, 100), profile=True)
    plain, core = max(plain_rates), max(core_rates)
    total = sum(sections.values())
    split = ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in sections.items())
    print(f"plain {plain:.1f} steps/s, train() {core:.1f} steps/s, ratio {core / plain:.2f}\nplain loop: {split}")
    print(table)
    if args.no_record:
        return
    body = (
        f"`python bench/ssgan_throughput.py --steps {args.steps}` — commit `{commit()}`, {machine()}, "
        f"torch {torch.__version__}, {args.threads} threads, digits features, default hyperparameters "
        "(shared CPU: the better of two alternating rounds each).\n\n"
        "| loop | steps/s |\n|---|---|\n"
        f"| plain PyTorch (same nets, losses, control, EMA) | {plain:.1f} |\n| `train()` | {core:.1f} |\n"
        f"| **ratio** | **{core / plain:.2f}** (target >= 1.0) |\n\n"
        f"Plain loop time split: {split}.\n\n"
        "`train()` profile (torch.profiler, 100 steps incl. setup and artifacts, top ops by self CPU time):\n\n"
        f"```\n{table.strip()}\n```\n"
    )
    write_section("ssgan throughput", body)


if __name__ == "__main__":
    main()

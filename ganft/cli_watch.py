"""Following a job for a person (`ganft jobs watch`, `ganft demo`): the progress display of
ganft_core/progress_view.py fed by the job's event stream, and the summary at the end (for ssgan the
GAN against its control and the verdict, for adapt FID/KID; the output model and the command that
downloads it). The figures are worded by ganft_core/cli_report.py, as `python -m ganft_core train`
words them. Neither module imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ganft_core.cli_report import adapt_lines, ssgan_lines, verdict_artifact
from ganft_core.progress_view import Progress

if TYPE_CHECKING:
    from ganft.client import Client
    from ganft.client_types import Event, Job


class ProgressView(Progress):
    """A job's events on a terminal's bar, or as plain lines every `every_s` seconds elsewhere."""

    measures_rate = False  # the worker's steps_per_second: events replayed for a late watcher arrive at once

    def feed(self, event: Event) -> None:
        data = event.data
        if event.type == "evaluation" and "step" in data:
            # its figures print now; the progress event written with it moves the bar
            self.evaluation(int(data["step"]), int(data.get("total_steps") or 0), data.get("metrics") or {})
        elif event.type == "progress" and "step" in data:
            self.advance(int(data["step"]), int(data.get("total_steps") or 0), data.get("metrics") or {},
                         data.get("steps_per_second"))  # fmt: skip
        elif event.type == "status":
            why = " ".join(str(v) for v in (data.get("reason"), data.get("by") and f"by {data['by']}") if v)
            reason = f" ({why})" if why else ""  # e.g. "(preempted by job_...)"
            error = data.get("error") or {}
            said = f": {error.get('code')}: {error.get('message')}" if error else ""
            self.line(f"status: {data.get('status')}{reason}{said}")
        elif event.type == "log" and data.get("message"):
            self.line(f"step {data.get('step', '?')}: {data['message']}")


def follow(api: Client, job_id: str, view: ProgressView) -> Job:
    """Feed the job's events to `view`, from its first (a job watched late shows its evaluations so far),
    until the job ends; the finished job."""
    for event in api.watch(job_id):
        view.feed(event)
    view.close()
    return api.get_job(job_id)


def _duration(job: Job) -> str:
    if job.started_at is None or job.finished_at is None:
        return ""
    minutes, secs = divmod(int(round((job.finished_at - job.started_at).total_seconds())), 60)
    return f" in {minutes}m {secs:02d}s" if minutes else f" in {secs}s"


def summary_lines(job: Job) -> list[str]:
    """What a person came for, when the job has ended: its figures, the output model, the download command
    (each line within 80 columns)."""
    steps = f"{job.progress.step}/{job.progress.total_steps} steps"
    if job.status == "failed":
        error = f": {job.error.code}: {job.error.message}" if job.error else ""
        return [f"{job.id} failed at {steps}{error}", f"events and log lines: ganft jobs logs {job.id}"]
    if job.status != "succeeded":
        return [f"{job.id} {job.status} at {steps}"]
    lines = [f"{job.id} succeeded: {job.method}, {job.progress.total_steps} steps{_duration(job)}"]
    result = job.result or {}
    download = "model.pt2"
    if job.method == "ssgan":
        lines += ssgan_lines(result)
        download = verdict_artifact(result.get("verdict"))
    elif job.method == "adapt":
        lines += adapt_lines(result, no_evaluator="GANFT_INCEPTION_WEIGHTS on the worker, or evaluator_model_id")
    if job.output_model_id:
        what = "the GAN's classifier" if download == "control.pt2" else "base_model_id of a next job"
        lines.append(f"output model: {job.output_model_id} ({what})")
    lines.append(f"download:     ganft artifacts download {job.id} {download}")
    return lines

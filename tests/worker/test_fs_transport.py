"""The embedded broker's transport: a message being written is never consumed half-way (and lost)."""

from __future__ import annotations

from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection


def test_half_written_messages_wait_and_whole_ones_arrive(tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    (folder / "control").mkdir(parents=True)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder / "control")}
    with Connection("filesystem://", transport="worker.fs_transport:Transport", transport_options=options) as conn:
        channel = conn.default_channel
        being_written = folder / "1_0000.gpu.msg"
        being_written.touch()  # what a producer has between open() and write()
        with pytest.raises(Empty):
            channel._get("gpu")
        assert being_written.exists()  # left for the next poll, not swallowed

        channel._put("gpu", {"body": "doorbell"})
        assert not [p for p in folder.iterdir() if p.name.startswith("tmp-")]  # renamed into place
        being_written.unlink()
        assert channel._get("gpu") == {"body": "doorbell"}
        with pytest.raises(Empty):
            channel._get("gpu")

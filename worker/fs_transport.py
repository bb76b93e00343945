"""kombu's filesystem transport (the embedded broker) without its half-written-message race.

kombu writes a message by opening `<ms>_<uuid>.<queue>.msg` and then writing it, and a
consumer polling the folder may move and read the file in between: it reads an empty
message and the job's doorbell is lost. The window is microseconds between processes, but
the sweeper thread sends from the very process that consumes, where a thread switch lands
in it easily. Here messages are written under a name consumers ignore and renamed into place
(atomic on POSIX), and empty files are left alone for the next poll (a message written by
another producer, e.g. the API, with kombu's own one-`write()` put is either empty or whole).

Used by the worker as `broker_transport` when the broker URL is `filesystem://`; the
messages and folders are kombu's, so the API's stock producer interoperates.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as kombu.filesystem
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        tmp = os.path.join(folder, f"tmp-{uuid.uuid4().hex}")  # no '.': never taken for a message
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, os.path.join(folder, name))
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to {folder!r}") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        folder = self.data_folder_in
        for filename in sorted(os.listdir(folder)):
            if filename.partition(".")[2] != wanted:
                continue
            path = os.path.join(folder, filename)
            try:
                if os.path.getsize(path) == 0:
                    continue  # still being written: the next poll takes it
                # Moving claims the message: of several consumers exactly one succeeds.
                taken = shutil.move(path, tempfile.gettempdir())
            except OSError:
                continue  # taken by another consumer meanwhile
            try:
                with open(taken, "rb") as f:
                    payload = f.read()
                os.remove(taken)
            except OSError as exc:
                raise ChannelError(f"cannot read message {filename!r}") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel

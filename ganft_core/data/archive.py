"""Reading untrusted zip files (imagefolder uploads and npz files) without trusting them.

Nothing is ever extracted to disk: members are read into memory one at a time, or streamed
piece by piece (`SafeZip.open`, for an npz's large arrays). Before any member is read, every
entry is checked (names, symlinks, encryption, declared sizes and compression ratios); while
reading, the byte counts are enforced again, because a zip's headers can lie about the size a
member inflates to.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from ganft_core.errors import DatasetError

_CHUNK = 1 << 20  # bytes read from a member at a time
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    """What an uploaded archive may hold.

    The size limits are about disk, not RAM: datasets are decoded a few MiB (or one image) at a time
    into the memory-mapped stored form (stored.py), so they fit a tens-of-GiB upload. What stops a
    zip bomb is the compression ratio of each member and the total, both checked while inflating.
    (The in-memory loader, `load_dataset` without `stored`, needs 4 bytes of RAM per value.)
    """

    max_entries: int = 1_000_000  # entries in the zip (files and folders); ~0.5 KiB of RAM each while read
    max_member_bytes: int = 1 << 36  # uncompressed size of one member (an npz's x.npy): 64 GiB
    max_total_bytes: int = 1 << 36  # uncompressed size of all members together: 64 GiB
    max_ratio: float = 200.0  # uncompressed / compressed size of one member (deflate tops out near 1032)
    ratio_floor_bytes: int = 1 << 20  # the ratio is checked only for members larger than this
    max_image_pixels: int = 4096 * 4096  # width × height of one image, checked from its header before decoding
    max_dataset_values: int = 1 << 36  # elements of the decoded x (64 GiB stored as uint8)


@dataclass(frozen=True)
class Member:
    """A checked file entry: `name` is its normalised posix path inside the archive."""

    name: str
    info: zipfile.ZipInfo

    @property
    def size(self) -> int:
        return self.info.file_size


def check_member_name(raw: str) -> str:
    """The entry name as a relative posix path, or DatasetError if it could escape a folder."""
    name = raw.replace("\\", "/")
    if not name or "\x00" in name:
        raise DatasetError(f"zip entry {raw!r} has an invalid name")
    if name.startswith("/") or _DRIVE.match(name):
        raise DatasetError(f"zip entry {raw!r} is an absolute path")
    if ".." in name.split("/"):
        raise DatasetError(f"zip entry {raw!r} points outside the archive ('..')")
    return name


class SafeZip:
    """A zip opened for reading after every entry passed the checks above.

    `members` are the file entries sorted by name; `folders` the explicit folder entries
    (without the trailing slash), which only matter for spotting empty class folders.
    """

    def __init__(self, path: str | Path, limits: ArchiveLimits) -> None:
        self.limits = limits
        self._read_total = 0
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            raise DatasetError(f"not a readable zip archive: {exc}") from exc
        try:
            self.members, self.folders = self._check_entries()
        except BaseException:
            self._zip.close()
            raise

    def _check_entries(self) -> tuple[list[Member], list[str]]:
        infos = self._zip.infolist()
        limits = self.limits
        if len(infos) > limits.max_entries:
            raise DatasetError(f"the archive holds {len(infos)} entries; at most {limits.max_entries} are allowed")
        members: list[Member] = []
        folders: list[str] = []
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = check_member_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(f"zip entry {name!r} is a symbolic link; links are not allowed")
            if info.flag_bits & 0x1:
                raise DatasetError(f"zip entry {name!r} is encrypted")
            if name in seen:
                raise DatasetError(f"zip entry {name!r} appears twice")
            seen.add(name)
            if name.endswith("/"):
                folders.append(name.rstrip("/"))
                continue
            if info.file_size > limits.max_member_bytes:
                raise DatasetError(
                    f"zip entry {name!r} inflates to {info.file_size} bytes; at most {limits.max_member_bytes} allowed"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
                raise DatasetError(
                    f"zip entry {name!r} has compression ratio {ratio:.0f}:1 (at most {limits.max_ratio:.0f}:1); "
                    "this looks like a zip bomb"
                )
            total += info.file_size
            if total > limits.max_total_bytes:
                raise DatasetError(f"the archive inflates to more than {limits.max_total_bytes} bytes")
            members.append(Member(name, info))
        members.sort(key=lambda m: m.name)
        return members, sorted(folders)

    def read(self, member: Member) -> bytearray:
        """The member's bytes, enforcing its declared size and the archive's total while inflating."""
        out = bytearray()
        with self.open(member) as stream:
            while chunk := stream.read(_CHUNK):
                out += chunk
        return out

    def open(self, member: Member) -> MemberStream:
        """The member as a stream to inflate piece by piece (several may be open at once)."""
        try:
            raw = self._zip.open(member.info)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            raise DatasetError(f"zip entry {member.name!r} cannot be read: {exc}") from exc
        return MemberStream(self, member, raw)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemberStream:
    """One member being inflated: `read(n)` enforces its declared size and the archive's total.

    Reading up to the member's end is what makes zipfile check its CRC, so callers that stop
    early (a header) and callers that read everything (a member's data) both get checked bytes.
    """

    def __init__(self, archive: SafeZip, member: Member, raw: IO[bytes]) -> None:
        self._archive = archive
        self._raw = raw
        self.member = member
        self.bytes_read = 0
        self._limit = min(member.size, archive.limits.max_member_bytes)

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (fewer only at the member's end)."""
        name = self.member.name
        try:
            data = self._raw.read(n)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            # BadZipFile covers a CRC mismatch (zipfile itself stops at the declared size);
            # EOFError a member shorter than its header says.
            raise DatasetError(f"zip entry {name!r} cannot be read: {exc}") from exc
        self.bytes_read += len(data)
        self._archive._read_total += len(data)
        if self.bytes_read > self._limit:
            raise DatasetError(f"zip entry {name!r} inflates beyond its declared size")
        if self._archive._read_total > self._archive.limits.max_total_bytes:
            raise DatasetError(f"the archive inflates to more than {self._archive.limits.max_total_bytes} bytes")
        return data

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> MemberStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

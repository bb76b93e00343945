"""`ganft usage` (a tenant's stored bytes, over the API) and `ganft admin gc` (the garbage collector, here).

ganft usage [--json]                 bytes by kind, total and quota of the key's tenant
ganft admin gc [--dry-run] [--json]  one pass of ganft/retention.py on GANFT_DATABASE_URL and
                                     GANFT_STORE_URL: the store keys deleted (or, dry, that would
                                     be) on stdout, one a line; the summary on stderr
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ganft.cli_user import common_options, emit_json, with_client

if TYPE_CHECKING:
    from ganft.client import Client


def human(n: int) -> str:
    """Bytes for people: 1.5 GiB, 320 KiB, 12 B."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _usage(api: Client, args: argparse.Namespace) -> int:
    usage = api.usage()
    if args.json:
        emit_json(usage)
        return 0
    quota = usage.max_storage_bytes
    rows: list[tuple[str, int | str]] = [*usage.by_kind.items(), ("total", usage.total_bytes)]
    rows.append(("quota", quota if quota is not None else "none"))
    width = max(len(kind) for kind, _ in rows)
    for kind, value in rows:
        shown = f"{value:>15,} bytes  ({human(value)})" if isinstance(value, int) else value
        sys.stdout.write(f"{kind.ljust(width)}  {shown}\n")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from ganft.retention import collect
    from ganft.settings import get_settings

    report = collect(get_settings(), dry_run=args.dry_run)
    if args.json:
        emit_json(report)
        return 0
    sys.stdout.writelines(key + "\n" for key in report.deleted)
    verb = "would delete" if args.dry_run else "deleted"
    sys.stderr.write(
        f"{verb} {len(report.deleted)} store objects/folders ({human(report.freed_bytes)}); "
        f"retention {'would drop' if args.dry_run else 'dropped'} {report.checkpoints_dropped} checkpoint and "
        f"{report.artifacts_dropped} artifact rows; {report.kept_recent} unreferenced objects are younger than "
        "GANFT_GC_GRACE_S and wait for the next pass\n"
    )
    return 0


def add_commands(commands: Any) -> None:
    """Add `usage` to the `ganft` sub-command parser."""
    cmd = commands.add_parser("usage", parents=[common_options()], help="your stored bytes by kind, and your quota")
    cmd.set_defaults(run=with_client(_usage))


def add_admin_commands(admin: Any) -> None:
    """Add `gc` to the `ganft admin` sub-command parser."""
    gc = admin.add_parser("gc", help="garbage-collect the artifact store now (retention policies, unreferenced files)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    gc.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    gc.set_defaults(run=_gc)

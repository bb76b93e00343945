"""The `ganft` command: database migrations, API keys, the embedded stack, and the API's user commands.

    ganft migrate                                  alembic upgrade head on GANFT_DATABASE_URL
    ganft admin create-key --tenant NAME [--name LABEL]   prints the new key on one line
    ganft admin revoke-key PREFIX
    ganft admin list-keys [--tenant NAME]
    ganft up [--host H] [--port P]                 API + a worker on this machine (ganft.embedded)
    ganft demo [--steps N] [--seed S] [--url U --key K]   a tiny end-to-end run on scikit-learn's digits
    ganft admin set-webhook --tenant NAME [URL | --clear]   the tenant's default webhook URL (prints the secret)
    ganft admin gc [--dry-run] [--json]            garbage-collect the artifact store now (ganft.retention)
    ganft admin set-quota --tenant NAME [--max-running N] [--max-storage-bytes B] [--clear]   prints the quotas

User commands on the SDK (ganft.cli_user, ganft.cli_jobs; --url/GANFT_URL, --key/GANFT_API_KEY, --json):
    ganft datasets upload|list|show|delete    ganft models upload|list|show|delete    ganft usage
    ganft jobs create|list|show|cancel|watch|logs    ganft artifacts list|download

Output meant for scripts goes to stdout (the key, tables, a watched job's summary); messages and
errors go to stderr. Logging is at WARNING unless `-v` (INFO) or `-vv` (DEBUG, with every HTTP request).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ganft import cli_jobs, cli_storage, cli_user

log = logging.getLogger("ganft")


def note(text: str) -> None:
    """A message for the person at the terminal (stderr), shown at every verbosity."""
    sys.stderr.write(text + "\n")


def _migrate(_: argparse.Namespace) -> int:
    from ganft.db.migrate import upgrade
    from ganft.settings import get_settings

    url = get_settings().database_url
    upgrade(url)
    note("database is at the newest schema")
    return 0


def _create_key(args: argparse.Namespace) -> int:
    from ganft.db.session import session_scope
    from ganft.repo import keys

    with session_scope() as session:
        row, key = keys.create_key(session, tenant_name=args.tenant, label=args.name)
    note(f"created key {row.prefix} for tenant {args.tenant!r} (shown once; only its hash is stored)")
    sys.stdout.write(key + "\n")
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    from ganft.db.session import session_scope
    from ganft.repo import keys

    try:
        with session_scope() as session:
            revoked = keys.revoke_key(session, prefix=args.prefix)
    except keys.AmbiguousPrefix as exc:
        log.error("%s", exc)
        return 1
    if not revoked:
        log.error("no active key with prefix %r", args.prefix)
        return 1
    note(f"revoked key {args.prefix}")
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    from ganft.db.session import session_scope
    from ganft.repo import keys

    with session_scope() as session:
        rows = keys.list_keys(session, tenant_name=args.tenant)
        lines = [
            f"{key.prefix}\t{tenant}\t{key.name or '-'}\t{key.created_at:%Y-%m-%d %H:%M}\t"
            f"{'revoked' if key.revoked_at else 'active'}\n"
            for key, tenant in rows
        ]
    sys.stdout.writelines(lines)
    return 0


def _up(args: argparse.Namespace) -> int:
    from ganft import embedded  # the embedded stack pulls in uvicorn and the worker: load it only here

    return int(embedded.up(args) or 0)


def _demo(args: argparse.Namespace) -> int:
    from ganft import embedded

    return int(embedded.demo(args) or 0)


def _set_webhook(args: argparse.Namespace) -> int:
    from ganft.db.session import session_scope
    from ganft.repo import webhooks
    from ganft.settings import get_settings

    if (args.url is None) == (not args.clear):
        log.error("give a URL or --clear")
        return 2
    allow_private = get_settings().webhook_allow_private
    try:
        with session_scope() as session:
            secret = webhooks.set_tenant_webhook(
                session, tenant_name=args.tenant, url=args.url, allow_private=allow_private
            )
    except webhooks.WebhookConfigError as exc:
        log.error("%s", exc)
        return 1
    if args.clear:
        note(f"tenant {args.tenant!r} has no default webhook now")
        return 0
    if get_settings().webhook_secret:
        note(f"webhooks of {args.tenant!r} are signed with GANFT_WEBHOOK_SECRET")
    else:
        note(f"tenant {args.tenant!r}: webhooks to {args.url} are signed with this secret (Standard Webhooks)")
        sys.stdout.write(secret + "\n")
    return 0


def _set_quota(args: argparse.Namespace) -> int:
    from ganft.db.session import session_scope
    from ganft.repo import quotas

    given = {"max_running_jobs": args.max_running, "max_storage_bytes": args.max_storage_bytes}
    changes = {name: value for name, value in given.items() if value is not None}
    if args.clear == bool(changes):
        log.error("give --max-running and/or --max-storage-bytes, or --clear")
        return 2
    try:
        with session_scope() as session:
            if args.clear:
                quota = quotas.set_quota(
                    session, tenant_name=args.tenant, max_running_jobs=None, max_storage_bytes=None
                )
            else:
                quota = quotas.set_quota(session, tenant_name=args.tenant, **changes)
    except (quotas.UnknownTenant, ValueError) as exc:
        log.error("%s", exc)
        return 1

    def shown(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    note(
        f"tenant {quota.tenant!r}: at most {shown(quota.max_running_jobs)} running jobs, "
        f"{shown(quota.max_storage_bytes)} stored bytes"
    )
    sys.stdout.write(f"{quota.tenant}\t{shown(quota.max_running_jobs)}\t{shown(quota.max_storage_bytes)}\n")
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganft", description="GAN fine-tuning training-job service")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log at INFO (-vv: DEBUG, with every HTTP request)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="upgrade the database to the newest schema").set_defaults(run=_migrate)

    admin = commands.add_parser("admin", help="API keys").add_subparsers(dest="admin_command", required=True)
    create = admin.add_parser("create-key", help="create an API key (and the tenant if needed); prints the key")
    create.add_argument("--tenant", required=True, help="tenant name")
    create.add_argument("--name", default=None, help="a label for the key")
    create.set_defaults(run=_create_key)
    revoke = admin.add_parser("revoke-key", help="revoke the key with this prefix (gft_<prefix>_...)")
    revoke.add_argument("prefix")
    revoke.set_defaults(run=_revoke_key)
    listing = admin.add_parser("list-keys", help="prefix, tenant, label, created, state of every key")
    listing.add_argument("--tenant", default=None)
    listing.set_defaults(run=_list_keys)
    hook = admin.add_parser("set-webhook", help="a tenant's default webhook URL (for jobs that name none)")
    hook.add_argument("--tenant", required=True, help="tenant name")
    hook.add_argument("url", nargs="?", default=None, help="http(s) URL that receives job.* events")
    hook.add_argument("--clear", action="store_true", help="remove the default")
    hook.set_defaults(run=_set_webhook)
    cli_storage.add_admin_commands(admin)  # ganft admin gc [--dry-run]
    quota = admin.add_parser("set-quota", help="a tenant's quotas: running jobs, stored bytes (unset: unlimited)")
    quota.add_argument("--tenant", required=True, help="tenant name")
    quota.add_argument(
        "--max-running",
        type=_count,
        default=None,
        metavar="N",
        help="jobs of the tenant running at once (0 holds them all queued); more stay queued",
    )
    quota.add_argument("--max-storage-bytes", type=_count, default=None, metavar="B", help="bytes the tenant may store")
    quota.add_argument("--clear", action="store_true", help="remove both quotas (unlimited)")
    quota.set_defaults(run=_set_quota)

    up = commands.add_parser("up", help="run the API and a worker on this machine (embedded default)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(run=_up)

    demo = commands.add_parser("demo", help="a tiny end-to-end run on scikit-learn's bundled digits")
    demo.add_argument("--steps", type=int, default=None, help="training steps of the demo job (default: the demo's)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--url", default=None, help="use this running server instead of starting an embedded stack")
    demo.add_argument("--key", default=None, help="an API key of the server given by --url")
    demo.set_defaults(run=_demo)

    cli_user.add_commands(commands)
    cli_jobs.add_commands(commands)
    cli_storage.add_commands(commands)  # ganft usage
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = int(args.verbose or 0)
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # One line per request or plugin otherwise: only at -vv.
    for noisy in ("httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

"""The ``lpt`` command. Each sub-command's options are declared here; the work lives in the
module that owns it (imported lazily, so ``lpt status`` does not load the stream processors).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lpt.settings import PROJECT_ROOT, Settings, get_settings


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """``module:function`` resolved when the command runs."""

    def run(args: argparse.Namespace) -> int:
        module, _, func = target.partition(":")
        handler: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), func
        )
        return handler(args)

    return run


def _up(args: argparse.Namespace) -> int:
    from lpt.services import up

    url = up(import_sample=args.import_sample, workers=not args.no_workers)
    print(f"Local Priority Targeting is running. Open {url}")
    return 0


def _down(_: argparse.Namespace) -> int:
    from lpt.services import down

    down()
    return 0


def _status(_: argparse.Namespace) -> int:
    from lpt.services import status

    return status()


def _prepare(_: argparse.Namespace) -> int:
    from lpt.services import prepare, start_backing_services

    start_backing_services()
    asyncio.run(prepare())
    return 0


def _init(_: argparse.Namespace) -> int:
    """Prepare configured (possibly remote) servers: migrations, topics, reference data."""
    from lpt.services import prepare
    from reference.loaders import load_reference_if_empty

    asyncio.run(prepare())
    asyncio.run(load_reference_if_empty(get_settings()))
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from lpt.db import migrate

    applied = asyncio.run(migrate())
    print("applied: " + (", ".join(applied) or "nothing (up to date)"))
    return 0


def _topics(_: argparse.Namespace) -> int:
    from lpt.kafka import ensure_topics

    created = asyncio.run(ensure_topics())
    print("created: " + (", ".join(created) or "nothing (all exist)"))
    return 0


def _export_schemas(args: argparse.Namespace) -> int:
    from schemas.registry import json_schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{name}.schema.json").write_text(
            json.dumps(schema, indent=2, sort_keys=True) + "\n"
        )
    print(f"wrote {len(json_schemas())} schemas to {out}")
    return 0


def _config(_: argparse.Namespace) -> int:
    settings = get_settings()
    for env, doc in Settings.describe():
        attr = next(f for f, e in _env_to_field().items() if e == env)
        value: Any = getattr(settings, attr)
        if attr == "ingest_api_keys":
            value = ",".join(sorted(set(value.values()))) or "(none)"
        print(f"{env:28} {value!s:40} {doc}")
    return 0


def _env_to_field() -> dict[str, str]:
    from dataclasses import fields

    return {f.name: f.metadata["env"] for f in fields(Settings)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpt", description="Local Priority Targeting")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start Kafka, PostgreSQL, workers and the web service")
    p.add_argument("--import-sample", action="store_true", help="import the police.uk sample")
    p.add_argument("--no-workers", action="store_true", help="start only the web service")
    p.set_defaults(func=_up)
    sub.add_parser("down", help="stop everything lpt up started").set_defaults(func=_down)
    sub.add_parser("status", help="show what runs").set_defaults(func=_status)
    sub.add_parser(
        "prepare", help="start Kafka and PostgreSQL, migrate, create topics"
    ).set_defaults(func=_prepare)
    sub.add_parser(
        "init", help="on configured servers: migrate, create topics, load reference data"
    ).set_defaults(func=_init)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)
    sub.add_parser("topics", help="create the catalogue's topics").set_defaults(func=_topics)
    sub.add_parser("config", help="print the settings and their variables").set_defaults(
        func=_config
    )

    p = sub.add_parser("export-schemas", help="write JSON Schema for every event")
    p.add_argument("out", nargs="?", default=str(PROJECT_ROOT / "schemas" / "json"))
    p.set_defaults(func=_export_schemas)

    imp = sub.add_parser("import", help="import data into Kafka").add_subparsers(
        dest="source", required=True
    )
    p = imp.add_parser("police-uk", help="publish police.uk street-level CSV rows as crime events")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_lazy("producers.police_uk:cli"))

    ref = sub.add_parser("reference", help="reference data in PostgreSQL").add_subparsers(
        dest="action", required=True
    )
    p = ref.add_parser("load", help="load postcodes, IMD, wards and Census populations")
    p.add_argument("--data-dir", type=Path, default=None, help="defaults to LPT_DATA_DIR")
    p.add_argument("--force", action="store_true", help="reload even if already loaded")
    p.set_defaults(func=_lazy("reference.loaders:cli"))

    p = sub.add_parser("generate", help="seeded synthetic residents, surveys and door knocks")
    p.add_argument("--residents", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--waves", type=int, default=2)
    p.add_argument("--start", default="2026-01-01", help="first day of the synthetic period")
    p.add_argument("--out", type=Path, default=None, help="write JSON lines here instead of Kafka")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_lazy("producers.synthetic:cli"))

    p = sub.add_parser("serve", help="run the web service (foreground)")
    p.set_defaults(func=_lazy("api.app:cli"))

    p = sub.add_parser("worker", help="run a stream worker (foreground)")
    p.add_argument(
        "--role",
        choices=("all", "input", "stages", "scorer"),
        default="all",
        help="all: the stages here, the input source and the scorer in child processes"
        " (default); or one part only",
    )
    p.set_defaults(func=_lazy("streams.worker:cli"))

    p = sub.add_parser("notify", help="run the notification worker (foreground)")
    p.add_argument(
        "--until-idle", action="store_true", help="exit once caught up and nothing is due"
    )
    p.set_defaults(func=_lazy("consumers.notifications.worker:cli"))

    p = sub.add_parser("mail-sink", help="demo mode: keep every e-mail as a file (foreground)")
    p.set_defaults(func=_lazy("lpt.mailsink:cli"))

    p = sub.add_parser(
        "rotate-master-key", help="re-wrap every per-person key under a new master key"
    )
    p.add_argument("--new-key", type=Path, default=None, help="file with 32 random bytes")
    p.add_argument("--yes", action="store_true", help="confirm web and workers are stopped")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_lazy("identity.rotation:cli"))

    p = sub.add_parser("survey-wave", help="invite every registered resident to a survey wave")
    p.add_argument("--wave", default=None, help="e.g. 2026Q4 (default: this quarter)")
    p.set_defaults(func=_lazy("api.public.surveys:cli"))

    p = sub.add_parser("cells", help="print the priority table")
    p.add_argument("--res", type=int, default=9)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_lazy("streams.cli:cells"))

    p = sub.add_parser("wait-idle", help="return when every consumer group has caught up")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=_lazy("streams.cli:wait_idle"))
    return parser


def command_names() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def unreachable(exc: BaseException, settings: Settings) -> str | None:
    """A one-line explanation when ``exc`` says Kafka or PostgreSQL could not be reached (a
    traceback says nothing more to an operator), else None. Addresses only: never the
    database URL, which may hold a password."""
    from urllib.parse import urlsplit

    from aiokafka.errors import KafkaConnectionError

    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach Kafka at {settings.bootstrap_servers}"
    db = urlsplit(settings.dsn)
    host, port = db.hostname or "localhost", db.port or 5432
    # asyncpg's "Connect call failed ('127.0.0.1', 5432)" names the resolved address.
    if isinstance(exc, OSError) and str(exc).endswith(f", {port})"):
        return f"cannot reach PostgreSQL at {host}:{port}"
    return None


def main(argv: list[str] | None = None) -> int:
    from lpt.logs import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        why = unreachable(exc, get_settings())
        if why is None:
            raise
        print(
            f"lpt {args.command}: {why}. Is it running? `lpt prepare` starts the project's own "
            "servers; LPT_KAFKA_BOOTSTRAP and LPT_DATABASE_URL point at others.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

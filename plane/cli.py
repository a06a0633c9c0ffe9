"""``temper plane``: run the management plane, or manage its API tokens."""

import argparse

from plane.settings import PlaneSettings
from temper import settings as settings_tree

SUMMARY = "run the management plane (L2) REST API, or create its API tokens"
DESCRIPTION = (
    "serve: run the REST API under /api/v1 over a watch cache of Nodes and Pods, with "
    "operator actions (cordon, drain, safe mode), bearer-token roles and an audit log.\n"
    "token create: store a new named token with a role and print it once."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the serve and token create subcommands."""
    commands = parser.add_subparsers(dest="plane_command", metavar="ACTION", required=True)
    serve = commands.add_parser("serve", help="run the REST API until SIGTERM")
    settings_tree.add_arguments(serve, PlaneSettings, "plane")

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_commands.add_parser(
        "create", help="create a named token and print it; it cannot be shown again"
    )
    create.add_argument("--name", dest="token_name", required=True, help="Unique token name")
    create.add_argument(
        "--role",
        dest="token_role",
        required=True,
        choices=["viewer", "operator", "admin"],
        help="viewer reads, operator also runs actions, admin also reads the audit log",
    )
    create.add_argument(
        "--database-path",
        dest="database_path",
        default=None,
        metavar="PATH",
        help=PlaneSettings.model_fields["database_path"].description,
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen plane subcommand."""
    from plane.store import Role, Store  # noqa: PLC0415 - keeps `temper --help` fast

    settings = settings_tree.load(PlaneSettings, "plane", args)
    if args.plane_command == "serve":
        from plane.service import run_plane  # noqa: PLC0415 - keeps `temper --help` fast

        return run_plane(settings)
    store = Store(settings.database_path)
    try:
        token = store.create_token(args.token_name, Role(args.token_role))
    finally:
        store.close()
    print(token)
    return 0

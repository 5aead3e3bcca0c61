"""Command-line options shared by the subcommands that use the Tiled catalogs.

Every subcommand that reads or writes runs calls :func:`add_catalog_arguments`
on its parser and :func:`catalogs_from_args` in ``run``, so they all accept
the same ``--data-dir`` / ``--tiled-uri`` / ``--api-key`` options.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from xsvs_bluesky.errors import XSVSError

__all__ = ["add_catalog_arguments", "catalogs_from_args"]

API_KEY_ENV = "TILED_API_KEY"


def add_uid_argument(parser: argparse.ArgumentParser) -> None:
    """Add the optional positional UID naming a derived run (default: latest)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "uid",
        nargs="?",
        metavar="UID",
        help="derived-run uid (or its first >= 5 characters), raw-run uid or "
        "scan_id; default the latest derived run",
    )


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-dir`` | ``--tiled-uri``, ``--api-key`` and the catalog keys."""
    group = parser.add_argument_group(
        "Tiled storage",
        "Where the runs are: the embedded server over a local folder (default "
        "./xsvs-data), or a running Tiled server.",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder of the embedded Tiled server (default ./xsvs-data); the "
        "server starts for this command and stops after it",
    )
    where.add_argument(
        "--tiled-uri",
        metavar="URI",
        help="address of a running Tiled server, e.g. http://host:8000; the API "
        f"key comes from ${API_KEY_ENV}",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"API key for --tiled-uri (default ${API_KEY_ENV}; prefer the "
        "variable, a command line is visible to other users)",
    )
    group.add_argument(
        "--raw-catalog",
        metavar="KEY",
        default="raw",
        help="key of the catalog of raw runs (default: raw)",
    )
    group.add_argument(
        "--processed-catalog",
        metavar="KEY",
        default="processed",
        help="key of the catalog of derived runs (default: processed)",
    )


def catalogs_from_args(args: argparse.Namespace, *, create: bool = False) -> Any:
    """Open the catalogs named by the options of :func:`add_catalog_arguments`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.
    create : bool, optional
        Allow a new embedded-server folder (False: ``--data-dir`` must hold
        a Tiled server already, so a typo does not start an empty one).

    Returns
    -------
    xsvs_bluesky.storage.Catalogs
        Use as a context manager (stops the embedded server).

    Raises
    ------
    XSVSError
        If the folder holds no data (``create=False``) or the server cannot
        be reached.
    """
    from xsvs_bluesky.storage import DEFAULT_DATA_DIR, open_catalogs

    names = {"raw": args.raw_catalog, "processed": args.processed_catalog}
    if args.tiled_uri is not None:
        key = args.api_key or os.environ.get(API_KEY_ENV)
        return open_catalogs(tiled_uri=args.tiled_uri, api_key=key, **names)
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    if not create and not (data_dir / "tiled").is_dir():
        raise XSVSError(
            f"{data_dir} holds no Tiled data; give --data-dir of an earlier "
            "analysis or --tiled-uri of a server"
        )
    print(f"starting the embedded Tiled server over {data_dir}", file=sys.stderr)
    return open_catalogs(data_dir=data_dir, api_key=args.api_key, **names)

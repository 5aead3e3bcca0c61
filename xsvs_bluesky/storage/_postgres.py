"""A PostgreSQL database as a data folder's Tiled catalog and table storage.

One address names one database for both: Tiled's catalog (run metadata,
through SQLAlchemy's ``asyncpg`` driver) and its tabular storage (the event
tables of the runs, through ADBC's libpq driver).  Frames and other arrays
stay in files in the data folder.

No password may be part of the address: Tiled logs its catalog address at
start, with the password.  libpq and asyncpg both read a password file
(``~/.pgpass`` or ``$PGPASSFILE``) and ``$PGPASSWORD``; a unix socket with
``peer`` authentication needs none.  No Tiled import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from xsvs_bluesky.errors import OptionError

__all__ = ["PostgresCatalog"]

_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")


@dataclass(frozen=True)
class PostgresCatalog:
    """A PostgreSQL database holding a folder's catalog and tables.

    Attributes
    ----------
    address : str
        ``postgresql://[user@]host[:port]/dbname[?host=/socket/dir&port=N]``,
        normalised (scheme ``postgresql``, never a password, a host in the
        network location even for a unix socket: Tiled's table storage
        refuses an empty one).
    """

    address: str

    @classmethod
    def parse(cls, uri: str) -> PostgresCatalog:
        """Check and normalise a catalog address given by the user.

        Raises
        ------
        OptionError
            If it is not a ``postgresql://`` address with a database name, or
            holds a password.
        """
        parts = urlsplit(uri.strip())
        if parts.scheme not in _SCHEMES:
            raise OptionError(
                f"catalog address {_redact(uri)!r} is not a PostgreSQL one; give "
                "postgresql://USER@HOST[:PORT]/DATABASE (or ...@localhost/DATABASE"
                "?host=/run/postgresql for a unix socket)"
            )
        if parts.password is not None:
            raise OptionError(
                f"catalog address {_redact(uri)!r} holds a password, which Tiled "
                "would write into its log; put it in ~/.pgpass (or the file named "
                "by PGPASSFILE), or use peer authentication on a unix socket"
            )
        dbname = parts.path.lstrip("/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if not dbname and not query.get("dbname"):
            raise OptionError(
                f"catalog address {uri!r} names no database; give "
                "postgresql://USER@HOST/DATABASE"
            )
        host = parts.hostname or "localhost"  # libpq's ?host= wins when given
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{user}{host}{port}"
        return cls(urlunsplit(("postgresql", netloc, "/" + dbname, parts.query, "")))

    @property
    def catalog_uri(self) -> str:
        """SQLAlchemy address of the catalog (asyncpg driver)."""
        return "postgresql+asyncpg" + self.address[len("postgresql") :]

    @property
    def tables_uri(self) -> str:
        """Tiled's table storage address (ADBC, libpq).

        The user goes into a ``user=`` parameter: Tiled 0.2.20 rebuilds an
        address with a user and no password as ``user:None@host``, so libpq
        would send the password "None" (and fail wherever one is required).
        """
        parts = urlsplit(self.address)
        if parts.username is None:
            return self.address
        query = "&".join(
            q
            for q in (f"user={quote(unquote(parts.username), safe='')}", parts.query)
            if q
        )
        netloc = parts.netloc.split("@", 1)[1]
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def describe(self) -> str:
        """Name the database: ``PostgreSQL database 'x' at HOST port N``."""
        parts = urlsplit(self.address)
        query = dict(parse_qsl(parts.query))
        where = query.get("host") or parts.hostname or "localhost"
        port = query.get("port") or parts.port
        name = query.get("dbname") or parts.path.lstrip("/")
        return f"PostgreSQL database {name!r} at {where}" + (
            f" port {port}" if port else ""
        )


def _redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable address>"

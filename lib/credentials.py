"""DES-style credentials: ``.desservices.ini`` sections and ``.netrc`` entries.

DES tooling keeps database and archive credentials in ``~/.desservices.ini``, one section
per service (``[db-desoper]``: user, passwd, type, server, port, name, service), and
refuses the file when group or others can read it. skyops does the same, for ``.netrc``
too. A :class:`Credentials` object never shows its password in ``repr`` or ``str``, so
it cannot leak into a log line, an exception, XCom or provenance by accident.
"""
from __future__ import annotations

import configparser
import netrc
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

from skyops.errors import CredentialError

DEFAULT_DESSERVICES = "~/.desservices.ini"
DESSERVICES_KEYS = ("user", "passwd", "type", "server", "port", "name", "service")


def check_private(path: Path) -> None:
    """Refuse a credential file that group or others may read (as DES's own tools do)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(
            f"{path}: credential file is accessible by group or others "
            f"(mode {stat.filemode(mode)}); run: chmod 600 {path}"
        )


@dataclass(frozen=True)
class Credentials:
    """One desservices section or netrc entry. The password is hidden from repr/str."""

    user: str
    passwd: str = field(repr=False)
    type: str = ""
    server: str = ""
    port: str = ""
    name: str = ""
    service: str = ""
    source: str = ""

    def __str__(self) -> str:
        return f"{self.user}@{self.server or '?'} ({self.source})"

    def sqlalchemy_url(self) -> str:
        """A SQLAlchemy URL for this database section (oracle+oracledb or postgresql)."""
        kind = self.type.lower()
        host = f"{self.server}:{self.port}" if self.port else self.server
        auth = f"{quote_plus(self.user)}:{quote_plus(self.passwd)}"
        if kind == "oracle":
            if self.service:
                return f"oracle+oracledb://{auth}@{host}/?service_name={quote_plus(self.service)}"
            return f"oracle+oracledb://{auth}@{host}/{self.name}"
        if kind in ("postgres", "postgresql"):
            return f"postgresql+psycopg2://{auth}@{host}/{self.name}"
        raise CredentialError(
            f"{self.source}: type {self.type!r} is not supported; expected 'oracle' or 'postgres'"
        )


def read_desservices(section: str, path: str | os.PathLike[str] | None = None) -> Credentials:
    """Read one section of a desservices file (default ``~/.desservices.ini``)."""
    p = Path(os.path.expanduser(path or os.environ.get("DES_SERVICES") or DEFAULT_DESSERVICES))
    if not p.is_file():
        raise CredentialError(f"{p}: desservices file not found; create it (chmod 600) with a [{section}] section")
    check_private(p)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(p)
    except configparser.Error as exc:
        raise CredentialError(f"{p}: not a valid desservices file ({type(exc).__name__})") from None
    if not parser.has_section(section):
        raise CredentialError(
            f"{p}: no section [{section}]; sections present: {', '.join(parser.sections()) or 'none'}"
        )
    sec = parser[section]
    missing = [k for k in ("user", "passwd") if not sec.get(k)]
    if missing:
        raise CredentialError(f"{p}: section [{section}] lacks {', '.join(missing)}")
    vals = {k: sec.get(k, "") for k in DESSERVICES_KEYS}
    return Credentials(source=f"{p}[{section}]", **vals)


def netrc_credentials(host: str, path: str | os.PathLike[str] | None = None) -> Credentials | None:
    """The ``.netrc`` login for ``host``, or None when the file or the entry is absent."""
    p = Path(os.path.expanduser(path or os.environ.get("NETRC") or "~/.netrc"))
    if not p.is_file():
        return None
    check_private(p)
    try:
        entry = netrc.netrc(str(p)).authenticators(host)
    except netrc.NetrcParseError as exc:
        raise CredentialError(f"{p}: not a valid netrc file (line {exc.lineno})") from None
    if entry is None:
        return None
    login, _account, password = entry
    return Credentials(user=login or "", passwd=password or "", server=host, source=f"{p}[{host}]")

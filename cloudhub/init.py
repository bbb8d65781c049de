"""``cloudhub init``: the hub's CA, its server certificate and an admin credential.

Creates what is missing and keeps what exists: a second CA would orphan every
joined node, so an existing CA is never replaced; a server certificate that
lacks a name asked for is re-issued by the same CA. Writes ``<data_dir>/admin.yaml``
(hub URL, CA, admin token; 0600), the CLI's config for this hub, like kubeadm's
admin.conf; when it exists, it is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml
from sqlalchemy.exc import SQLAlchemyError

from cloudhub import credentials
from cloudhub.config import HubConfig
from cloudhub.db import open_engine
from cloudhub.pki import default_hostnames, init_pki, pki_paths
from cloudhub.store import Store
from edgeward import certs
from edgeward.configfile import build, merged, read_yaml
from edgeward.daemon import config_file, data_directory
from edgeward.errors import ConfigError, SchemaTooNew

DEFAULT_CONFIG = "/etc/edgeward/cloudhub.yaml"


def build_parser() -> argparse.ArgumentParser:
    """The command line, also rendered as the manual page (packaging/deb/manpage.py)."""
    parser = argparse.ArgumentParser(
        prog="cloudhub init",
        description="Create the hub's CA (ECDSA P-256), a server certificate for the names "
        "the hub is reached by, and an admin credential, written as a ready CLI config to "
        "<data-dir>/admin.yaml. Safe to run again: it keeps what exists and never "
        "replaces the CA.",
        epilog="example: cloudhub init --data-dir /var/lib/edgeward/hub "
        "--hostname hub.example.com --ip 10.0.0.5",
    )
    parser.add_argument("--config", metavar="FILE", help=f"hub config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="the hub's data dir")
    parser.add_argument("--database", metavar="URL", help="the hub's database URL")
    parser.add_argument(
        "--hostname",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name gateways and the CLI reach the hub by; repeat for more "
        "(localhost and this machine's name are always included)",
    )
    parser.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDR",
        help="an IP address the hub is reached at; repeat for more (127.0.0.1 is included)",
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"cloudhub init: {problem}\n")
        return 2
    except certs.CertificateError as exc:
        sys.stderr.write(f"cloudhub init: {exc}\n")
        return 1


def run(args: argparse.Namespace) -> int:
    path = config_file(args.config, DEFAULT_CONFIG)
    data = read_yaml(path) if path else {}
    flags = {k: v for k, v in (("data_dir", args.data_dir), ("database", args.database)) if v}
    config = build(HubConfig, merged(data, flags))
    data_dir = data_directory(config.data_dir)
    hostnames = _unique([*default_hostnames(), *args.hostname])
    ips = _unique(["127.0.0.1", *args.ip])
    paths = pki_paths(data_dir)
    result = init_pki(paths, hostnames, ips)
    admin = data_dir / "admin.yaml"
    if admin.exists():
        result.kept.append(f"admin credential {admin}")
    else:
        token = _admin_token(config)
        host = args.hostname[0] if args.hostname else (args.ip[0] if args.ip else "localhost")
        host = f"[{host}]" if ":" in host else host
        ca_pem = paths.ca_cert.read_bytes()
        document = {
            "hub": f"https://{host}:{config.api_port}",
            "ca": ca_pem.decode("ascii"),
            "token": f"{certs.ca_hash(ca_pem)}.{token}",
        }
        certs.write_private(admin, yaml.safe_dump(document, sort_keys=False).encode())
        result.created.append(f"admin credential {admin} (mode 0600)")
    owner = _give_to_data_dir_owner(data_dir)
    if owner:
        result.created.append(f"ownership of what is in {data_dir}: {owner}")
    for line in result.created:
        print(f"created {line}")
    for line in result.kept:
        print(f"kept    {line}")
    print(
        "\nnext:\n"
        f"  cloudhub --data-dir {data_dir}{f' --config {path}' if path else ''}"
        "            start the hub\n"
        f"  export EDGEWARD_CONFIG={admin}   use the CLI as admin\n"
        "  edgeward token create --node NAME      a token to join a gateway"
    )
    return 0


def _admin_token(config: HubConfig) -> str:
    engine = open_engine(config.database_url())
    try:
        store = Store(engine)
        store.migrate()
        with store.writing() as tx:
            token, _row = credentials.create_token(
                tx.conn,
                "admin",
                ttl=None,
                created_by="cloudhub init",
                description="admin credential written by cloudhub init",
            )
        return token
    except (SQLAlchemyError, SchemaTooNew) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(
            [f"cannot write the admin credential to the database: {reason}"]
        ) from None
    finally:
        engine.dispose()


def _give_to_data_dir_owner(data_dir: Path) -> str | None:
    """Run as root on a data dir the service user owns (the package makes it so): what init
    wrote becomes that user's, or cloudhub.service could not read its own keys. Returns the
    owner's name when files were handed over."""
    import pwd

    owner = data_dir.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return None
    for path in [data_dir, *data_dir.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, owner.st_uid, owner.st_gid)
    try:
        return pwd.getpwuid(owner.st_uid).pw_name
    except KeyError:
        return str(owner.st_uid)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

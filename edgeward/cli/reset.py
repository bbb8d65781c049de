"""``edgeward reset``: undo ``edgeward join`` on this gateway.

1. Look: edgecore.service's state (on a systemd host), the node's credentials in
   ``<data-dir>/pki`` (``node.key``, ``node.crt``, ``ca.crt``, renewal ``.next``
   files and temporaries a crash left), the cache and outbox (``edge.db`` with its
   ``-wal``/``-shm``), the config. That is the :class:`Plan`; an empty one is
   "nothing to remove", so a second reset changes nothing and succeeds.
2. Check this user may carry it out (``run as root``) and that it is confirmed:
   ``--yes``, or a ``y`` typed on a terminal after seeing the plan.
3. Stop and disable the unit first, so edgecore is not using what goes next;
   remove the credentials (and the pki directory once empty); remove the data and
   the config only when asked. One line per action.

The hub still lists the node afterwards: only an admin can delete it there
(``edgeward delete node NAME``, which also revokes its certificate).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward import certs
from edgeward.cli import service
from edgeward.cli.common import add_command, out
from edgeward.cli.errors import CliError, UsageError
from edgeward.cli.join import DEFAULT_CONFIG, DEFAULT_DATA_DIR

CREDENTIALS = ("node.key", "node.crt", "ca.crt")
DATABASE = "edge.db"
DATABASE_FILES = (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", f"{DATABASE}-journal")
AS_ROOT = "run as root (sudo edgeward reset)"

EPILOG = f"""\
Keeps the cache and outbox ({DATABASE}) and the config unless told otherwise, so a
node joined again with a new token sends what it buffered. The hub still lists the
node: an admin deletes it with 'edgeward delete node NAME'.

examples:
  sudo edgeward reset                         asks before it removes anything
  sudo edgeward reset --yes --delete-data     no question; the cache and outbox go too
  edgeward reset -y --data-dir ./edge --config ./edge.yaml
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "reset",
        help="undo 'edgeward join' on this gateway (stop edgecore, remove its credentials)",
        description=f"Stop and disable {service.UNIT} (on a systemd host) and remove this "
        "node's key and certificates; the cache, the outbox and the config stay unless "
        "--delete-data or --delete-config says otherwise.",
        epilog=EPILOG,
        hub=False,
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"edgecore's data directory (default: the config's data_dir, else {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--config",
        dest="edgecore_config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the edgecore config join wrote (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--delete-data",
        action="store_true",
        help=f"remove the cache and outbox ({DATABASE}) too: what the node buffered is lost",
    )
    parser.add_argument(
        "--delete-config",
        action="store_true",
        help="remove the config (and a FILE.new join left beside it) too",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Plan:
    """What a reset finds and will do; ``unit`` is None when there is no unit to stop."""

    unit: service.UnitState | None
    unit_note: str
    data_dir: Path
    config_file: Path
    pki: Path
    credentials: tuple[Path, ...]
    node: str | None
    data: tuple[Path, ...]
    delete_data: bool
    config: tuple[Path, ...]
    delete_config: bool

    @property
    def removes(self) -> tuple[Path, ...]:
        return (
            self.credentials
            + (self.data if self.delete_data else ())
            + (self.config if self.delete_config else ())
        )

    @property
    def stops(self) -> bool:
        return self.unit is not None and (self.unit.running or self.unit.enabled)

    @property
    def empty(self) -> bool:
        return not (self.stops or self.removes)

    def preview(self) -> list[str]:
        """What it will do, for the confirmation question."""
        lines = [f"stop and disable {service.UNIT}"] if self.stops else []
        lines += [f"remove {path}" for path in self.removes]
        if self.data and not self.delete_data:
            lines.append(f"keep {self.kept_data}")
        if self.config_file in self.config and not self.delete_config:
            lines.append(f"keep the config {self.config_file} (--delete-config removes it)")
        return lines

    @property
    def kept_data(self) -> str:
        return f"the cache and outbox in {self.data_dir / DATABASE} (--delete-data removes them)"


def run(args: argparse.Namespace) -> int:
    try:
        plan = _plan(args)
        _check_permissions(plan)
    except PermissionError:
        raise CliError(AS_ROOT) from None
    if plan.unit_note:
        out(f"{plan.unit_note}\n")
    if plan.empty:
        out(f"nothing to remove: no node credentials in {plan.pki}\n")
        return 0
    if not args.yes:
        _confirm(plan)
    _carry_out(plan)
    return 0


def _plan(args: argparse.Namespace) -> Plan:
    config = Path(args.edgecore_config).absolute()
    settings = _read_config(config)
    data_dir = Path(args.data_dir or settings.get("data_dir") or DEFAULT_DATA_DIR).absolute()
    pki = data_dir / "pki"
    unit, unit_note = _unit()
    credentials = _credential_files(pki)
    node = _node_name(pki / "node.crt") or settings.get("node_name")
    data = tuple(p for name in DATABASE_FILES if (p := data_dir / name).exists())
    configs = tuple(p for p in (config, config.with_name(config.name + ".new")) if p.exists())
    return Plan(
        unit=unit,
        unit_note=unit_note,
        data_dir=data_dir,
        config_file=config,
        pki=pki,
        credentials=credentials,
        node=str(node) if node else None,
        data=data,
        delete_data=args.delete_data,
        config=configs,
        delete_config=args.delete_config,
    )


def _unit() -> tuple[service.UnitState | None, str]:
    if not service.is_systemd_host():
        return None, "systemd does not run this machine: stop edgecore yourself if it runs"
    state = service.unit_state()
    if not state.installed:
        return None, f"{service.UNIT} is not installed: stop edgecore yourself if it runs"
    return state, ""


def _credential_files(pki: Path) -> tuple[Path, ...]:
    """The key and certificates, renewals in progress (``.next``) and the temporaries
    (``.NAME.tmp``) a crash left, which may hold a key too."""
    if not pki.is_dir():
        return ()
    names = set(CREDENTIALS)
    names |= {f"{name}.next" for name in CREDENTIALS}
    names |= {f".{name}.tmp" for name in list(names)}
    return tuple(sorted((p for p in pki.iterdir() if p.name in names), key=_order))


def _order(path: Path) -> tuple[int, str]:
    """The key first: if anything stops the reset half way, the secret is gone."""
    return (0 if "node.key" in path.name else 1, path.name)


def _node_name(cert: Path) -> str | None:
    if not cert.is_file():
        return None
    try:
        return certs.subject_field(certs.decode_certificate_file(cert), "commonName")
    except (OSError, certs.CertificateError):
        return None


def _read_config(path: Path) -> dict[str, Any]:
    """The config's settings, or nothing when it is missing or not what join writes."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {
        k: v for k, v in loaded.items() if k in ("data_dir", "node_name") and isinstance(v, str)
    }


def _check_permissions(plan: Plan) -> None:
    """Refuse before anything changes when a step would be refused half way."""
    if plan.stops and not service.is_root():
        raise CliError(AS_ROOT)
    for path in plan.removes:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise CliError(AS_ROOT)


def _confirm(plan: Plan) -> None:
    if not sys.stdin.isatty():
        raise UsageError(
            "reset removes this node's credentials: pass --yes to do it without a terminal "
            "to confirm on"
        )
    out("edgeward reset will:\n" + "".join(f"  {line}\n" for line in plan.preview()))
    try:
        answer = input("reset this node? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed: nothing was changed")


def _carry_out(plan: Plan) -> None:
    if plan.unit is not None:
        for line in service.stop_and_disable(plan.unit):
            out(f"{line}\n")
    for path in plan.credentials:
        _remove(path)
    try:
        plan.pki.rmdir()  # only when empty: anything else there stays
    except OSError:
        pass
    else:
        out(f"removed the empty directory {plan.pki}\n")
    if plan.delete_data:
        for path in plan.data:
            _remove(path)
    elif plan.data:
        out(f"kept {plan.kept_data}\n")
    if plan.delete_config:
        for path in plan.config:
            _remove(path)
    elif plan.config_file in plan.config:
        config = plan.config_file
        out(
            f"kept the config {config}: a later join with different settings writes "
            f"{config}.new beside it (--delete-config removes it)\n"
        )
    if plan.credentials:
        name = plan.node or "NAME"
        out(
            f"note: the hub still lists node {name}: an admin deletes it, which also revokes "
            f"its certificate, with 'edgeward delete node {name}'\n"
        )


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CliError(f"cannot remove {path}: {exc.strerror}") from None
    out(f"removed {path}\n")

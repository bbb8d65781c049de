"""``edgeward join``: make this gateway a node of a hub, with a token and nothing else.

1. Fetch the hub's CA over TLS without trusting it yet, and check it against the
   SHA-256 the token pins; on a mismatch stop before anything is sent.
2. Make the node's key here (it never leaves the machine) and a CSR.
3. Over TLS verified with that CA, send the token and the CSR; receive the
   node certificate and the edge endpoint the hub announces.
4. Write ``<data-dir>/pki/{ca.crt,node.crt,node.key}`` and the edgecore config;
   an existing config that differs is never overwritten (the new one goes
   beside it as ``.new``). The cache and outbox in the data dir are untouched,
   so a node whose certificate expired while it was offline joins again and
   sends everything it buffered.
5. On a systemd host, run as root, with the config the packaged unit reads
   (``/etc/edgeward/edgecore.yaml``, written or kept): enable and restart
   ``edgecore.service`` and wait until edgecore's status line says it is connected
   to the hub (:mod:`edgeward.cli.service`). Otherwise print the command to run.
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeward import certs
from edgeward.cli import service
from edgeward.cli.common import add_command, out
from edgeward.cli.errors import CliError, UsageError
from edgeward.kinds import dns_subdomain_problem

DEFAULT_DATA_DIR = "/var/lib/edgeward/edge"
DEFAULT_CONFIG = "/etc/edgeward/edgecore.yaml"
MAX_ANSWER_BYTES = 256 * 1024
TOKEN_HINT = "ask an admin for one: edgeward token create --node NAME"

EPILOG = """\
The token is what 'edgeward token create' printed: <ca sha256>.<id>.<secret>.

Run as root on a systemd host with the edgecore.service unit installed, join
then enables and restarts it and waits until edgecore reports that it is
connected to the hub (--wait, --no-start). Elsewhere it prints the command that
starts edgecore. 'edgeward reset' undoes a join.

examples:
  sudo edgeward join --hub https://hub.example:10002 --token 4f2c…e1.k3x9a2.… --node press-7
  edgeward join --hub https://10.0.0.5:10002 --token … --node edge-1 \\
      --data-dir ./edge --config-out ./edge.yaml
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "join",
        help="join this gateway to a hub as a node (key, certificate, edgecore config)",
        description="Check the hub against the CA the token pins, make this node's key "
        "locally, get a certificate for it from the hub, and write a ready edgecore config; "
        "as root on a systemd host, start edgecore and wait until it is connected.",
        epilog=EPILOG,
        hub=False,
    )
    parser.add_argument("--hub", required=True, metavar="URL", help="the hub's https:// API URL")
    parser.add_argument("--token", required=True, help="the join token (pins the hub's CA)")
    parser.add_argument("--node", required=True, metavar="NAME", help="this node's name")
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"edgecore's data directory; credentials go to DIR/pki (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--config-out",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"where to write the edgecore config (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, metavar="SECONDS", help="per request (default 15)"
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the started edgecore to connect to the hub; 0: do not "
        "wait (default 120)",
    )
    parser.add_argument(
        "--no-start",
        action="store_true",
        help=f"do not enable or start {service.UNIT}; print the command that would",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    host, port, base = _hub_address(args.hub)
    pin = _pin(args.token)
    if (problem := dns_subdomain_problem(args.node)) is not None:
        raise UsageError(f'--node "{args.node}": {problem} (a DNS-1123 subdomain, e.g. edge-1)')
    _check_writable(Path(args.config_out))
    data_dir = Path(args.data_dir).absolute()
    pki = data_dir / "pki"
    try:
        pki.mkdir(parents=True, exist_ok=True)
        pki.chmod(0o700)
    except OSError as exc:
        raise CliError(f"cannot create {pki}: {exc.strerror}") from None

    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    status, raw = _request(unverified, host, port, "GET", base + "/api/v1/join/ca", None, args)
    if status != 200:
        raise CliError(f"{args.hub} did not hand out a CA (HTTP {status}): is it an Edgeward hub?")
    try:
        ca_pem = raw.decode("ascii")
        seen = certs.ca_hash(raw)
    except (UnicodeDecodeError, ValueError):
        raise CliError(f"{args.hub} answered with something that is not a certificate") from None
    if seen != pin:
        raise CliError(
            f"the hub at {args.hub} presented CA sha256:{seen}, but the token pins "
            f"sha256:{pin}: it is not the hub the token was made for (or something is in "
            "between); nothing was sent"
        )

    key = certs.new_private_key()
    csr = certs.node_csr(key, args.node).decode("ascii")
    verified = ssl.create_default_context(cadata=ca_pem)
    verified.minimum_version = ssl.TLSVersion.TLSv1_2
    body = {"token": args.token.strip(), "node": args.node, "csr": csr}
    status, raw = _request(verified, host, port, "POST", base + "/api/v1/join", body, args)
    answer = _json(raw)
    if status != 201:
        raise CliError(_refusal(status, answer, args))
    try:
        cert_pem = str(answer["certificate"])
        endpoints = [str(url) for url in answer["edgeEndpoints"]]
        not_after = float(answer["notAfter"])
    except (KeyError, TypeError, ValueError):
        raise CliError(f"the hub at {args.hub} sent a join answer this CLI cannot read") from None

    certs.write_public(pki / "ca.crt", ca_pem.encode("ascii"))
    certs.write_private(pki / "node.key", certs.private_key_pem(key))
    certs.write_public(pki / "node.crt", cert_pem.encode("ascii"))
    _give_to_data_dir_owner(data_dir, pki)
    config_path = Path(args.config_out)
    written = _write_config(config_path, args.node, data_dir, endpoints, args.hub)
    out(
        f"joined node {args.node} to {args.hub}; its certificate is valid until "
        f"{certs.utc(not_after)} and renews itself\n"
        f"credentials in {pki} (node.key never leaves this machine)\n{written.note}"
    )
    unit = _packaged_unit(config_path)
    packaged = unit is not None and unit.installed
    if packaged and written.usable and not args.no_start:
        _start(args.wait, endpoints)
        return 0
    if unit is not None and not packaged:
        out(f"{service.UNIT} is not installed on this machine, so it was not started\n")
    command = _start_command(config_path, restart=packaged)
    out(f"{'next' if written.usable else 'then run'}: {command}\n")
    return 0


def _packaged_unit(config: Path) -> service.UnitState | None:
    """The packaged unit's state when it would run edgecore with ``config`` and this user
    may start it (root on a systemd host); else None: the user starts edgecore."""
    if config.absolute() != service.UNIT_CONFIG:
        return None
    if not (service.is_root() and service.is_systemd_host()):
        return None
    return service.unit_state()


def _start_command(config: Path, *, restart: bool) -> str:
    if restart:
        return f"systemctl enable {service.UNIT} && systemctl restart {service.UNIT}"
    return "edgecore" if str(config) == DEFAULT_CONFIG else f"edgecore --config {config}"


def _start(wait: float, endpoints: list[str]) -> None:
    """Enable and (re)start the unit, then wait up to ``wait`` seconds for the hub link."""
    service.enable_and_restart()
    if wait == 0:
        out(f"enabled and restarted {service.UNIT}; not waiting for it to connect (--wait 0)\n")
        return
    out(f"enabled and restarted {service.UNIT}\n")

    def report(state: service.UnitState) -> None:
        out(f"waiting for edgecore to connect to the hub... (status: {state.describe()})\n")

    state = service.wait_connected(wait, endpoints=endpoints, report=report)
    out(f"edgecore is {state.status}\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < 10**6:
        raise argparse.ArgumentTypeError(f"must be from 0 to 999999 seconds, not {text}")
    return value


def _give_to_data_dir_owner(data_dir: Path, pki: Path) -> None:
    """Joined as root for a data dir another user owns (edgecore's service user): the
    credentials are that user's, or edgecore could not read its own key."""
    import os

    owner = data_dir.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    for path in (pki, pki / "ca.crt", pki / "node.key", pki / "node.crt"):
        os.chown(path, owner.st_uid, owner.st_gid)


def _hub_address(url: str) -> tuple[str, int, str]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f'--hub "{url}": {exc}') from None
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(
            f'--hub "{url}" must be the hub\'s https:// API URL, e.g. https://hub.example:10002'
        )
    return parts.hostname, port or 10002, parts.path.rstrip("/")


def _pin(token: str) -> str:
    parts = token.strip().split(".")
    if len(parts) != 3 or len(parts[0]) != 64 or not all(c in "0123456789abcdef" for c in parts[0]):
        raise UsageError(
            "--token must be the whole join token 'edgeward token create' printed "
            "(<ca sha256>.<id>.<secret>): the CA pin is what lets this node trust the hub"
        )
    return parts[0]


def _request(
    ctx: ssl.SSLContext,
    host: str,
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    args: argparse.Namespace,
) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPSConnection(host, port, timeout=args.timeout, context=ctx)
    headers = {"User-Agent": "edgeward-join", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(MAX_ANSWER_BYTES)
    except ssl.SSLCertVerificationError as exc:
        raise CliError(
            f"the hub's certificate does not verify for {host}: {exc.verify_message}; "
            f"on the hub, run 'cloudhub init --hostname {host}' (or --ip) and restart it"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(
            f"cannot reach the hub at {args.hub}: {reason or type(exc).__name__}"
        ) from None
    finally:
        conn.close()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _refusal(status: int, answer: Any, args: argparse.Namespace) -> str:
    message = answer.get("message") if isinstance(answer, dict) else None
    if not message:
        return f"the hub at {args.hub} refused the join (HTTP {status})"
    if status == 401 and "token" not in str(message):
        message = f"{message}; {TOKEN_HINT}"
    return f"the hub refused to join node {args.node}: {message}"


@dataclass(frozen=True)
class Written:
    """What became of the edgecore config: ``usable`` when FILE says what this join got
    (written, or kept as it was), not when the new one went beside it as FILE.new."""

    note: str
    usable: bool


def _write_config(path: Path, node: str, data_dir: Path, endpoints: list[str], hub: str) -> Written:
    import yaml  # only when joining: it costs `edgeward --help` a tenth of a second

    wanted = {"node_name": node, "data_dir": str(data_dir), "hub": {"endpoints": endpoints}}
    text = (
        f"# written by 'edgeward join' for {hub} on {time.strftime('%Y-%m-%d')}\n"
        "# every other setting has its default: edgecore --print-default-config lists them\n"
        + yaml.safe_dump(wanted, sort_keys=False)
    )
    existing = _read_existing(path)
    if existing is not None:
        if existing == wanted:
            return Written(f"kept {path} (it already says this)\n", usable=True)
        new = path.with_name(path.name + ".new")
        certs.write_public(new, text.encode())
        return Written(
            f"{path} exists and differs, so it was left alone; the config for this join is "
            f"in {new}: compare them and move it over {path} if it is right\n",
            usable=False,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        certs.write_public(path, text.encode())
    except OSError as exc:
        raise CliError(
            f"joined, but cannot write {path}: {exc.strerror}; pass --config-out FILE to "
            "write it elsewhere (join again with a new token)"
        ) from None
    return Written(f"wrote {path}\n", usable=True)


def _check_writable(path: Path) -> None:
    """Refuse before the token is spent when the config could not be written afterwards."""
    import os

    target = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    if not os.access(target, os.W_OK):
        raise UsageError(
            f"cannot write the edgecore config to {path} as this user: run as root, "
            "or pass --config-out FILE"
        )


def _read_existing(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read the existing config {path}: {exc.strerror}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return {"unreadable": True}

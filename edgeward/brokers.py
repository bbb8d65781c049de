"""An MQTT broker for ``make demo``, on any machine: use one, start Mosquitto, or start amqtt.

:func:`start_demo_broker` tries, in order (``prefer`` or ``$EDGEWARD_DEMO_BROKER``
may narrow or reorder it, e.g. ``EDGEWARD_DEMO_BROKER=embedded``):

1. ``running``: a broker already answering MQTT CONNECT with a successful CONNACK at
   127.0.0.1:1883 is used as it is, and left running.
2. ``mosquitto``: the ``mosquitto`` binary (PATH or /usr/sbin) is started on a free
   loopback port with a configuration and log file in the work directory.
3. ``embedded``: amqtt, a pure-Python broker, from ``.venv-broker/`` (made by
   ``scripts/broker-venv``; amqtt pins a websockets release that conflicts with
   ours, so it never goes into ``.venv``), on a free loopback port.

A broker this module starts runs in its own session, so a Ctrl-C meant for the
demo does not kill it before the demo's parts have said goodbye through it;
:meth:`BrokerHandle.stop` ends it.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import paho.mqtt.client as mqtt

from edgeward.errors import EdgewardError

BrokerKind = Literal["running", "mosquitto", "embedded"]
KINDS: tuple[BrokerKind, ...] = ("running", "mosquitto", "embedded")

#: Comma-separated broker kinds to try, in order, instead of KINDS.
PREFER_ENV = "EDGEWARD_DEMO_BROKER"
#: Where the amqtt virtual environment is, instead of ``.venv-broker`` beside ``.venv``.
BROKER_VENV_ENV = "EDGEWARD_BROKER_VENV"

DEFAULT_PROBE = ("127.0.0.1", 1883)
#: How long a started broker gets to answer its first CONNECT (amqtt imports slowly).
START_TIMEOUT = 30.0

HOW_TO_GET_ONE = (
    "install Mosquitto (sudo apt-get install mosquitto) or create the embedded broker "
    "with scripts/broker-venv"
)


class NoBrokerError(EdgewardError):
    """No broker could be used or started; ``attempts`` says what each kind found."""

    def __init__(self, attempts: list[str]) -> None:
        self.attempts = list(attempts)
        super().__init__(
            f"no MQTT broker for the demo ({'; '.join(self.attempts)}): {HOW_TO_GET_ONE}"
        )


@dataclass
class BrokerHandle:
    """A broker at ``host:port``; ``stop()`` ends it if this module started it."""

    host: str
    port: int
    kind: BrokerKind
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def address(self) -> str:
        """``host:port``, as ``--broker`` options take it."""
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """End the broker we started (a no-op for a ``running`` one); safe to call twice."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_demo_broker(
    workdir: Path,
    *,
    prefer: Sequence[str] | None = None,
    probe: tuple[str, int] = DEFAULT_PROBE,
    broker_venv: Path | None = None,
) -> BrokerHandle:
    """Use or start an MQTT broker for the demo; its files go in ``workdir``.

    ``prefer`` lists the kinds to try, in order (default: ``$EDGEWARD_DEMO_BROKER``, else
    running, mosquitto, embedded). ``probe`` is where a running broker is looked for.
    ``broker_venv`` is amqtt's virtual environment (default: ``$EDGEWARD_BROKER_VENV``,
    else ``.venv-broker`` beside the running ``.venv`` or in the source tree).
    Raises NoBrokerError, saying how to get a broker, when none of them works.
    """
    order = _order(prefer)
    attempts: list[str] = []
    for kind in order:
        if kind == "running":
            if mqtt_answers(*probe):
                return BrokerHandle(probe[0], probe[1], "running")
            attempts.append(f"nothing answers MQTT at {probe[0]}:{probe[1]}")
        elif kind == "mosquitto":
            binary = mosquitto_binary()
            if binary is None:
                attempts.append("mosquitto is not installed")
                continue
            workdir.mkdir(parents=True, exist_ok=True)
            handle = _start("mosquitto", functools.partial(_mosquitto_command, binary, workdir))
            if isinstance(handle, BrokerHandle):
                return handle
            attempts.append(handle)
        elif kind == "embedded":
            amqtt = amqtt_binary(broker_venv)
            if amqtt is None:
                where = ", ".join(str(p) for p in _venv_candidates(broker_venv))
                attempts.append(f"amqtt is not installed in {where}")
                continue
            workdir.mkdir(parents=True, exist_ok=True)
            handle = _start("embedded", functools.partial(_amqtt_command, amqtt, workdir))
            if isinstance(handle, BrokerHandle):
                return handle
            attempts.append(handle)
    raise NoBrokerError(attempts)


def mqtt_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if an MQTT broker at host:port accepts an anonymous CONNECT within ``timeout``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    answer: list[object] = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeward-probe-{uuid.uuid4().hex[:8]}"
    )
    client.connect_timeout = timeout
    client.on_connect = lambda c, u, flags, reason, props: answer.append(reason)
    try:
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
    except (OSError, ValueError):
        return False
    finally:
        try:
            if answer:
                client.disconnect()
                client.loop(timeout=0.05)
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()
    return bool(answer) and not getattr(answer[0], "is_failure", True)


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def amqtt_binary(broker_venv: Path | None = None) -> Path | None:
    """The ``amqtt`` script of the first broker venv that has one."""
    for venv in _venv_candidates(broker_venv):
        script = venv / "bin" / "amqtt"
        if os.access(script, os.X_OK):
            return script
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- internals -------------------------------------------------------------------------


def _order(prefer: Sequence[str] | None) -> list[BrokerKind]:
    if prefer is None:
        env = os.environ.get(PREFER_ENV, "").strip()
        prefer = [k.strip() for k in env.split(",") if k.strip()] if env else KINDS
    unknown = [k for k in prefer if k not in KINDS]
    if unknown or not prefer:
        raise ValueError(
            f"broker kinds {list(prefer)!r}: choose from {', '.join(KINDS)} "
            f"(in ${PREFER_ENV}, comma-separated)"
        )
    return [cast(BrokerKind, k) for k in prefer]


def _venv_candidates(broker_venv: Path | None) -> list[Path]:
    if broker_venv is not None:
        return [broker_venv]
    if os.environ.get(BROKER_VENV_ENV):
        return [Path(os.environ[BROKER_VENV_ENV])]
    candidates = [
        Path(sys.prefix).parent / ".venv-broker",  # beside the .venv we run from
        Path(__file__).resolve().parent.parent / ".venv-broker",  # the source tree
    ]
    return list(dict.fromkeys(p.resolve() for p in candidates))


#: Builds a broker's command line for a port: (argv, its log file, where its stdout goes).
_Command = Callable[[int], tuple[list[str], Path, Path]]


def _mosquitto_command(binary: str, workdir: Path, port: int) -> tuple[list[str], Path, Path]:
    conf = workdir / "mosquitto.conf"
    log = workdir / "mosquitto.log"
    conf.write_text(
        "# written by edgeward's demo; regenerated on every start\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "set_tcp_nodelay true\n"
        "persistence false\n"
        f"log_dest file {log}\n"
    )
    return [binary, "-c", str(conf)], log, workdir / "mosquitto.out"


def _amqtt_command(amqtt: Path, workdir: Path, port: int) -> tuple[list[str], Path, Path]:
    conf = workdir / "amqtt.yaml"
    conf.write_text(
        "# amqtt 0.12 broker configuration, written by edgeward's demo on every start\n"
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    log = workdir / "amqtt.log"  # amqtt logs to its standard output
    # amqtt itself refuses publishes to "$" topics; the launcher lets KubeEdge's through
    launcher = Path(__file__).with_name("amqtt_kubeedge.py")
    return [str(amqtt.parent / "python"), str(launcher), str(conf)], log, log


def _start(kind: BrokerKind, command_for: _Command, attempts: int = 3) -> BrokerHandle | str:
    """Start a broker on a free port (another port if that one was taken meanwhile).

    Returns the handle once it answers MQTT, or a line saying why it did not.
    """
    why = ""
    for _ in range(attempts):
        port = free_port()
        command, log_path, out_path = command_for(port)
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C for the demo is not for the broker
            )
        handle = BrokerHandle("127.0.0.1", port, kind, proc, log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if mqtt_answers("127.0.0.1", port, timeout=0.5):
                return handle
            time.sleep(0.1)
        handle.stop()
        why = f"{kind} did not start: {_tail(out_path, log_path)}"
    return why


def _tail(*paths: Path) -> str:
    text = ""
    for path in dict.fromkeys(paths):
        if path.exists():
            text += path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or "no output"

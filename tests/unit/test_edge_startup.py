"""What edgecore loads at start-up: RSS is the edge's budget, so rare paths stay unimported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloudhub.pki import Authority, init_pki, pki_paths
from edgeward import certs, mapper
from edgeward.addresses import BrokerAddress, parse_broker, parse_broker_url


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (this one has imported everything already)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_started_edge_has_not_loaded_yaml_the_mapper_sdk_or_deferred_modules() -> None:
    """Without a config file, edgecore's start-up imports neither PyYAML, the mapper SDK nor
    DMI's gRPC, and the modules it defers stay unloaded although websockets and paho import
    them."""
    run_python(
        """
        import sys
        from edgecore import main

        main.DEFAULT_CONFIG = "/nonexistent/edgecore.yaml"
        main.load_config(
            main.parse_args(
                ["--node", "edge-1", "--mqtt", "127.0.0.1:1883", "--hub", "ws://h:1", "--insecure"]
            )
        )
        main.defer_imports(*main.DEFERRED_IMPORTS)  # what run_edge does first, then:
        import edgecore.eventbus, edgecore.hublink, edgecore.nodestatus, edgecore.twins

        unwanted = ("yaml", "edgeward.mapper", "grpclib", "google.protobuf", "edgecore.dmi")
        loaded = [m for m in unwanted if m in sys.modules]
        assert not loaded, loaded  # DMI (gRPC, protobuf) only when dmi.enabled
        for name in main.DEFERRED_IMPORTS:
            assert "__getattr__" in vars(sys.modules[name]), f"{name} was loaded"
        """
    )


def test_a_tls_edge_checks_its_certificate_without_loading_cryptography(tmp_path: Path) -> None:
    """With a node certificate (wss://), start-up reads the certificate with the standard
    library: ``cryptography`` costs about 10 MB of RSS and is only loaded to renew, in a
    child process."""
    paths = pki_paths(tmp_path / "hub")
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    key = certs.new_private_key()
    signed = Authority(paths).sign_node(certs.node_csr(key, "edge-1"), "edge-1", 30)
    pki = tmp_path / "edge" / "pki"
    pki.mkdir(parents=True)
    (pki / "ca.crt").write_bytes(paths.ca_cert.read_bytes())
    (pki / "node.crt").write_bytes(signed.pem)
    certs.write_private(pki / "node.key", certs.private_key_pem(key))
    run_python(
        f"""
        import sys
        from edgecore import main, transport
        from edgecore.credentials import client_context

        main.DEFAULT_CONFIG = "/nonexistent/edgecore.yaml"
        args = ["--node", "edge-1", "--hub", "wss://localhost:1"]
        args += ["--data-dir", "{tmp_path / "edge"}"]
        config = main.load_config(main.parse_args(args))
        client_context(config.hub)
        import edgecore.hublink
        assert "cryptography" not in sys.modules, "cryptography was loaded"
        """
    )


def test_help_and_default_config_do_not_load_the_daemon() -> None:
    """``--help`` and ``--print-default-config`` need neither websockets nor paho."""
    run_python(
        """
        import contextlib, io, sys
        from edgecore import main

        with contextlib.redirect_stdout(io.StringIO()):
            assert main.main(["--print-default-config"]) == 0
            try:
                main.main(["--help"])
            except SystemExit as exc:
                assert exc.code == 0
        loaded = [m for m in ("websockets", "paho", "psutil", "edgecore.twins") if m in sys.modules]
        assert not loaded, loaded
        """
    )


def test_a_deferred_module_loads_on_first_use() -> None:
    """``import`` binds a deferred module without running it; the first attribute read runs
    it, and ``from … import`` works as usual. Missing modules are ignored."""
    run_python(
        """
        import sys
        from edgeward.daemon import defer_imports

        assert "csv" not in sys.modules and "xml.dom.minidom" not in sys.modules
        defer_imports("csv", "xml.dom.minidom", "no_such_module_here")
        import csv
        import xml.dom.minidom

        assert "reader" not in vars(csv)
        assert "no_such_module_here" not in sys.modules
        assert callable(csv.reader)
        assert list(csv.reader(["a,b"])) == [["a", "b"]]
        from xml.dom.minidom import parseString

        assert parseString("<a/>").documentElement.tagName == "a"
        assert "__getattr__" not in vars(csv)
        try:
            csv.no_such_attribute
        except AttributeError:
            pass
        else:
            raise AssertionError("a missing attribute must raise AttributeError")
        """
    )


def test_a_deferred_module_read_from_two_threads_is_whole_in_both(tmp_path: Path) -> None:
    """A thread reading a deferred module while another thread runs its code waits for the
    whole module: paho's two connecting threads read urllib.request that way, and the
    second one used to get an AttributeError (edgecore crashed with PySocks installed)."""
    (tmp_path / "slow_module.py").write_text(
        "import deferred_sync\n"
        "deferred_sync.started.set()\n"
        "deferred_sync.release.wait(10)\n"
        "VALUE = 42\n"
    )
    run_python(
        f"""
        import sys, threading, time, types
        sys.path.insert(0, {str(tmp_path)!r})
        sync = types.ModuleType("deferred_sync")
        sync.started, sync.release = threading.Event(), threading.Event()
        sys.modules["deferred_sync"] = sync
        from edgeward.daemon import defer_imports

        defer_imports("slow_module")
        import slow_module

        results = {{}}

        def read(who):
            try:
                results[who] = slow_module.VALUE
            except AttributeError as exc:
                results[who] = exc

        first = threading.Thread(target=read, args=("first",))
        first.start()
        assert sync.started.wait(10)
        second = threading.Thread(target=read, args=("second",))
        second.start()
        second.join(0.3)  # before the fix it had failed by now; with it, it waits
        sync.release.set()
        first.join(10)
        second.join(10)
        assert results == {{"first": 42, "second": 42}}, results
        """
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("broker", ("broker", 1883)),
        ("broker:8883", ("broker", 8883)),
        ("[::1]:1884", ("::1", 1884)),
        ("[::1]", ("::1", 1883)),
        ("::1", ("::1", 1883)),
        ("h:0", "bad broker port in 'h:0'"),
        ("h:65536", "bad broker port in 'h:65536'"),
        ("h:x", "bad broker port in 'h:x'"),
        (":1883", "bad broker address ':1883': expected HOST:PORT"),
        ("", "bad broker address '': expected HOST:PORT"),
        ("[::1", "bad broker address '[::1': expected [IPV6]:PORT"),
        ("[::1]x", "bad broker address '[::1]x': expected [IPV6]:PORT"),
        ("a:b:c", ("a:b:c", 1883)),
        ("h: 1883", "bad broker port in 'h: 1883'"),
        ("tcp://10.0.0.5:1884", ("10.0.0.5", 1884)),
        ("mqtt://broker", ("broker", 1883)),
        (
            "ssl://broker:8883",
            "'ssl://broker:8883' is a TLS broker: this client connects without TLS",
        ),
    ],
)
def test_broker_addresses(text: str, expected: object) -> None:
    """``--mqtt`` (edgecore, the demo, the mapper SDK): HOST[:PORT] or [IPV6][:PORT], or
    the one-line reason it is refused."""
    try:
        got: object = parse_broker(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected
    assert mapper.parse_broker is parse_broker


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883, False)),
        ("TCP://broker", BrokerAddress("broker", 1883, False)),
        ("mqtt://broker:1884/", BrokerAddress("broker", 1884, False)),
        ("ssl://broker", BrokerAddress("broker", 8883, True)),
        ("ssl://broker:443", BrokerAddress("broker", 443, True)),
        ("mqtts://[::1]", BrokerAddress("::1", 8883, True)),
        ("tls://broker:8884", BrokerAddress("broker", 8884, True)),
        ("broker:1883", BrokerAddress("broker", 1883, None)),
        ("[::1]:1885", BrokerAddress("::1", 1885, None)),
        (
            "ws://broker:9001",
            "unsupported broker scheme 'ws' in 'ws://broker:9001': use tcp://, ssl://, "
            "mqtt:// or mqtts:// (or HOST:PORT)",
        ),
        (
            "http://broker",
            "unsupported broker scheme 'http' in 'http://broker': use tcp://, ssl://, "
            "mqtt:// or mqtts:// (or HOST:PORT)",
        ),
        (
            "tcp://user:pw@broker:1883",
            "bad broker address 'tcp://user:pw@broker:1883': a user name or password does "
            "not go in the URL (set mqtt.username and mqtt.password_file)",
        ),
        (
            "tcp://broker:1883/x",
            "bad broker address 'tcp://broker:1883/x': expected tcp://HOST[:PORT]",
        ),
        ("tcp://broker?x=1", "bad broker address 'tcp://broker?x=1': expected tcp://HOST[:PORT]"),
        ("tcp://", "bad broker address 'tcp://': expected HOST:PORT"),
        ("tcp://:1883", "bad broker address 'tcp://:1883': expected HOST:PORT"),
        ("tcp://h:99999", "bad broker port in 'tcp://h:99999'"),
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883, False)),
        (
            "mqtt://127.0.0.1:1883:1883",
            "bad broker address 'mqtt://127.0.0.1:1883:1883': expected mqtt://HOST[:PORT] "
            "(an IPv6 address in brackets)",
        ),
        ("tcp://bro ker", "bad broker address 'tcp://bro ker': expected HOST:PORT"),
        (
            "://broker",
            "unsupported broker scheme '' in '://broker': use tcp://, ssl://, mqtt:// or "
            "mqtts:// (or HOST:PORT)",
        ),
    ],
)
def test_broker_urls_as_kubeedge_writes_them(text: str, expected: object) -> None:
    """tcp:// and ssl:// (KubeEdge's configs and mappers), mqtt:// and mqtts://, or
    HOST:PORT; the scheme says whether the broker speaks TLS and its default port."""
    try:
        got: object = parse_broker_url(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected

"""Run a simulator on a free local port in a background thread (uvicorn), optionally over TLS.

TLS (needed by simple-salesforce, which always builds ``https://`` URLs) uses a self-signed
certificate for ``127.0.0.1``/``localhost`` (and any ``tls_names``) generated with
``cryptography`` at start; the certificate file is its own CA, so clients pass its path as
``verify``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_self_signed(directory: Path, names: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1/localhost (+ ``names``); returns (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nexus-connector-simulator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    *(x509.DNSName(n) for n in names),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sim-cert.pem", directory / "sim-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass
class RunningSimulator:
    """A simulator served on ``base_url``; ``ca_path`` is set when served over TLS."""

    app: Any
    base_url: str
    ca_path: str | None
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def verify(self) -> bool | str:
        """What a client passes as ``verify`` to trust this server."""
        return self.ca_path if self.ca_path is not None else True

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    app: Any,
    *,
    tls: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_names: tuple[str, ...] = (),
) -> RunningSimulator:
    """Serve ``app`` on ``host:port`` (0 = a free port) in a daemon thread; returns when ready.

    ``tls_names`` are extra DNS names the TLS certificate is valid for.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    tmp: tempfile.TemporaryDirectory[str] | None = None
    ssl_kw: dict[str, Any] = {}
    ca_path: str | None = None
    if tls:
        tmp = tempfile.TemporaryDirectory(prefix="nexus-sim-tls-")
        cert, key = write_self_signed(Path(tmp.name), tls_names)
        ssl_kw = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        ca_path = str(cert)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30, **ssl_kw
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="connector-sim"
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("simulator failed to start")
        time.sleep(0.01)
    scheme = "https" if tls else "http"
    return RunningSimulator(app, f"{scheme}://{host}:{bound_port}", ca_path, server, thread, tmp)


def make_simulator(type_: str, *, records: int = 120, latency: float = 0.0) -> Any:
    """A fresh simulator of connector ``type_`` seeded with ``records`` records."""
    from connectors.simulators.m365 import M365Simulator
    from connectors.simulators.salesforce import SalesforceSimulator
    from connectors.simulators.sap import SapSimulator
    from connectors.simulators.servicenow import ServiceNowSimulator

    factories: dict[str, Any] = {
        "salesforce": SalesforceSimulator,
        "sap": SapSimulator,
        "servicenow": ServiceNowSimulator,
        "m365": M365Simulator,
    }
    if type_ not in factories:
        raise ValueError(f"no simulator for {type_!r} (choose from {', '.join(factories)})")
    return factories[type_](records=records, latency=latency)


TLS_TYPES = frozenset({"salesforce"})  # simple-salesforce only speaks https


def connection_example(type_: str, served: RunningSimulator) -> dict[str, Any]:
    """Config and credentials that work against a served simulator with default settings."""
    url = served.base_url
    examples: dict[str, dict[str, Any]] = {
        "salesforce": {
            "config": {"login_url": url},
            "credentials": {"client_id": "nexus-client", "client_secret": "sf-secret"},
        },
        "sap": {
            "config": {"base_url": url},
            "credentials": {"username": "COMM_USER", "password": "sap-secret"},
        },
        "servicenow": {
            "config": {"instance_url": url},
            "credentials": {"username": "integration", "password": "sn-secret"},
        },
        "m365": {
            "config": {
                "tenant_id": "contoso",
                "authority_url": url,
                "graph_url": url,
                "drive_id": "b!nexus-drive",
            },
            "credentials": {"client_id": "nexus-app", "client_secret": "m365-secret"},
        },
    }
    return examples[type_]

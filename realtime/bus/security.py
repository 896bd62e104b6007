"""Bus security: loopback by default, CURVE (encryption + client allow-list) for anything else.

A keys folder made by ``brainstream keys generate DIR`` holds::

    DIR/server.key, DIR/server.key_secret        the binding side (broker, or a publisher with bind=True)
    DIR/<client>.key, DIR/<client>.key_secret    one pair per client (default: "client")
    DIR/authorized/<client>.key                  public keys the server accepts (delete one to revoke it)

A socket that binds a non-loopback interface without keys refuses to start (:class:`InsecureBindError`).
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized"


class InsecureBindError(RuntimeError):
    """Refusal to bind a non-loopback interface without CURVE keys."""


class KeysError(ValueError):
    """A keys folder is missing or incomplete."""


@dataclass(frozen=True)
class CurveKeys:
    """Key material read from a keys folder (bytes, Z85-encoded as zmq expects)."""

    directory: Path
    server_public: bytes
    server_secret: bytes | None
    client_public: bytes | None
    client_secret: bytes | None

    @property
    def authorized_dir(self) -> Path:
        return self.directory / AUTHORIZED_DIR

    @classmethod
    def load(cls, directory: str | Path, client: str = "client") -> CurveKeys:
        """Read a keys folder; the server secret and client pair are optional (a client host needs only
        ``server.key`` plus its own pair, a server host needs ``server.key_secret`` and ``authorized/``)."""
        directory = Path(directory)
        server_pub_file = directory / f"{SERVER_NAME}.key"
        if not server_pub_file.is_file():
            raise KeysError(
                f"no {server_pub_file}; create a keys folder with `brainstream keys generate {directory}`"
            )
        server_public, _ = zmq.auth.load_certificate(server_pub_file)
        server_secret = None
        if (directory / f"{SERVER_NAME}.key_secret").is_file():
            _, server_secret = zmq.auth.load_certificate(directory / f"{SERVER_NAME}.key_secret")
        client_public = client_secret = None
        if (directory / f"{client}.key_secret").is_file():
            client_public, client_secret = zmq.auth.load_certificate(directory / f"{client}.key_secret")
        return cls(directory, server_public, server_secret, client_public, client_secret)


def generate_keys(directory: str | Path, clients: tuple[str, ...] = ("client",)) -> CurveKeys:
    """Create a server key pair and one pair per client; authorise every client listed.

    Existing keys are kept (so running it again adds clients without invalidating old ones).
    """
    directory = Path(directory)
    authorized = directory / AUTHORIZED_DIR
    authorized.mkdir(parents=True, exist_ok=True)
    for name in (SERVER_NAME, *clients):
        if name == AUTHORIZED_DIR or not name.replace("-", "").replace("_", "").isalnum():
            raise KeysError(f"key name {name!r}: use letters, digits, '-' and '_' only")
        if not (directory / f"{name}.key_secret").is_file():
            zmq.auth.create_certificates(directory, name)
        (directory / f"{name}.key_secret").chmod(0o600)
        if name != SERVER_NAME:
            shutil.copyfile(directory / f"{name}.key", authorized / f"{name}.key")
    return CurveKeys.load(directory, clients[0] if clients else "client")


def as_keys(keys: str | Path | CurveKeys | None, client: str = "client") -> CurveKeys | None:
    if keys is None or isinstance(keys, CurveKeys):
        return keys
    return CurveKeys.load(keys, client)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``inproc://``, ``ipc://`` and TCP on 127.0.0.0/8, ``localhost``, ``::1`` or ``lo``."""
    transport, _, address = endpoint.partition("://")
    if transport in ("inproc", "ipc"):
        return True
    if transport != "tcp":
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", "0.0.0.0", an interface name or a host name: reachable from outside


def check_bind_allowed(endpoint: str, keys: CurveKeys | None) -> None:
    """Raise :class:`InsecureBindError` unless ``endpoint`` is loopback or CURVE server keys are given."""
    if is_loopback_endpoint(endpoint):
        return
    if keys is None or keys.server_secret is None:
        raise InsecureBindError(
            f"refusing to bind {endpoint}: it is reachable from other machines and the bus would be "
            "unencrypted and open to anyone. Create keys with `brainstream keys generate DIR` and pass "
            "--keys DIR (server.key_secret and authorized/ are needed here), or bind tcp://127.0.0.1"
        )


def make_server(socket: zmq.Socket, keys: CurveKeys) -> None:
    if keys.server_secret is None:
        raise KeysError(f"{keys.directory} has no {SERVER_NAME}.key_secret; this host cannot bind with CURVE")
    socket.curve_secretkey = keys.server_secret
    socket.curve_publickey = keys.server_public
    socket.curve_server = True


def make_client(socket: zmq.Socket, keys: CurveKeys) -> None:
    if keys.client_secret is None or keys.client_public is None:
        raise KeysError(f"{keys.directory} has no client key pair; run `brainstream keys generate DIR`")
    socket.curve_serverkey = keys.server_public
    socket.curve_publickey = keys.client_public
    socket.curve_secretkey = keys.client_secret


def start_authenticator(context: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """Accept CURVE clients whose public key lies in ``keys.authorized_dir``, nobody else."""
    if not keys.authorized_dir.is_dir():
        raise KeysError(f"no {keys.authorized_dir}: no client is authorised; run `brainstream keys generate`")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    return auth

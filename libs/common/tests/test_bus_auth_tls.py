"""The bus's other identities and TLS on a real nats-server: an nkey seed file, TLS with the
server checked against a CA (a wrong CA or a plain connection is refused), and mutual TLS
(no client certificate, no connection). Certificates are made with the openssl CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nkeys
import pytest

from dealerline_common.bus import Bus, BusConnectError, NatsAuth
from dealerline_common.local_nats import NatsServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _signed(d: Path, name: str, ca: str, ext: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    # Python 3.13 verifies strictly (VERIFY_X509_STRICT): the CA needs keyUsage, a leaf its
    # issuer's key identifier.
    (d / f"{name}.ext").write_text(f"authorityKeyIdentifier=keyid,issuer\n{ext}")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _signed(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _signed(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return d


def _users() -> str:
    return 'authorization { users = [ { user: "gateway", password: "pw" } ] }\n'


async def _round_trip(bus: Bus) -> None:
    await bus.connect()
    try:
        await bus.nc.flush()
        assert bus.is_connected
    finally:
        await bus.close()


async def test_tls_with_the_servers_ca(pki: Path) -> None:
    tls = f'tls {{ cert_file: "{pki}/server.crt", key_file: "{pki}/server.key" }}\n'
    with NatsServer(config=_users() + tls) as server:
        url = f"tls://127.0.0.1:{server.port}"
        good = NatsAuth(user="gateway", password="pw", tls_ca_file=str(pki / "ca.crt"))
        await _round_trip(Bus(url, "gateway", auth=good, connect_timeout_s=10))
        # A server whose certificate another CA signed is not trusted.
        wrong = NatsAuth(user="gateway", password="pw", tls_ca_file=str(pki / "other-ca.crt"))
        with pytest.raises(BusConnectError):
            await Bus(url, "gateway", auth=wrong, connect_timeout_s=2).connect()
        # A plain client is refused by a server that requires TLS.
        plain = NatsAuth(user="gateway", password="pw")
        with pytest.raises(BusConnectError):
            await Bus(server.url, "gateway", auth=plain, connect_timeout_s=2).connect()


async def test_mutual_tls_needs_a_client_certificate(pki: Path) -> None:
    tls = (
        f'tls {{ cert_file: "{pki}/server.crt", key_file: "{pki}/server.key", '
        f'ca_file: "{pki}/ca.crt", verify: true }}\n'
    )
    with NatsServer(config=_users() + tls) as server:
        url = f"tls://127.0.0.1:{server.port}"
        ca = str(pki / "ca.crt")
        client = NatsAuth(
            user="gateway",
            password="pw",
            tls_ca_file=ca,
            tls_cert_file=str(pki / "client.crt"),
            tls_key_file=str(pki / "client.key"),
        )
        await _round_trip(Bus(url, "gateway", auth=client, connect_timeout_s=10))
        anonymous_tls = NatsAuth(user="gateway", password="pw", tls_ca_file=ca)
        with pytest.raises(BusConnectError):
            await Bus(url, "gateway", auth=anonymous_tls, connect_timeout_s=2).connect()


async def test_an_nkey_seed_file_is_an_identity(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    path = tmp_path / "gateway.nk"
    path.write_bytes(seed + b"\n")
    config = f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n'
    with NatsServer(config=config) as server:
        await _round_trip(
            Bus(
                server.url, "gateway", auth=NatsAuth(nkey_seed_file=str(path)), connect_timeout_s=10
            )
        )
        other = tmp_path / "other.nk"
        other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
        with pytest.raises(BusConnectError):
            await Bus(
                server.url, "gateway", auth=NatsAuth(nkey_seed_file=str(other)), connect_timeout_s=2
            ).connect()

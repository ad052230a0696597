from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vfl_embed.deploy.credentials import main, make_credentials


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return make_credentials(tmp_path_factory.mktemp("creds"), ["superlink", "198.18.0.1"],
                            ["org1", "org2"])


def test_superlink_certificate_is_signed_by_the_ca_for_the_given_hosts(credentials):
    ca = x509.load_pem_x509_certificate((credentials / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((credentials / "superlink.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["superlink", "localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [
        "198.18.0.1", "127.0.0.1"]


def test_supernode_keys_load_the_way_flower_loads_them(credentials):
    folder = credentials / "supernodes"
    authorized = (folder / "authorized.txt").read_text().splitlines()
    assert len(authorized) == 2
    for org, line in zip(["org1", "org2"], authorized, strict=True):
        private = serialization.load_ssh_private_key((folder / f"{org}.key").read_bytes(),
                                                     None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        public = serialization.load_ssh_public_key((folder / f"{org}.pub").read_bytes())
        assert public.public_numbers() == private.public_key().public_numbers()
        assert line == (folder / f"{org}.pub").read_text().strip()
        assert line.endswith(f" {org}")


def test_private_keys_are_readable_by_the_owner_only(credentials):
    for path in [credentials / "ca.key", credentials / "superlink.key",
                 *(credentials / "supernodes").glob("*.key")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_tls_handshake_succeeds_with_the_ca_and_fails_with_another(credentials, tmp_path):
    other = make_credentials(tmp_path / "other", ["superlink"], ["x"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(credentials / "superlink.crt", credentials / "superlink.key")
    assert _handshake(server, credentials / "ca.crt", "superlink") == "ok"
    assert "CERTIFICATE_VERIFY_FAILED" in _handshake(server, other / "ca.crt", "superlink")
    assert "CERTIFICATE_VERIFY_FAILED" in _handshake(server, credentials / "ca.crt",
                                                     "elsewhere.example")


def test_refuses_to_replace_an_existing_ca(credentials):
    with pytest.raises(FileExistsError, match="ca.key exists"):
        make_credentials(credentials, ["superlink"], ["org9"])


@pytest.mark.parametrize(("hosts", "orgs", "message"), [
    ([], ["org1"], "at least one SuperLink host"),
    (["superlink"], [], "at least one organization"),
    (["superlink"], ["../evil"], "must be letters, digits"),
    (["superlink"], ["a", "a"], "repeat"),
])
def test_bad_arguments_are_named(tmp_path, hosts, orgs, message):
    with pytest.raises(ValueError, match=message):
        make_credentials(tmp_path / "c", hosts, orgs)


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path / "c"), "--superlink-host", "127.0.0.1", "a", "b"])
    assert "2 SuperNode key pairs" in capsys.readouterr().out
    assert (tmp_path / "c" / "supernodes" / "b.pub").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--superlink-host", "127.0.0.1", "a"])
    assert "ca.key exists" in capsys.readouterr().err


def _handshake(server: ssl.SSLContext, ca_file, hostname: str) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server.wrap_socket(connection, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client.wrap_socket(raw, server_hostname=hostname):
            return "ok"
    except ssl.SSLError as err:
        return str(err)
    finally:
        thread.join(timeout=5)
        listener.close()

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vfl_embed.deploy.credentials import (
    CA_VALID_DAYS,
    LEAF_VALID_DAYS,
    main,
    make_credentials,
    renew_superlink_certificate,
)


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


def test_strict_x509_verification_accepts_the_superlink_certificate(credentials):
    # Python 3.13 turns VERIFY_X509_STRICT on by default; it needs the key identifiers.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(credentials / "superlink.crt", credentials / "superlink.key")
    assert _handshake(server, credentials / "ca.crt", "superlink", strict=True) == "ok"


def test_certificates_carry_key_identifiers_and_usages(credentials):
    ca = x509.load_pem_x509_certificate((credentials / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((credentials / "superlink.crt").read_bytes())
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf_aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert leaf_aki.key_identifier == ca_ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    leaf_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and not leaf_usage.key_cert_sign
    assert leaf_usage.digital_signature
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == dt.timedelta(
        days=CA_VALID_DAYS, minutes=5)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(
        days=LEAF_VALID_DAYS, minutes=5)


def test_folders_are_private(credentials):
    for folder in [credentials, credentials / "supernodes"]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_planted_symlink_is_replaced_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("do not touch")
    target.chmod(0o644)
    out = tmp_path / "c"
    (out / "supernodes").mkdir(parents=True)
    planted = [out / "superlink.key", out / "ca.crt", out / "supernodes" / "org1.key"]
    for link in planted:
        link.symlink_to(target)
    make_credentials(out, ["superlink"], ["org1"])
    assert target.read_text() == "do not touch"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    for path in planted:
        assert not path.is_symlink()
        assert path.read_bytes().startswith(b"-----BEGIN")
    assert stat.S_IMODE((out / "superlink.key").stat().st_mode) == 0o600
    assert [p.name for p in out.rglob("*.tmp")] == []


def test_an_output_folder_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ValueError, match="is a symbolic link"):
        make_credentials(tmp_path / "link", ["superlink"], ["org1"])
    assert os.listdir(tmp_path / "real") == []


def test_renewal_keeps_the_ca_and_replaces_the_superlink_pair(tmp_path):
    out = make_credentials(tmp_path / "c", ["superlink"], ["org1"])
    ca_before = (out / "ca.crt").read_bytes()
    old_key = (out / "superlink.key").read_bytes()
    main(["--out", str(out), "--superlink-host", "superlink2", "--renew-superlink"])
    assert (out / "ca.crt").read_bytes() == ca_before
    assert (out / "superlink.key").read_bytes() != old_key
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(out / "superlink.crt", out / "superlink.key")
    assert _handshake(server, out / "ca.crt", "superlink2", strict=True) == "ok"
    with pytest.raises(FileNotFoundError, match="ca.key does not exist"):
        renew_superlink_certificate(tmp_path / "empty", ["superlink"])


def test_refuses_to_replace_an_existing_ca(credentials):
    with pytest.raises(FileExistsError, match="ca.key exists"):
        make_credentials(credentials, ["superlink"], ["org9"])


@pytest.mark.parametrize(("hosts", "orgs", "message"), [
    ([], ["org1"], "at least one SuperLink host"),
    (["superlink"], [], "at least one organization"),
    (["superlink"], ["../evil"], "must be letters, digits"),
    (["superlink"], ["a", "a"], "repeat"),
    (["*.example.org"], ["org1"], "'\\*.example.org' is a wildcard"),
    (["superlink", "*"], ["org1"], "is a wildcard"),
    (["superlink", " "], ["org1"], "a --superlink-host is empty"),
])
def test_bad_arguments_are_named_before_anything_is_written(tmp_path, hosts, orgs, message):
    with pytest.raises(ValueError, match=message):
        make_credentials(tmp_path / "c", hosts, orgs)
    assert not (tmp_path / "c").exists()


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path / "c"), "--superlink-host", "127.0.0.1", "a", "b"])
    assert "2 SuperNode key pairs" in capsys.readouterr().out
    assert (tmp_path / "c" / "supernodes" / "b.pub").exists()
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--superlink-host", "127.0.0.1", "a"])
    assert "ca.key exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--superlink-host", "x", "--renew-superlink",
              "a"])
    assert "give no organization names" in capsys.readouterr().err


def _handshake(server: ssl.SSLContext, ca_file, hostname: str, strict: bool = False) -> str:
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
    if strict:
        client.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client.wrap_socket(raw, server_hostname=hostname):
            return "ok"
    except ssl.SSLError as err:
        return str(err)
    finally:
        thread.join(timeout=5)
        listener.close()

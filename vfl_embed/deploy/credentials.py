r"""Create the TLS and SuperNode-authentication files of a deployment.

One call makes, under one directory::

    ca.crt, ca.key                 the federation's certificate authority
    superlink.crt, superlink.key   the SuperLink's TLS certificate, valid for
                                   the given host names and IP addresses
    supernodes/<org>.key           one ECDSA key pair per organization, in the
    supernodes/<org>.pub           OpenSSH format that ``flower-supernode
                                   --auth-supernode-private-key`` and ``flwr
                                   supernode register`` read
    supernodes/authorized.txt      the public keys, one per line

The coordinator keeps ``ca.key``; each organization receives ``ca.crt`` and
only its own ``supernodes/<org>.key``. Run it as::

    python -m vfl_embed.deploy.credentials --out certificates \
        --superlink-host superlink --superlink-host 127.0.0.1 org1 org2 org3

The CA is valid for five years, the SuperLink certificate for one; renew the
latter with the same CA (``--renew-superlink``) before it expires.

Every file is written to a fresh temporary file (``O_EXCL | O_NOFOLLOW``)
and renamed over its name, so a file or symbolic link already planted at
that name is replaced, never written through. Private keys are ``0600``,
the output folders ``0700``. The certificates carry the Subject and
Authority Key Identifiers that strict X.509 verification requires (Python
3.13's default ``ssl.VERIFY_X509_STRICT``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..atomic import write_atomic

__all__ = ["make_ca", "make_superlink_certificate", "make_supernode_keys",
           "make_credentials", "renew_superlink_certificate"]

_ORG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CA_VALID_DAYS = 5 * 365
LEAF_VALID_DAYS = 365
_PRIVATE_FOLDER, _PRIVATE_FILE, _PUBLIC_FILE = 0o700, 0o600, 0o644


def make_ca(directory: Path, name: str = "vfl-embed federation CA") -> None:
    """Write a self-signed CA certificate and key (``ca.crt``, ``ca.key``)."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        _builder(subject, subject, key.public_key(), CA_VALID_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA384())
    )
    _write_pair(directory / "ca", certificate, key)


def make_superlink_certificate(directory: Path, hosts: Sequence[str]) -> None:
    """Write ``superlink.crt``/``.key`` signed by the CA in ``directory``.

    Parameters
    ----------
    directory : Path
        Holds ``ca.crt`` and ``ca.key``; receives the SuperLink's files.
    hosts : Sequence[str]
        Every DNS name and IP address SuperNodes and ``flwr`` use to reach
        the SuperLink; TLS refuses any other. ``localhost`` and
        ``127.0.0.1`` are always added: the SuperLink's own SuperExec, which
        starts the ServerApp, connects over loopback.
    """
    _check_hosts(hosts)
    hosts = list(dict.fromkeys([*hosts, "localhost", "127.0.0.1"]))
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    certificate = (
        _builder(subject, ca_cert.subject, key.public_key(), LEAF_VALID_DAYS)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA384())  # type: ignore[arg-type]
    )
    _write_pair(directory / "superlink", certificate, key)


def make_supernode_keys(directory: Path, organizations: Sequence[str]) -> None:
    """Write one OpenSSH ECDSA key pair per organization under ``supernodes/``."""
    _check_organizations(organizations)
    folder = _private_folder(directory / "supernodes")
    lines = []
    for org in organizations:
        key = ec.generate_private_key(ec.SECP384R1())
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode() + f" {org}"
        _write_file(folder / f"{org}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ), _PRIVATE_FILE)
        _write_file(folder / f"{org}.pub", (public + "\n").encode(), _PUBLIC_FILE)
        lines.append(public)
    _write_file(folder / "authorized.txt", ("\n".join(lines) + "\n").encode(),
                _PUBLIC_FILE)


def make_credentials(
    directory: str | Path, superlink_hosts: Sequence[str], organizations: Sequence[str]
) -> Path:
    """Create the CA, the SuperLink certificate and the SuperNode keys.

    Refuses to overwrite an existing ``ca.key``: a new CA would lock out every
    organization that already holds the old ``ca.crt``. Checks every name
    before it writes anything.
    """
    _check_hosts(superlink_hosts)
    _check_organizations(organizations)
    directory = Path(directory)
    if (directory / "ca.key").exists():
        raise FileExistsError(f"{directory / 'ca.key'} exists; choose another --out "
                              "or delete the old credentials first")
    _private_folder(directory)
    make_ca(directory)
    make_superlink_certificate(directory, superlink_hosts)
    make_supernode_keys(directory, organizations)
    return directory


def renew_superlink_certificate(
    directory: str | Path, superlink_hosts: Sequence[str]
) -> Path:
    """Replace ``superlink.crt``/``.key`` with new ones signed by the same CA.

    Organizations keep their ``ca.crt`` and SuperNode keys; restart the
    SuperLink to load the new files.
    """
    _check_hosts(superlink_hosts)
    directory = Path(directory)
    if not (directory / "ca.key").is_file():
        raise FileNotFoundError(f"{directory / 'ca.key'} does not exist; renewing "
                                "needs the CA that signed the old certificate")
    make_superlink_certificate(_private_folder(directory), superlink_hosts)
    return directory


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m vfl_embed.deploy.credentials --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m vfl_embed.deploy.credentials",
        description="Create the CA, the SuperLink's TLS certificate and one "
                    "SuperNode key pair per organization.",
    )
    parser.add_argument("organizations", nargs="*", help="one name per SuperNode")
    parser.add_argument("--out", default="certificates", help="output directory")
    parser.add_argument("--superlink-host", action="append", dest="hosts",
                        required=True, help="DNS name or IP of the SuperLink "
                        "(repeat for several)")
    parser.add_argument("--renew-superlink", action="store_true",
                        help="only replace superlink.crt/.key, signed by the "
                        "existing CA in --out")
    args = parser.parse_args(argv)
    if args.renew_superlink and args.organizations:
        parser.error("--renew-superlink renews the SuperLink certificate only; "
                     "give no organization names")
    try:
        if args.renew_superlink:
            directory = renew_superlink_certificate(args.out, args.hosts)
            print(f"wrote {directory}/superlink.crt/.key, signed by {directory}/ca.crt")
            return
        directory = make_credentials(args.out, args.hosts, args.organizations)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    print(f"wrote {directory}/ca.crt, superlink.crt/.key and "
          f"{len(args.organizations)} SuperNode key pairs under "
          f"{directory}/supernodes/")


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
    days: int,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                       critical=False)
    )


def _key_usage(key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    """Digital signature (ECDSA in TLS) and, for the CA, certificate signing."""
    return x509.KeyUsage(
        digital_signature=True, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )


def _check_hosts(hosts: Sequence[str]) -> None:
    if not hosts:
        raise ValueError("give at least one SuperLink host name or IP address")
    for host in hosts:
        if not host.strip():
            raise ValueError("a --superlink-host is empty; give a DNS name or IP address")
        if "*" in host:
            raise ValueError(f"--superlink-host '{host}' is a wildcard; name each "
                             "SuperLink host exactly")


def _check_organizations(organizations: Sequence[str]) -> None:
    if not organizations:
        raise ValueError("give at least one organization name")
    for org in organizations:
        if not _ORG_NAME.match(org):
            raise ValueError(f"organization name '{org}' must be letters, digits, "
                             "'.', '_' or '-' (it becomes a file name)")
    if len(set(organizations)) != len(organizations):
        raise ValueError(f"organization names repeat: {list(organizations)}")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_pair(stem: Path, certificate: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> None:
    _write_file(stem.with_suffix(".key"), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ), _PRIVATE_FILE)
    _write_file(stem.with_suffix(".crt"),
                certificate.public_bytes(serialization.Encoding.PEM), _PUBLIC_FILE)


def _private_folder(path: Path) -> Path:
    """Create ``path`` (or take it as it is) and make it ``0700``; refuse a symlink."""
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; give a real folder")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(_PRIVATE_FOLDER)
    return path


def _write_file(path: Path, data: bytes, mode: int) -> None:
    # A new file renamed over ``path``: a planted file or symbolic link there
    # is replaced, never written through.
    write_atomic(path, data, mode)

if __name__ == "__main__":
    main()

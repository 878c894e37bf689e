"""Azurite as the real storage peer of the file-upload scenario (ADR 25), for ../run.sh.

    python azurite.py certs DATA_DIR
        writes the emulator's CA into DATA_DIR (ca.pem, ca-key.pem: the emulator reuses a CA it
        finds there) and a server certificate for Azurite issued by it (azurite.pem,
        azurite.key; names 127.0.0.1 and localhost), so that the SDKs, which trust the
        emulator's CA, verify Azurite's https:// URLs too.
    python azurite.py free-port
        prints a free TCP port on 127.0.0.1.
    python azurite.py connection-string PORT
        prints the connection string of Azurite's development account over HTTPS on PORT
        (path-style BlobEndpoint https://127.0.0.1:PORT/devstoreaccount1).
    python azurite.py wait PORT
        waits (at most 30 s) until something listens on PORT.

Made with the `cryptography` package installed in conformance/.venv.
"""

import datetime
import ipaddress
import os
import socket
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Azurite's development account and its documented key (public, not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path, data, private=False):
    with open(path, "wb") as out:
        out.write(data)
    if private:
        os.chmod(path, 0o600)


def certs(directory):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Azure IoT emulator CA (conformance)")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azurite")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(os.path.join(directory, "ca-key.pem"), _pem_key(ca_key), private=True)
    _write(os.path.join(directory, "ca.pem"), ca.public_bytes(serialization.Encoding.PEM))
    _write(os.path.join(directory, "azurite.key"), _pem_key(key), private=True)
    _write(os.path.join(directory, "azurite.pem"), leaf.public_bytes(serialization.Encoding.PEM))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connection_string(port):
    return (f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=https://127.0.0.1:{port}/{ACCOUNT}")


def wait(port):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "certs":
        certs(args[0])
    elif command == "free-port":
        print(free_port())
    elif command == "connection-string":
        print(connection_string(args[0]))
    elif command == "wait":
        wait(args[0])
    else:
        sys.exit(f"unknown command {command!r}: certs, free-port, connection-string or wait")

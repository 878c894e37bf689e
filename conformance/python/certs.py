"""X.509 certificates for the DPS conformance scenarios, made with the `cryptography` package
(installed in conformance/.venv with azure-storage-blob): a self-signed device certificate, a CA,
and a device certificate signed by that CA whose file holds the chain (leaf, then CA) so the
SDKs present both in the TLS handshake. The leaf's subject CN is the registration id (DPS's
rule for X.509 attestation).

Imported by the Python scenarios; the Node scenarios run it as a program:

    python certs.py self-signed CN DIR      -> DIR/CN.pem (certificate), DIR/CN.key
    python certs.py ca CN DIR               -> DIR/CN.pem, DIR/CN.key
    python certs.py leaf CN CA_CN DIR       -> DIR/CN.pem (leaf + CA), DIR/CN.key

and prints the JSON {"cert": path, "key": path, "pem": the certificate alone}.
"""

import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write(directory, cn, cert, key, chain=()):
    cert_path = os.path.join(directory, f"{cn}.pem")
    key_path = os.path.join(directory, f"{cn}.key")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    with open(cert_path, "w") as out:
        out.write(pem + "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain))
    with open(key_path, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return {"cert": cert_path, "key": key_path, "pem": pem}


def _build(cn, issuer_name, issuer_key, public_key, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed(cn, directory):
    """A self-signed device certificate with subject CN `cn`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return _write(directory, cn, _build(cn, name, key, key.public_key(), ca=False), key)


def ca(cn, directory):
    """A self-signed CA certificate with subject CN `cn`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return _write(directory, cn, _build(cn, name, key, key.public_key(), ca=True), key)


def leaf(cn, ca_files, directory):
    """A device certificate with subject CN `cn` signed by the CA in `ca_files` (what `ca`
    returned); its certificate file holds the leaf, then the CA."""
    ca_cert = x509.load_pem_x509_certificate(open(ca_files["cert"], "rb").read())
    ca_key = serialization.load_pem_private_key(open(ca_files["key"], "rb").read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(directory, cn, _build(cn, ca_cert.subject, ca_key, key.public_key(), ca=False), key, [ca_cert])


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "self-signed":
        made = self_signed(args[0], args[1])
    elif kind == "ca":
        made = ca(args[0], args[1])
    elif kind == "leaf":
        made = leaf(args[0], {"cert": os.path.join(args[2], f"{args[1]}.pem"),
                              "key": os.path.join(args[2], f"{args[1]}.key")}, args[2])
    else:
        sys.exit(f"unknown kind {kind!r}: self-signed, ca or leaf")
    print(json.dumps(made))

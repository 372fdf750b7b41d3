"""The benchmark PKI: one CA and one leaf certificate per site, made fast enough for 100k.

Every server under test loads the same files: `sites/<i>.pem` holds the leaf for
`s<i>.bench.test` followed by its private key (nginx, HAProxy, Caddy and Portico all accept
the key in the same file as the certificate, so one file per site keeps 100k sites at 100k
files). Leaves are signed in batches by worker processes, one per core, with the Python
`cryptography` package (about 10x faster than one `openssl` process per leaf).

The PKI is cached: a directory made for 100k sites serves every smaller size (site i is the
same everywhere), and a larger size only adds the missing leaves.
"""

import datetime
import json
import os
from concurrent.futures import ProcessPoolExecutor

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DOMAIN = "bench.test"
# RSA-2048 key generation costs ~50 ms each; for 100k sites that is more than an hour. RSA
# leaves therefore share a pool of this many keys (each leaf is still its own certificate,
# so every server still parses and indexes N certificates and N keys). ECDSA keys are
# cheap and never shared.
RSA_KEY_POOL = 256


def host(i):
    return f"s{i}.{DOMAIN}"


def _new_key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load(path):
    with open(path, "rb") as f:
        return f.read()


def _make_ca(pki, kind):
    key = _new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portico bench CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    with open(os.path.join(pki, "ca.key"), "wb") as f:
        f.write(_pem_key(key))
    with open(os.path.join(pki, "ca.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _leaf(ca, ca_key, key, i, now):
    """The leaf for site `i` with `key`, signed by the bench CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host(i))]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host(i))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _ca(pki):
    ca_key = serialization.load_pem_private_key(_load(os.path.join(pki, "ca.key")), None)
    ca = x509.load_pem_x509_certificate(_load(os.path.join(pki, "ca.pem")))
    return ca, ca_key


def _leaves(args):
    """Worker: writes the leaves for sites [start, end). Runs in a child process."""
    pki, kind, start, end = args
    ca, ca_key = _ca(pki)
    now = datetime.datetime.now(datetime.timezone.utc)
    rsa_pool = {}
    for i in range(start, end):
        if kind == "rsa":
            slot = i % RSA_KEY_POOL
            if slot not in rsa_pool:
                rsa_pool[slot] = _shared_rsa_key(pki, slot)
            key = rsa_pool[slot]
        else:
            key = _new_key(kind)
        cert = _leaf(ca, ca_key, key, i, now)
        path = site_pem(pki, i)
        with open(path + ".tmp", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
            f.write(_pem_key(key))
        os.replace(path + ".tmp", path)  # a half-written file never looks complete
    return end - start


def renewed(pki, i):
    """A new ECDSA leaf and key for site `i` (a renewal): (chain PEM, key PEM)."""
    ca, ca_key = _ca(pki)
    key = _new_key("ecdsa")
    cert = _leaf(ca, ca_key, key, i, datetime.datetime.now(datetime.timezone.utc))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _shared_rsa_key(pki, slot):
    """The RSA key for a pool slot, made once and kept on disk so every worker shares it."""
    path = os.path.join(pki, "rsa-keys", f"{slot}.key")
    try:
        return serialization.load_pem_private_key(_load(path), None)
    except FileNotFoundError:
        key = _new_key("rsa")
        with open(path + f".{os.getpid()}", "wb") as f:
            f.write(_pem_key(key))
        os.replace(path + f".{os.getpid()}", path)
        return serialization.load_pem_private_key(_load(path), None)


def site_pem(pki, i):
    return os.path.join(pki, "sites", f"{i}.pem")


def ensure(root, kind, count, jobs, log):
    """Makes sure `root/<kind>/` holds a CA and leaves for sites 0..count-1; returns the dir."""
    pki = os.path.join(root, kind)
    os.makedirs(os.path.join(pki, "sites"), exist_ok=True)
    os.makedirs(os.path.join(pki, "rsa-keys"), exist_ok=True)
    state_file = os.path.join(pki, "state.json")
    have = 0
    if os.path.exists(state_file) and os.path.exists(os.path.join(pki, "ca.pem")):
        with open(state_file) as f:
            have = json.load(f)["sites"]
    else:
        _make_ca(pki, kind)
    if have >= count:
        return pki
    log(f"PKI: generating {count - have} {kind} leaves ({have} cached) on {jobs} processes")
    batch = 2000
    work = [(pki, kind, s, min(s + batch, count)) for s in range(have, count, batch)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for _ in pool.map(_leaves, work):
            pass
    with open(state_file, "w") as f:
        json.dump({"sites": count, "kind": kind}, f)
    return pki

"""The runner's own OIDC token issuer: RS256 ID tokens verifiable with google-auth."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import pathlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import cachetools
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from local_runner.errors import StoreError

CERTS_PATH = "/certs"
JWKS_PATH = "/jwks"
DISCOVERY_PATH = "/.well-known/openid-configuration"
KEY_FILE_NAME = "oidc-signing-key.pem"
# google-auth's signer and encoder are unannotated; give them the types they have.
_new_signer = cast(Callable[..., crypt.Signer], crypt.RSASigner)
_jwt_encode = cast(Callable[[crypt.Signer, dict[str, Any]], bytes], jwt.encode)
CLAIMS = ["iss", "aud", "azp", "sub", "email", "email_verified", "iat", "exp"]


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def service_account_unique_id(email: str) -> str:
    """Returns a stable 21-digit numeric id for a service account email, like Google's unique ids."""
    digest = int.from_bytes(hashlib.sha256(email.encode("utf-8")).digest(), "big")
    return str(10**20 + digest % (9 * 10**20))


@dataclass(frozen=True)
class SigningKey:
    """An RSA-2048 signing key with its key id, self-signed certificate and ready signer."""

    private_key: rsa.RSAPrivateKey
    kid: str = field(init=False)
    certificate_pem: str = field(init=False)
    signer: crypt.Signer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        public_der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = hashlib.sha256(public_der).digest()[:20].hex()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local-runner")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(self.private_key, hashes.SHA256())
        )
        object.__setattr__(self, "kid", kid)
        object.__setattr__(self, "certificate_pem", cert.public_bytes(serialization.Encoding.PEM).decode())
        object.__setattr__(self, "signer", _new_signer(self.private_key, key_id=kid))

    @classmethod
    def generate(cls) -> SigningKey:
        """Generates an ephemeral key (memory mode and tests)."""
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def load_or_create(cls, data_dir: pathlib.Path) -> SigningKey:
        """Loads the data directory's key, creating and storing it on first use.

        Raises:
            StoreError: The key file exists but cannot be read or parsed, or cannot be written.
        """
        path = data_dir / KEY_FILE_NAME
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return cls._create(path)
        except OSError as exc:
            raise StoreError(f"cannot read OIDC signing key {path}: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"OIDC signing key file {path} is corrupt; remove it to generate a new key"
            ) from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise StoreError(f"OIDC signing key file {path} does not hold an RSA private key")
        return cls(key)

    @classmethod
    def _create(cls, path: pathlib.Path) -> SigningKey:
        key = cls.generate()
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                pathlib.Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write OIDC signing key {path}: {exc}") from exc
        return key


class TokenIssuer:
    """Mints and caches RS256 OIDC ID tokens and serves the matching public key documents."""

    def __init__(
        self, key: SigningKey, issuer: str, lifetime: float = 3600.0, refresh_margin: float = 300.0
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.lifetime = lifetime
        self.refresh_margin = refresh_margin
        self._cache: cachetools.LRUCache[tuple[str, str], tuple[str, int]] = cachetools.LRUCache(10_000)

    def mint(self, service_account_email: str, audience: str, now: float) -> str:
        """Returns an ID token for the service account and audience, reusing a fresh cached one."""
        cache_key = (service_account_email, audience)
        cached = self._cache.get(cache_key)
        if cached is not None and now < cached[1] - self.refresh_margin:
            return cached[0]
        iat = int(now)
        exp = iat + int(self.lifetime)
        unique_id = service_account_unique_id(service_account_email)
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "azp": unique_id,
            "sub": unique_id,
            "email": service_account_email,
            "email_verified": True,
            "iat": iat,
            "exp": exp,
        }
        token = _jwt_encode(self.key.signer, payload).decode("ascii")
        self._cache[cache_key] = (token, exp)
        return token

    def certs_document(self) -> dict[str, str]:
        """Returns ``{kid: certificate PEM}``, like Google's oauth2/v1/certs."""
        return {self.key.kid: self.key.certificate_pem}

    def jwks_document(self) -> dict[str, list[dict[str, str]]]:
        """Returns the JSON Web Key Set, like Google's oauth2/v3/certs."""
        numbers = self.key.private_key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.key.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }
        return {"keys": [jwk]}

    def openid_configuration(self) -> dict[str, Any]:
        """Returns the OpenID Connect discovery document."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": list(CLAIMS),
        }

"""The runner's OIDC issuer, checked with google-auth's real verifier over real HTTP."""

from __future__ import annotations

import base64
import json
import pathlib
import stat
import time
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth import crypt, jwt
from google.oauth2 import id_token
from pytest_httpserver import HTTPServer

from local_runner.errors import StoreError
from local_runner.oidc import (
    CERTS_PATH,
    DISCOVERY_PATH,
    JWKS_PATH,
    SigningKey,
    TokenIssuer,
    service_account_unique_id,
)

AUD = "https://worker.example.com/tasks/send-email"
EMAIL = "tasks-invoker@my-project.iam.gserviceaccount.com"
ISSUER = "http://127.0.0.1:8123"
REJECTED = (ValueError, google.auth.exceptions.GoogleAuthError)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key(key: SigningKey) -> SigningKey:
    """A second key, whose tokens the first key's certificates must not verify."""
    other = SigningKey.generate()
    assert other.kid != key.kid
    return other


@pytest.fixture
def issuer(key: SigningKey) -> TokenIssuer:
    return TokenIssuer(key, ISSUER)


def _serve_certs(httpserver: HTTPServer, issuer: TokenIssuer) -> str:
    httpserver.expect_request(CERTS_PATH).respond_with_json(issuer.certs_document())
    return httpserver.url_for(CERTS_PATH)


def _verify(token: str, certs_url: str, audience: str = AUD) -> Any:
    request = google.auth.transport.requests.Request()
    return id_token.verify_token(token, request, audience=audience, certs_url=certs_url)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_google_auth_accepts_minted_token(httpserver: HTTPServer, issuer: TokenIssuer) -> None:
    certs_url = _serve_certs(httpserver, issuer)
    token = issuer.mint(EMAIL, AUD, now=time.time())

    claims = _verify(token, certs_url)

    assert set(claims) == {"iss", "aud", "azp", "sub", "email", "email_verified", "iat", "exp"}
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUD
    assert claims["azp"] == claims["sub"] == service_account_unique_id(EMAIL)
    assert claims["email"] == EMAIL
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600
    header = json.loads(_b64decode(token.split(".")[0]))
    assert header == {"alg": "RS256", "kid": issuer.key.kid, "typ": "JWT"}


def test_unique_id_is_stable_21_digit_number() -> None:
    uid = service_account_unique_id(EMAIL)
    assert uid == service_account_unique_id(EMAIL)
    assert len(uid) == 21 and uid.isdigit() and uid[0] != "0"
    assert uid != service_account_unique_id("other@my-project.iam.gserviceaccount.com")


def test_token_from_other_key_rejected(
    httpserver: HTTPServer, issuer: TokenIssuer, other_key: SigningKey
) -> None:
    certs_url = _serve_certs(httpserver, issuer)
    foreign = TokenIssuer(other_key, ISSUER).mint(EMAIL, AUD, now=time.time())
    assert other_key.kid != issuer.key.kid

    with pytest.raises(REJECTED):
        _verify(foreign, certs_url)


def test_token_with_forged_kid_rejected(
    httpserver: HTTPServer, issuer: TokenIssuer, other_key: SigningKey
) -> None:
    certs_url = _serve_certs(httpserver, issuer)
    forger = crypt.RSASigner(other_key.private_key, key_id=issuer.key.kid)  # type: ignore[no-untyped-call]
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUD, "email": EMAIL, "iat": now, "exp": now + 3600}
    forged = jwt.encode(forger, payload).decode()  # type: ignore[no-untyped-call]
    assert json.loads(_b64decode(forged.split(".")[0]))["kid"] == issuer.key.kid

    with pytest.raises(REJECTED):
        _verify(forged, certs_url)


def test_wrong_audience_rejected(httpserver: HTTPServer, issuer: TokenIssuer) -> None:
    certs_url = _serve_certs(httpserver, issuer)
    token = issuer.mint(EMAIL, AUD, now=time.time())

    with pytest.raises(REJECTED):
        _verify(token, certs_url, audience="https://other.example.com/")


def test_expired_token_rejected(httpserver: HTTPServer, issuer: TokenIssuer) -> None:
    certs_url = _serve_certs(httpserver, issuer)
    token = issuer.mint(EMAIL, AUD, now=time.time() - 2 * 86400)

    with pytest.raises(REJECTED):
        _verify(token, certs_url)


def test_tokens_are_cached_until_refresh_margin(issuer: TokenIssuer) -> None:
    now = 1_700_000_000.0
    first = issuer.mint(EMAIL, AUD, now)

    assert issuer.mint(EMAIL, AUD, now + 100) == first
    assert issuer.mint(EMAIL, AUD, now + 3600 - 300 - 1) == first
    refreshed = issuer.mint(EMAIL, AUD, now + 3600 - 300 + 1)
    assert refreshed != first
    assert issuer.mint(EMAIL, AUD, now + 3600 - 300 + 2) == refreshed
    assert issuer.mint(EMAIL, "https://other.example.com/", now) != first


def test_load_or_create_persists_key(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    first = SigningKey.load_or_create(data_dir)
    second = SigningKey.load_or_create(data_dir)

    assert first.kid == second.kid
    key_file = data_dir / "oidc-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in data_dir.iterdir()] == [key_file.name]


def test_corrupt_key_file_raises_store_error(tmp_path: pathlib.Path) -> None:
    key_file = tmp_path / "oidc-signing-key.pem"
    key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")

    with pytest.raises(StoreError, match=r"oidc-signing-key\.pem"):
        SigningKey.load_or_create(tmp_path)
    assert b"not a key" in key_file.read_bytes()


def test_jwks_key_verifies_signature(issuer: TokenIssuer) -> None:
    token = issuer.mint(EMAIL, AUD, now=time.time())
    (jwk,) = issuer.jwks_document()["keys"]
    assert jwk["alg"] == "RS256"
    assert jwk["kty"] == "RSA" and jwk["use"] == "sig" and jwk["kid"] == issuer.key.kid
    assert "=" not in jwk["n"] + jwk["e"]

    n = int.from_bytes(_b64decode(jwk["n"]), "big")
    e = int.from_bytes(_b64decode(jwk["e"]), "big")
    public_key = rsa.RSAPublicNumbers(e, n).public_key()
    header, payload, signature = token.split(".")
    public_key.verify(
        _b64decode(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    tampered = _b64decode(payload).replace(EMAIL.encode(), b"attacker@evil.example")
    tampered_segment = base64.urlsafe_b64encode(tampered).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        public_key.verify(
            _b64decode(signature),
            f"{header}.{tampered_segment}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )


def test_discovery_document(issuer: TokenIssuer) -> None:
    config = issuer.openid_configuration()

    assert config["issuer"] == ISSUER
    assert config["jwks_uri"] == ISSUER + JWKS_PATH
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert config["response_types_supported"] == ["id_token"]
    assert config["subject_types_supported"] == ["public"]
    assert {"iss", "aud", "sub", "email", "exp", "iat"} <= set(config["claims_supported"])
    assert DISCOVERY_PATH == "/.well-known/openid-configuration"

//! Who may post: a bearer token (header or `?token=`) or, for tools that sign their payloads,
//! an HMAC of the raw body. Every comparison takes the same time whatever matches.

use axum::http::{header, HeaderMap};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::config::{Kind, SourceSpec};
use cxpulse_core::secret::Secret;

/// Does this webhook request carry the source's credential? The signature, for a tool that
/// signs its payloads; else the source's token.
pub fn source_authorized(
    source: &SourceSpec,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header(header::AUTHORIZATION.as_str());
    match (
        source.kind,
        source.secret.as_ref().map(Secret::expose),
        source.token.as_ref().map(Secret::expose),
    ) {
        (Kind::Typeform, Some(secret), _) => {
            typeform_signature_matches(header("typeform-signature"), secret, body)
        }
        (Kind::Wootric, Some(secret), _) => {
            wootric_signature_matches(header("x-wootric-signature"), secret, body)
        }
        // Survicate sends its verification token in a `Token` header.
        (Kind::Survicate, _, Some(token)) => {
            token_matches(bearer, query, token)
                || header("token").is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
        }
        (Kind::Typeform, None, _) => false,
        (_, _, Some(token)) => token_matches(bearer, query, token),
        (_, _, None) => false,
    }
}

/// Compares SHA-256 digests in constant time, so the time taken says nothing about where the
/// bytes differ, nor about the expected value's length (as the worker compares its token).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    openssl::memcmp::eq(&openssl::sha::sha256(a), &openssl::sha::sha256(b))
}

/// Does `Authorization: Bearer <token>` or the query's `token=` carry `expected`?
pub fn token_matches(authorization: Option<&str>, query: Option<&str>, expected: &str) -> bool {
    let from_header = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    let from_query = query.and_then(|q| {
        q.split('&').find_map(|pair| pair.strip_prefix("token=")).map(crate::form::percent_decode)
    });
    let header_ok =
        from_header.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()));
    let query_ok = from_query.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()));
    header_ok | query_ok
}

/// Typeform's `Typeform-Signature: sha256=<base64 of HMAC-SHA256(secret, raw body)>`.
pub fn typeform_signature_matches(header: Option<&str>, secret: &str, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let Ok(expected) = hmac_sha256_base64(secret.as_bytes(), body) else { return false };
    constant_time_eq(header.trim().as_bytes(), format!("sha256={expected}").as_bytes())
}

/// Wootric's `X-Wootric-Signature: sha1=<hex of HMAC-SHA1(secret, raw body)>`.
pub fn wootric_signature_matches(header: Option<&str>, secret: &str, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let Ok(digest) = hmac(MessageDigest::sha1(), secret.as_bytes(), body) else { return false };
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    constant_time_eq(header.trim().as_bytes(), format!("sha1={hex}").as_bytes())
}

fn hmac(
    digest: MessageDigest,
    key: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(digest, &key)?;
    signer.update(body)?;
    signer.sign_to_vec()
}

pub fn hmac_sha256_base64(key: &[u8], body: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    Ok(openssl::base64::encode_block(&hmac(MessageDigest::sha256(), key, body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_header_or_query() {
        assert!(token_matches(Some("Bearer abc"), None, "abc"));
        assert!(token_matches(None, Some("x=1&token=abc"), "abc"));
        assert!(token_matches(None, Some("token=a%2Bc"), "a+c"));
        assert!(!token_matches(Some("Bearer abd"), Some("token=ab"), "abc"));
        assert!(!token_matches(Some("Basic abc"), None, "abc"));
        assert!(!token_matches(None, None, "abc"));
    }

    #[test]
    fn typeform_signature_is_hmac_sha256_in_base64() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=";
        assert_eq!(hmac_sha256_base64(b"Jefe", b"what do ya want for nothing?").unwrap(), expected);
        let header = format!("sha256={expected}");
        assert!(typeform_signature_matches(Some(&header), "Jefe", b"what do ya want for nothing?"));
        assert!(!typeform_signature_matches(
            Some(&header),
            "Jefe",
            b"what do ya want for nothing!"
        ));
        assert!(!typeform_signature_matches(None, "Jefe", b""));
    }

    #[test]
    fn wootric_signature_is_hmac_sha1_in_hex() {
        // RFC 2202 test case 2.
        let header = "sha1=effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";
        assert!(wootric_signature_matches(Some(header), "Jefe", b"what do ya want for nothing?"));
        assert!(!wootric_signature_matches(Some(header), "Jefx", b"what do ya want for nothing?"));
        assert!(!wootric_signature_matches(None, "Jefe", b"what do ya want for nothing?"));
    }
}

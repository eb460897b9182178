//! Protecting the listener: an optional bearer token for the data endpoints (`/metrics`,
//! `/api/v1/scores`; the probes stay open for orchestrators) and optional TLS via the system's
//! OpenSSL, which librdkafka already links.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

/// The token required in `Authorization: Bearer <token>`, if any.
#[derive(Clone)]
pub struct BearerToken(pub Option<Arc<str>>);

pub async fn require_token(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &token.0 else { return next.run(request).await };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n")
            .into_response(),
    }
}

/// Compares without stopping at the first difference, so timing says nothing about the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An acceptor for the PEM certificate chain and private key; errors name the failing file.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<SslAcceptor> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| anyhow::anyhow!("cannot load TLS certificate {}: {e}", cert.display()))?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| anyhow::anyhow!("cannot load TLS key {}: {e}", key.display()))?;
    builder
        .check_private_key()
        .map_err(|e| anyhow::anyhow!("TLS key does not match the certificate: {e}"))?;
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn missing_certificate_files_are_named() {
        let Err(error) =
            tls_acceptor(Path::new("/nonexistent/cert.pem"), Path::new("/nonexistent/key.pem"))
        else {
            panic!("missing files accepted");
        };
        assert!(error.to_string().contains("/nonexistent/cert.pem"), "{error}");
    }
}

//! Protecting the listener: an optional bearer token for the data endpoints (`/metrics`,
//! `/api/v1/scores`; the probes stay open for orchestrators) and optional TLS via the system's
//! OpenSSL, which librdkafka already links.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cxpulse_core::secret::Secret;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};

/// The token required in `Authorization: Bearer <token>`, if any, kept as its SHA-256 digest:
/// comparing digests of equal length says nothing about the token's length or content.
#[derive(Clone)]
pub struct BearerToken(Option<Arc<[u8; 32]>>);

impl BearerToken {
    pub fn new(token: Option<&Secret>) -> BearerToken {
        BearerToken(token.map(|t| Arc::new(openssl::sha::sha256(t.expose().as_bytes()))))
    }

    /// Whether an `Authorization` header value carries this token. The scheme is matched without
    /// regard to case (RFC 7235); the credentials follow one or more spaces.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.0 else { return true };
        let Some(presented) = authorization.and_then(bearer_credentials) else { return false };
        openssl::memcmp::eq(&openssl::sha::sha256(presented), expected.as_slice())
    }

    /// Whether `secret` (say, the password of HTTP Basic credentials) is this token, compared as
    /// digests like [`BearerToken::admits`].
    pub fn matches(&self, secret: &[u8]) -> bool {
        let Some(expected) = &self.0 else { return true };
        openssl::memcmp::eq(&openssl::sha::sha256(secret), expected.as_slice())
    }
}

fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(rest[start..].trim_ascii_end())
}

pub async fn require_token(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if token.admits(presented) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n")
            .into_response()
    }
}

/// A listener's TLS files, flattened into its section (`[http]`, `[gateway]`): both files set
/// serve HTTPS, neither plain HTTP.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct TlsFiles {
    /// Serve HTTPS with this PEM certificate chain ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// ... and this PEM private key ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// ... decrypted with this passphrase when it is encrypted (never asked on a terminal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_password: Option<Secret>,
}

impl TlsFiles {
    /// Whether the two files are both set or both absent; errors name `section`.
    pub fn check_pairing(&self, section: &str) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(format!("[{section}] tls_cert and tls_key go together"));
        }
        Ok(())
    }

    /// The acceptor when both files are set; errors name `section` and its environment variable.
    pub fn acceptor(&self, section: &str) -> anyhow::Result<Option<SslAcceptor>> {
        self.check_pairing(section).map_err(|e| anyhow::anyhow!(e))?;
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let passphrase_key = format!(
            "[{section}] tls_key_password (or CXPULSE_{}__TLS_KEY_PASSWORD)",
            section.to_ascii_uppercase()
        );
        tls_acceptor(
            cert.as_ref(),
            key.as_ref(),
            self.tls_key_password.as_ref().map(Secret::expose),
            &passphrase_key,
        )
        .map(Some)
    }
}

/// An acceptor for the PEM certificate chain and private key; errors name the failing file. An
/// encrypted key is opened with `passphrase` (its config key named by `passphrase_key` in
/// errors); without one it is refused, never asked for on a terminal.
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    passphrase: Option<&str>,
    passphrase_key: &str,
) -> anyhow::Result<SslAcceptor> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| anyhow::anyhow!("cannot load TLS certificate {}: {e}", cert.display()))?;
    let key = load_private_key(key, passphrase, passphrase_key)?;
    builder
        .set_private_key(&key)
        .map_err(|e| anyhow::anyhow!("cannot use the TLS key: {}", first_reason(&e)))?;
    builder
        .check_private_key()
        .map_err(|e| anyhow::anyhow!("TLS key does not match the certificate: {e}"))?;
    Ok(builder.build())
}

/// Reads a PEM private key, decrypting it with `passphrase` when it is encrypted. Never prompts:
/// OpenSSL's default would ask on the terminal and block startup.
pub fn load_private_key(
    path: &Path,
    passphrase: Option<&str>,
    passphrase_key: &str,
) -> anyhow::Result<PKey<Private>> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot load TLS key {}: {e}", path.display()))?;
    let encrypted = is_encrypted_pem(&pem);
    match (encrypted, passphrase) {
        (true, None) => anyhow::bail!(
            "TLS key {} is encrypted: set its passphrase in {passphrase_key}",
            path.display()
        ),
        (true, Some(passphrase)) => {
            PKey::private_key_from_pem_passphrase(&pem, passphrase.as_bytes()).map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt TLS key {}: wrong passphrase in {passphrase_key}?",
                    path.display()
                )
            })
        }
        // A key that only turns out encrypted while parsing gets an empty passphrase, not a prompt.
        (false, _) => PKey::private_key_from_pem_callback(&pem, |_| Ok(0)).map_err(|e| {
            anyhow::anyhow!("cannot load TLS key {}: {}", path.display(), first_reason(&e))
        }),
    }
}

/// Whether a PEM file holds an encrypted key (PKCS#8 or the traditional `Proc-Type` header).
pub fn is_encrypted_pem(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED")
}

fn first_reason(stack: &openssl::error::ErrorStack) -> String {
    stack
        .errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "not a PEM private key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_every_byte() {
        let token = BearerToken::new(Some(&Secret::new("secret")));
        assert!(token.admits(Some(b"Bearer secret")));
        assert!(!token.admits(Some(b"Bearer secreT")));
        assert!(!token.admits(Some(b"Bearer secret2")));
        assert!(!token.admits(Some(b"Bearer ")));
        assert!(!token.admits(None));
        assert!(BearerToken::new(None).admits(None), "no token configured: open");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let token = BearerToken::new(Some(&Secret::new("secret")));
        for header in ["bearer secret", "BEARER secret", "BeArEr  secret", "Bearer secret "] {
            assert!(token.admits(Some(header.as_bytes())), "{header}");
        }
        for header in ["Basic secret", "Bearersecret", "secret", "Bearer\tsecret"] {
            assert!(!token.admits(Some(header.as_bytes())), "{header}");
        }
    }

    #[test]
    fn only_digests_are_kept() {
        let BearerToken(Some(digest)) = BearerToken::new(Some(&Secret::new("secret"))) else {
            panic!("token lost")
        };
        assert_eq!(digest.len(), 32, "the same length whatever the token's");
    }

    #[test]
    fn missing_certificate_files_are_named() {
        let Err(error) = tls_acceptor(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
            None,
            "[http] tls_key_password",
        ) else {
            panic!("missing files accepted");
        };
        assert!(error.to_string().contains("/nonexistent/cert.pem"), "{error}");
    }
}

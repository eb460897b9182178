//! `[http]`: where the worker listens, its token, TLS files and listener limits.

use cxpulse_core::secret::Secret;

use crate::listener::{HttpLimits, Limits};
use crate::security::{BearerToken, TlsFiles};

/// `[http]` compiled: the address parsed, the token read (from the file, if so), the TLS key
/// loaded and the limits checked. What the running listener takes.
#[derive(Clone)]
pub struct HttpSettings {
    pub listen: std::net::SocketAddr,
    pub token: BearerToken,
    pub tls: Option<openssl::ssl::SslAcceptor>,
    pub limits: Limits,
    /// The token's value, for the configuration's redaction (a file's token is learnt here).
    pub token_value: Option<Secret>,
}

/// `[http]`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; `0.0.0.0:9898` in containers.
    pub listen: String,
    /// Require `Authorization: Bearer <token>` on /metrics and /api/v1/scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Read the token from this file instead (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// HTTPS: `tls_cert`, `tls_key`, `tls_key_password`.
    #[serde(flatten)]
    pub tls: TlsFiles,
    /// Time limits, connection cap and body limit of the listener.
    #[serde(flatten)]
    pub limits: HttpLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9898".into(),
            bearer_token: None,
            bearer_token_file: None,
            tls: TlsFiles::default(),
            limits: HttpLimits::default(),
        }
    }
}

impl HttpConfig {
    /// The settings the listener runs with; every error is one line naming the key.
    pub fn compile(&self) -> anyhow::Result<HttpSettings> {
        let listen = self.listen.parse().map_err(|_| {
            anyhow::anyhow!("[http] listen `{}` is not an address like 127.0.0.1:9898", self.listen)
        })?;
        let limits = self.limits.resolve("http")?;
        let token_value = self.token()?;
        Ok(HttpSettings {
            listen,
            token: BearerToken::new(token_value.as_ref()),
            tls: self.tls.acceptor("http")?,
            limits,
            token_value,
        })
    }

    /// The token in effect; an empty one is an error, never "no authentication".
    fn token(&self) -> anyhow::Result<Option<Secret>> {
        let token = match (&self.bearer_token, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("[http] set bearer_token or bearer_token_file, not both")
            }
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => Some(Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read [http] bearer_token_file {path}: {e}")
                    })?
                    .trim_end_matches(['\n', '\r']),
            )),
            (None, None) => None,
        };
        if token.as_ref().is_some_and(Secret::is_blank) {
            anyhow::bail!("[http] bearer token is empty: set a real token or remove the setting");
        }
        Ok(token)
    }
}

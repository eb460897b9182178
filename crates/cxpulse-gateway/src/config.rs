//! `[gateway]` and its `[[gateway.sources]]`: where the gateway listens, which topic it writes,
//! and one entry per survey tool whose webhooks it accepts.

use std::time::Duration;

use cxpulse_core::duration::DurationSetting;
use cxpulse_core::secret::Secret;
use cxpulse_http::listener::{HttpLimits, Limits};
use cxpulse_http::security::TlsFiles;
use serde::{Deserialize, Serialize};

/// `[gateway]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Listen address; `0.0.0.0:9899` in containers.
    pub listen: String,
    /// Topic events are produced to; absent: the first `[source] topics` entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Bearer token for `/v1/events`; required unless `listen` is a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// HTTPS: `tls_cert`, `tls_key`, `tls_key_password`, as in `[http]`.
    #[serde(flatten)]
    pub tls: TlsFiles,
    /// How long a request waits for Kafka's acknowledgement before answering 503.
    pub ack_timeout: DurationSetting,
    /// The `Retry-After` (seconds) sent with a 503.
    pub retry_after_seconds: u64,
    /// How long requests in flight may take to finish on shutdown.
    pub drain_timeout: DurationSetting,
    /// The listener's limits, the same keys and defaults as `[http]`: header, TLS handshake and
    /// keep-alive time limits, the connection cap and `max_body_bytes` (413 above it).
    #[serde(flatten)]
    pub limits: HttpLimits,
    /// Survey tools whose webhooks are accepted, each at `/v1/webhooks/{name}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceSpec>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:9899".into(),
            topic: None,
            token: None,
            tls: TlsFiles::default(),
            ack_timeout: DurationSetting::secs(5),
            retry_after_seconds: 5,
            drain_timeout: DurationSetting::secs(10),
            sources: Vec::new(),
            limits: HttpLimits::default(),
        }
    }
}

/// The survey tools the gateway has a mapper for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Delighted,
    Typeform,
    Survicate,
    Wootric,
    Asknicely,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Delighted => "delighted",
            Kind::Typeform => "typeform",
            Kind::Survicate => "survicate",
            Kind::Wootric => "wootric",
            Kind::Asknicely => "asknicely",
        }
    }

    /// Which credentials a source of this kind may use: `(token, secret)`.
    pub fn credentials(self) -> (bool, bool) {
        match self {
            // Typeform signs every payload; it has no way to send a token.
            Kind::Typeform => (false, true),
            // Wootric signs when given a secret; a token in the URL works too.
            Kind::Wootric => (true, true),
            Kind::Delighted | Kind::Survicate | Kind::Asknicely => (true, false),
        }
    }
}

/// `[[gateway.sources]]`: one survey tool's webhook.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The URL's last segment: `POST /v1/webhooks/{name}`; also the `source` metric label.
    pub name: String,
    pub kind: Kind,
    /// A fixed brand ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// ... or a dotted path in the payload (`person_properties.brand`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_from: Option<String>,
    /// A dotted path in the payload for the segment; default segment `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_from: Option<String>,
    /// Per-source token, sent as `Authorization: Bearer …` or `?token=…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Signing secret, for kinds whose payloads are signed (typeform, wootric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// The survey, where the tool does not say which (`nps`, `csat`, `ces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey: Option<String>,
    /// CSAT scale (5, 7 or 10) where the survey is `csat`; default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_max: Option<u8>,
    /// Which question holds the score: Typeform's field `ref`, Survicate's question id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_field: Option<String>,
    /// A dotted path for the customer id, where the kind's default does not fit
    /// (Typeform: `form_response.hidden.user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_from: Option<String>,
}

/// `[gateway]` compiled: checked once, with its defaults resolved, the TLS key loaded and the
/// listener's limits in effect. What the running gateway takes.
#[derive(Clone)]
pub struct GatewaySettings {
    pub listen: std::net::SocketAddr,
    /// The topic events are produced to.
    pub topic: String,
    pub token: Option<Secret>,
    pub tls: Option<openssl::ssl::SslAcceptor>,
    /// The listener's limits, with requests in flight given `drain_timeout` on shutdown. The
    /// body limit is left to the router ([`GatewaySettings::max_body_bytes`]), which applies it
    /// after authentication: a stranger hears 401, never 413, and every 413 is counted under
    /// its source.
    pub listener: Limits,
    pub max_body_bytes: usize,
    pub ack_timeout: Duration,
    pub retry_after_seconds: u64,
    pub sources: Vec<SourceSpec>,
}

impl GatewaySettings {
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name == name)
    }
}

impl GatewayConfig {
    /// The settings the gateway runs with; `default_topic` (the first `[source] topics` entry)
    /// when `topic` is not set. Every error is one line naming the key, and no secret.
    pub fn compile(&self, default_topic: Option<&str>) -> anyhow::Result<GatewaySettings> {
        let listen = self.validate().map_err(anyhow::Error::msg)?;
        let topic = self
            .topic
            .clone()
            .or_else(|| default_topic.map(str::to_string))
            .ok_or_else(|| anyhow::anyhow!("no [gateway] topic and no [source] topics"))?;
        let drain_timeout = self.drain_timeout.get().max(Duration::from_millis(1));
        let limits = self.limits.resolve("gateway")?;
        Ok(GatewaySettings {
            listen,
            topic,
            token: self.token.clone(),
            tls: self.tls.acceptor("gateway")?,
            listener: Limits {
                shutdown_grace: drain_timeout,
                max_body_bytes: usize::MAX,
                ..limits
            },
            max_body_bytes: self.limits.max_body_bytes,
            ack_timeout: self.ack_timeout(),
            retry_after_seconds: self.retry_after_seconds,
            sources: self.sources.clone(),
        })
    }

    /// Checks what serde cannot; the listen address.
    fn validate(&self) -> Result<std::net::SocketAddr, String> {
        let listen: std::net::SocketAddr = self.listen.parse().map_err(|_| {
            format!("[gateway] listen `{}` is not an address like 127.0.0.1:9899", self.listen)
        })?;
        match &self.token {
            Some(token) if token.is_blank() => {
                return Err("[gateway] token is empty: set a real token or remove it".into())
            }
            None if !listen.ip().is_loopback() => {
                return Err(format!(
                    "[gateway] token is required when listening on {listen} (not loopback)"
                ))
            }
            _ => {}
        }
        if self.topic.as_deref() == Some("") {
            return Err("[gateway] topic is empty".into());
        }
        if self.limits.max_body_bytes == 0 {
            return Err("[gateway] max_body_bytes must be at least 1".into());
        }
        let limits = self.limits.resolve("gateway").map_err(|e| e.to_string())?;
        self.tls.check_pairing("gateway")?;
        for (key, setting) in
            [("ack_timeout", &self.ack_timeout), ("drain_timeout", &self.drain_timeout)]
        {
            if setting.ms() <= 0 {
                return Err(format!("[gateway] {key} must be more than zero"));
            }
        }
        if limits.keep_alive <= self.ack_timeout() {
            // Nothing moves on a connection while its request waits for Kafka.
            return Err("[gateway] keep_alive_timeout must be longer than ack_timeout".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for source in &self.sources {
            source.validate()?;
            if !names.insert(source.name.as_str()) {
                return Err(format!("[[gateway.sources]] `{}` is listed twice", source.name));
            }
        }
        Ok(listen)
    }

    fn ack_timeout(&self) -> Duration {
        self.ack_timeout.get().max(Duration::from_millis(1))
    }
}

impl SourceSpec {
    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!(
                "[[gateway.sources]] name `{name}` must be 1..64 of [A-Za-z0-9_.-]"
            ));
        }
        match (&self.brand, &self.brand_from) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!("[[gateway.sources]] `{name}`: set brand or brand_from"))
            }
            (Some(brand), None) if !cxpulse_core::event::is_label_value(brand) => {
                return Err(format!(
                    "[[gateway.sources]] `{name}`: brand `{brand}` is not a label value"
                ))
            }
            _ => {}
        }
        let set = |value: &Option<Secret>| value.as_ref().is_some_and(|v| !v.is_blank());
        let (token_allowed, secret_allowed) = self.kind.credentials();
        let (has_token, has_secret) = (set(&self.token), set(&self.secret));
        let fits = (has_token && token_allowed && !has_secret)
            || (has_secret && secret_allowed && !has_token);
        if !fits {
            let wanted = match (token_allowed, secret_allowed) {
                (true, false) => "a token",
                (false, true) => "a secret",
                _ => "a token or a secret",
            };
            let kind = self.kind.as_str();
            return Err(format!(
                "[[gateway.sources]] `{name}` ({kind}) needs {wanted}: one, not empty"
            ));
        }
        if let Some(survey) = &self.survey {
            if !["nps", "csat", "ces"].contains(&survey.as_str()) {
                return Err(format!(
                    "[[gateway.sources]] `{name}`: survey must be nps, csat or ces"
                ));
            }
        }
        if let Some(scale) = self.scale_max {
            if ![5, 7, 10].contains(&scale) {
                return Err(format!("[[gateway.sources]] `{name}`: scale_max must be 5, 7 or 10"));
            }
        }
        if self.kind == Kind::Typeform && self.score_field.is_none() {
            return Err(format!(
                "[[gateway.sources]] `{name}` (typeform) needs score_field: the ref of the \
                 score question"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::test_support::source;

    fn check(config: &GatewayConfig) -> Result<(), String> {
        config.compile(Some("t")).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn listener_limits_and_tls_are_read_from_the_gateway_section() {
        let config: GatewayConfig = serde_json::from_value(serde_json::json!({
            "header_read_timeout": "2s",
            "max_connections": 64,
            "max_body_bytes": 1000,
            "drain_timeout": "3s",
            "tls_key_password": "pem-secret",
            "sources": [],
        }))
        .unwrap();
        assert_eq!(check(&config), Ok(()));
        let settings = config.compile(Some("t")).unwrap();
        let limits = settings.listener;
        assert_eq!(limits.header_read, Duration::from_secs(2));
        assert_eq!(limits.keep_alive, Duration::from_secs(30), "[http]'s default");
        assert_eq!(limits.max_connections, 64);
        assert_eq!(limits.shutdown_grace, Duration::from_secs(3), "the drain, not the worker's");
        assert_eq!(settings.max_body_bytes, 1000, "applied by the router, after the token");
        assert_eq!(settings.topic, "t", "the first [source] topic when [gateway] names none");
        assert!(!format!("{config:?}").contains("pem-secret"));
        let unknown = serde_json::from_value::<GatewayConfig>(
            serde_json::json!({ "header_read_timout": "2s" }),
        );
        assert!(unknown.unwrap_err().to_string().contains("header_read_timout"));
    }

    #[test]
    fn a_bad_listener_limit_or_half_a_tls_pair_is_refused() {
        let mut config = GatewayConfig::default();
        config.limits.header_read_timeout = DurationSetting::secs(0);
        assert!(check(&config).unwrap_err().contains("[gateway] header_read_timeout"));
        let mut config =
            GatewayConfig { ack_timeout: DurationSetting::secs(30), ..GatewayConfig::default() };
        assert!(check(&config).unwrap_err().contains("longer than ack_timeout"));
        config.limits.keep_alive_timeout = DurationSetting::secs(31);
        assert_eq!(check(&config), Ok(()));
        config.tls.tls_cert = Some("cert.pem".into());
        assert!(check(&config).unwrap_err().contains("tls_cert and tls_key go together"));
    }

    #[test]
    fn defaults_are_valid_on_loopback_and_need_a_token_elsewhere() {
        let mut config = GatewayConfig::default();
        assert_eq!(check(&config), Ok(()));
        config.listen = "0.0.0.0:9899".into();
        assert!(check(&config).unwrap_err().contains("token is required"));
        config.token = Some(Secret::new("x"));
        assert_eq!(check(&config), Ok(()));
    }

    #[test]
    fn sources_need_their_credential_and_one_brand() {
        let mut config = GatewayConfig::default();
        config.sources.push(source(Kind::Delighted));
        assert_eq!(check(&config), Ok(()));
        config.sources[0].token = None;
        assert!(check(&config).unwrap_err().contains("needs a token"));
        let mut typeform = source(Kind::Typeform);
        typeform.score_field = Some("nps".into());
        config.sources = vec![typeform];
        assert!(check(&config).unwrap_err().contains("needs a secret"));
        config.sources[0].secret = Some(Secret::new("k"));
        assert!(check(&config).unwrap_err().contains("one, not empty"), "token and secret");
        config.sources[0].token = None;
        assert_eq!(check(&config), Ok(()));
        let mut wootric = source(Kind::Wootric);
        wootric.secret = Some(Secret::new("k"));
        config.sources.push(wootric);
        assert!(check(&config).unwrap_err().contains("a token or a secret"));
        config.sources[1].token = None;
        config.sources[1].name = "w".into();
        assert_eq!(check(&config), Ok(()));
        config.sources[0].brand_from = Some("a.b".into());
        assert!(check(&config).unwrap_err().contains("brand or brand_from"));
    }

    #[test]
    fn redaction_hides_every_credential() {
        let mut config =
            GatewayConfig { token: Some(Secret::new("hunter2")), ..Default::default() };
        let mut s = source(Kind::Typeform);
        s.token = None;
        s.secret = Some(Secret::new("sekrit"));
        config.sources.push(s);
        let shown = format!("{config:?}") + &serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("sekrit"), "{shown}");
    }
}

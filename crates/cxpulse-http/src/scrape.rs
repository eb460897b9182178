//! One `/metrics` render shared by every concurrent scraper. Scrapers queue for the render; the
//! first renders (on a blocking thread), the others get the same bytes while they are at most
//! [`REUSE_FOR`] old. A scrape's memory is thus one text (and one gzip of it), whatever the
//! number of scrapers: their responses all point at the same reference-counted buffer.

use std::io::Write;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a render is served again: scrapers within this moment see the same instant.
pub const REUSE_FOR: Duration = Duration::from_secs(1);

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The last render, owned by the `/metrics` route.
#[derive(Default)]
pub struct SharedScrape {
    last: Mutex<Option<Rendered>>,
}

struct Rendered {
    at: Instant,
    text: Bytes,
    gzip: Option<Bytes>,
}

impl SharedScrape {
    /// The response for one scraper: `render` runs only when no recent render exists, and never
    /// twice at once.
    pub async fn respond(
        &self,
        headers: &HeaderMap,
        render: impl FnOnce() -> String + Send + 'static,
    ) -> Response {
        let gzip = accepts_gzip(headers);
        let mut last = self.last.lock().await;
        if last.as_ref().is_none_or(|rendered| rendered.at.elapsed() > REUSE_FOR) {
            // Dropped before rendering anew: at most one text is held here.
            *last = None;
            let text = match tokio::task::spawn_blocking(render).await {
                Ok(text) => Bytes::from(text),
                Err(e) => Bytes::from(format!("# render failed: {e}\n")),
            };
            *last = Some(Rendered { at: Instant::now(), text, gzip: None });
        }
        let Some(rendered) = last.as_mut() else {
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if !gzip {
            return ([(header::CONTENT_TYPE, CONTENT_TYPE)], rendered.text.clone()).into_response();
        }
        if rendered.gzip.is_none() {
            let text = rendered.text.clone();
            rendered.gzip = tokio::task::spawn_blocking(move || compress(&text)).await.ok();
        }
        match &rendered.gzip {
            Some(zipped) => (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
                    (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                ],
                zipped.clone(),
            )
                .into_response(),
            None => ([(header::CONTENT_TYPE, CONTENT_TYPE)], rendered.text.clone()).into_response(),
        }
    }
}

/// Whether `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

/// Fast gzip: metrics text compresses about tenfold even at level 1.
fn compress(text: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    match encoder.write_all(text).and_then(|()| encoder.finish()) {
        Ok(zipped) => Bytes::from(zipped),
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn gzip_is_served_only_when_asked() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn concurrent_scrapers_share_one_render() {
        let shared = std::sync::Arc::new(SharedScrape::default());
        let renders = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (shared, renders) = (shared.clone(), renders.clone());
            tasks.push(tokio::spawn(async move {
                let response = shared
                    .respond(&HeaderMap::new(), move || {
                        renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        "metric 1\n".to_string()
                    })
                    .await;
                axum::body::to_bytes(response.into_body(), 1024).await.unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "metric 1\n");
        }
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gzip_round_trips() {
        let shared = SharedScrape::default();
        let text = "cxpulse_series 3\n".repeat(1000);
        let expected = text.clone();
        let response = shared.respond(&headers("gzip"), move || text).await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let zipped = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, expected);
    }
}

//! One `/metrics` render shared by every concurrent scraper. Scrapers queue for the render; the
//! first renders (on a blocking thread), the others get the same bytes while they are at most
//! [`REUSE_FOR`] old. Responses stream slices of that one buffer, so a scrape's memory is one
//! text (and one gzip of it) whatever the number of scrapers.
//!
//! A render is replaced only when no response is still sending it, or once it is
//! [`HOLD_AT_MOST`] old; and never while the render before it is still being sent. So at most two
//! renders are ever held, and one during an ordinary burst of scrapes; a client reading very
//! slowly can make the values older, never the process bigger.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a render is served again: scrapers within this moment see the same instant.
pub const REUSE_FOR: Duration = Duration::from_secs(1);
/// How long a render still being sent is served again, past [`REUSE_FOR`], before another is
/// made beside it.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(5);
/// Responses are sent in slices of this size, so that the response (and its hold on the
/// render) lives until the client has nearly read it all.
const SLICE: usize = 256 * 1024;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The renders, owned by the `/metrics` route.
#[derive(Default)]
pub struct SharedScrape {
    renders: Mutex<Renders>,
}

#[derive(Default)]
struct Renders {
    current: Option<Rendered>,
    /// The render before `current`, alive only while responses still send it.
    previous: Vec<Weak<Bytes>>,
}

struct Rendered {
    at: Instant,
    text: Arc<Bytes>,
    gzip: Option<Arc<Bytes>>,
}

impl Rendered {
    /// Whether a response is still sending this render.
    fn in_flight(&self) -> bool {
        Arc::strong_count(&self.text) > 1
            || self.gzip.as_ref().is_some_and(|g| Arc::strong_count(g) > 1)
    }
}

impl SharedScrape {
    /// The response for one scraper: `render` runs only when no recent render exists (and no
    /// older one is still being sent), and never twice at once.
    pub async fn respond(
        &self,
        headers: &HeaderMap,
        render: impl FnOnce() -> String + Send + 'static,
    ) -> Response {
        let gzip = accepts_gzip(headers);
        let mut renders = self.renders.lock().await;
        let previous_in_flight = renders.previous.iter().any(|weak| weak.strong_count() > 0);
        let fresh_enough = match &renders.current {
            None => false,
            Some(current) => {
                let age = current.at.elapsed();
                age <= REUSE_FOR
                    || previous_in_flight
                    || (current.in_flight() && age <= HOLD_AT_MOST)
            }
        };
        if !fresh_enough {
            renders.previous = renders.current.take().map_or_else(Vec::new, |old| {
                let mut weak = vec![Arc::downgrade(&old.text)];
                weak.extend(old.gzip.as_ref().map(Arc::downgrade));
                weak
            });
            let text = match tokio::task::spawn_blocking(render).await {
                Ok(text) => Bytes::from(text),
                Err(e) => Bytes::from(format!("# render failed: {e}\n")),
            };
            renders.current =
                Some(Rendered { at: Instant::now(), text: Arc::new(text), gzip: None });
        }
        let Some(rendered) = renders.current.as_mut() else {
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if gzip && rendered.gzip.is_none() {
            let text = rendered.text.clone();
            rendered.gzip =
                tokio::task::spawn_blocking(move || compress(&text)).await.ok().map(Arc::new);
        }
        let content_type = (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        match (&rendered.gzip, gzip) {
            (Some(zipped), true) => (
                [content_type, (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))],
                Body::new(Slices::new(zipped.clone())),
            )
                .into_response(),
            _ => ([content_type], Body::new(Slices::new(rendered.text.clone()))).into_response(),
        }
    }
}

/// A response body sending one shared buffer slice by slice, holding it until the last slice.
struct Slices {
    data: Option<Arc<Bytes>>,
    sent: usize,
}

impl Slices {
    fn new(data: Arc<Bytes>) -> Slices {
        Slices { data: Some(data), sent: 0 }
    }
}

impl http_body::Body for Slices {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(data) = self.data.clone() else { return Poll::Ready(None) };
        let end = (self.sent + SLICE).min(data.len());
        let slice = data.slice(self.sent..end);
        self.sent = end;
        if end >= data.len() {
            self.data = None;
        }
        if slice.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let left = self.data.as_ref().map_or(0, |d| d.len() - self.sent);
        SizeHint::with_exact(left as u64)
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
    async fn a_render_still_being_sent_is_served_again() {
        let shared = SharedScrape::default();
        let body = |r: Response| axum::body::to_bytes(r.into_body(), 1024);
        let first = shared.respond(&HeaderMap::new(), || "one\n".to_string()).await;
        tokio::time::sleep(REUSE_FOR + Duration::from_millis(50)).await;
        // `first` is still being sent: served again rather than rendered beside it.
        let again = shared.respond(&HeaderMap::new(), || "two\n".to_string()).await;
        assert_eq!(body(again).await.unwrap(), "one\n");
        // Held at most HOLD_AT_MOST: then a second render is made beside it ...
        tokio::time::sleep(HOLD_AT_MOST).await;
        let second = shared.respond(&HeaderMap::new(), || "two\n".to_string()).await;
        // ... but never a third while the first is still being sent.
        tokio::time::sleep(HOLD_AT_MOST + Duration::from_millis(50)).await;
        let third = shared.respond(&HeaderMap::new(), || "three\n".to_string()).await;
        assert_eq!(body(third).await.unwrap(), "two\n");
        assert_eq!(body(first).await.unwrap(), "one\n");
        assert_eq!(body(second).await.unwrap(), "two\n");
        // Nothing in flight any more: a fresh render.
        let fourth = shared.respond(&HeaderMap::new(), || "four\n".to_string()).await;
        assert_eq!(body(fourth).await.unwrap(), "four\n");
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

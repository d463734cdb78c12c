//! The headers of every exchange, set in one pass around the whole HTTP surface: a request id
//! on every request and its answer, and the security headers of every answer.
//!
//! One layer instead of one per header: every layer of the stack is paid by every request. Here
//! there were eight (five headers, a middleware for `Cache-Control`, two for the request id);
//! in a trial on a hot showtime without them and the tracing layer, the engine answered about
//! a fifth more requests.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The request id header: the client's own, or one the engine makes up; echoed on the answer,
/// logged with the request and kept as the correlation id of the events it causes.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The Content-Security-Policy of API answers: JSON is never a document, so it may load
/// nothing, run nothing and be framed by nobody. Routes that serve documents set their own.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Set on every answer, whatever the route set: no MIME sniffing, no framing, no referrer,
/// HTTPS only once a browser has seen it over HTTPS.
const ALWAYS: [(HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
];

/// Adds [`ExchangeHeaders`] around a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeHeadersLayer;

impl<S> Layer<S> for ExchangeHeadersLayer {
    type Service = ExchangeHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ExchangeHeaders { inner }
    }
}

/// Gives a request without an `x-request-id` a new one (a UUID), and gives the answer:
/// - the request's id, unless the answer has one;
/// - the [`ALWAYS`] headers;
/// - the API's Content-Security-Policy where the route set none;
/// - `Cache-Control: no-store` on an answer to a request with a bearer token or to a write
///   (a token, an account, tickets), unless the route chose its own; public reads stay
///   cacheable.
#[derive(Clone, Debug)]
pub struct ExchangeHeaders<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ExchangeHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ExchangeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let request_id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let mut text = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
                let id = HeaderValue::from_str(id).expect("a UUID is a valid header value");
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let private = request.headers().contains_key(header::AUTHORIZATION)
            || !matches!(*request.method(), Method::GET | Method::HEAD);
        ExchangeFuture {
            inner: self.inner.call(request),
            request_id: Some(request_id),
            private,
        }
    }
}

pin_project! {
    /// The answer of an [`ExchangeHeaders`] service.
    pub struct ExchangeFuture<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        private: bool,
    }
}

impl<F, ResBody, E> Future for ExchangeFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let request_id = this.request_id.take().expect("polled after it was ready");
        finish(response.headers_mut(), request_id, *this.private);
        Poll::Ready(Ok(response))
    }
}

fn finish(headers: &mut HeaderMap, request_id: HeaderValue, private: bool) {
    headers.entry(X_REQUEST_ID).or_insert(request_id);
    for (name, value) in ALWAYS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_CSP));
    if private {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
}

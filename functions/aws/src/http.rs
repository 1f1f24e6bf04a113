//! The HTTP client every provider API shares ([`HttpGet`]): hyper over rustls on aws-lc-rs, the
//! stack the AWS SDK already links (no second TLS library), HTTP/1.1, the system's root
//! certificates (a provider's API is not an AWS endpoint).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::api::{Answer, Get, HttpGet, TransportError};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

#[derive(Clone)]
pub struct HyperClient(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>);

impl HyperClient {
    /// Loads the system's root certificates once; fails if there are none. Plain HTTP only
    /// where a URL says so (a local stand-in of an API).
    pub fn new() -> std::io::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HyperClient(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)))
    }
}

#[async_trait]
impl HttpGet for HyperClient {
    async fn get(&self, request: Get, limit: usize, timeout: Duration) -> Result<Answer, TransportError> {
        let mut builder = http::Request::get(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let built = builder.body(Empty::new()).map_err(|e| TransportError::Failed(e.to_string()))?;
        let call = async {
            let response = self.0.request(built).await.map_err(|e| TransportError::Failed(e.to_string()))?;
            let status = response.status().as_u16();
            // Seconds only: an HTTP date is read as no advice (the caller's default wait).
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(response.into_body(), limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    TransportError::TooLarge(limit)
                } else {
                    TransportError::Failed(e.to_string())
                }
            })?;
            Ok(Answer { status, retry_after, body: body.to_bytes() })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| TransportError::Timeout(timeout))?
    }
}

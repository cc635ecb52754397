//! Azure REST calls as they go over the wire: signing (object_store's `AzureAuthorizer`),
//! sending with the store's retry policy, and turning answers into errors that carry the HTTP
//! status and whether trying again may help.

use bytes::Bytes;
use object_store::azure::AzureAuthorizer;
use object_store::client::{HttpRequest, HttpRequestBody};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use url::Url;

use super::wire::xml_field;
use super::{AzureDelta, AUTH_HINT};
use crate::error::{error_chain, first_line, Transience};
use crate::store::delta::{normalize_etag, NativeError};

/// Sent when requests go unsigned (`AZURE_SKIP_SIGNATURE`); the authorizer adds its own.
const API_VERSION: &str = "2023-11-03";

impl AzureDelta {
    /// Signs and sends a request, again after transient failures as the store's retry
    /// policy allows, with its backoff. `op` names the operation in errors.
    pub(super) async fn send(
        &self,
        op: Op<'_>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
        retry: Retry,
    ) -> Result<reqwest::Response, NativeError> {
        let started = std::time::Instant::now();
        let mut attempt = 0usize;
        loop {
            let result = self
                .send_once(
                    &op,
                    method.clone(),
                    url.clone(),
                    headers.clone(),
                    body.clone(),
                )
                .await;
            let transient = match &result {
                Ok(resp) => retry == Retry::Idempotent && is_transient_status(resp.status()),
                Err(Attempt::Transport(e)) => retry == Retry::Idempotent || e.is_connect(),
                Err(Attempt::Fatal(_)) => false,
            };
            let exhausted =
                attempt >= self.retry.max_retries || started.elapsed() > self.retry.timeout;
            if !transient || exhausted {
                return result.map_err(|e| match e {
                    Attempt::Transport(e) => op.transport(e),
                    Attempt::Fatal(e) => e,
                });
            }
            attempt += 1;
            let wait = self
                .retry
                .backoff(u32::try_from(attempt).unwrap_or(u32::MAX));
            tracing::debug!(url = %op.url, op = op.name, attempt, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        op: &Op<'_>,
        method: Method,
        url: Url,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, Attempt> {
        if method == Method::PUT {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.method_mut() = method;
        *req.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|_| Attempt::Fatal(op.fail("the request URL is not valid".into())))?;
        *req.headers_mut() = headers;
        match &self.credentials {
            Some(provider) => {
                let credential = provider.get_credential().await.map_err(|e| {
                    // A token endpoint that did not answer may answer later.
                    Attempt::Fatal(op.fail_with(
                        format!(
                            "cannot get Azure credentials: {} ({AUTH_HINT})",
                            first_line(&e.to_string())
                        ),
                        Transience::Transient,
                    ))
                })?;
                AzureAuthorizer::new(&credential, &self.account)
                    .try_authorize(&mut req)
                    .map_err(|e| {
                        Attempt::Fatal(op.fail(format!("signing: {}", first_line(&e.to_string()))))
                    })?;
            }
            None => {
                let h = req.headers_mut();
                h.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
                let date = chrono::Utc::now()
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string();
                if let Ok(date) = HeaderValue::from_str(&date) {
                    h.insert("x-ms-date", date);
                }
            }
        }
        let (parts, _) = req.into_parts();
        // The URI may now carry a SAS token: it goes to reqwest, never into a message.
        self.http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(Attempt::Transport)
    }
}

/// Which failures a call may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads, and Put Block (same id, same bytes): any transient failure.
    Idempotent,
    /// The commit: only when it never reached the server. After a lost answer a repeat
    /// would meet the commit's own etag change as a 412.
    Unsent,
}

/// How one attempt failed.
enum Attempt {
    Transport(reqwest::Error),
    Fatal(NativeError),
}

fn is_transient_status(status: StatusCode) -> bool {
    Transience::of_status(status.as_u16()) == Transience::Transient && !status.is_success()
}

/// An operation on one blob, for error messages.
#[derive(Clone)]
pub(super) struct Op<'a> {
    name: &'a str,
    url: String,
}

impl<'a> Op<'a> {
    pub(super) fn new(name: &'a str, url: String) -> Self {
        Self { name, url }
    }

    /// A failure found on this side (a header that cannot be sent, an answer missing what
    /// it must carry): trying again will not help.
    pub(super) fn fail(&self, message: String) -> NativeError {
        self.fail_with(message, Transience::Permanent)
    }

    fn fail_with(&self, message: String, transience: Transience) -> NativeError {
        NativeError::Request {
            url: self.url.clone(),
            message: format!("{}: {message}", self.name),
            status: None,
            transience,
        }
    }

    /// No (whole) answer: the network, a timeout, a body cut short. May pass.
    pub(super) fn transport(&self, e: reqwest::Error) -> NativeError {
        self.fail_with(transport_message(e), Transience::Transient)
    }
}

pub(super) fn changed(url: String, expected: &str) -> NativeError {
    NativeError::Changed {
        url,
        expected: normalize_etag(expected),
    }
}

/// Passes a success through; turns any other status into a one-line error naming Azure's
/// error code and, for the usual causes, the fix.
pub(super) async fn check(
    resp: reqwest::Response,
    op: &Op<'_>,
) -> Result<reqwest::Response, NativeError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = header(&resp, HeaderName::from_static("x-ms-error-code"));
    let body = resp.text().await.unwrap_or_default();
    let code = code
        .or_else(|| xml_field(&body, "Code"))
        .unwrap_or_default();
    let detail = xml_field(&body, "Message")
        .map(|m| first_line(&m).to_string())
        .unwrap_or_default();
    let mut message = format!("HTTP {}", status.as_u16());
    for part in [code.as_str(), detail.as_str()] {
        if !part.is_empty() {
            message.push_str(": ");
            message.push_str(part);
        }
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        message.push_str(&format!(" ({AUTH_HINT})"));
    } else if code == "ContainerNotFound" {
        message.push_str(" (create the container first)");
    }
    Err(NativeError::Request {
        url: op.url.clone(),
        message: format!("{}: {message}", op.name),
        status: Some(status.as_u16()),
        transience: Transience::of_status(status.as_u16()),
    })
}

pub(super) fn header(
    resp: &reqwest::Response,
    name: impl reqwest::header::AsHeaderName,
) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn transport_message(e: reqwest::Error) -> String {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    // `without_url`: a SAS token rides in the query string.
    let text = first_line(&error_chain(&e.without_url())).to_string();
    if connect {
        format!("{text} (cannot reach the Azure endpoint: check the account settings, AZURITE_BLOB_STORAGE_URL for the emulator, and that the server runs)")
    } else if timeout {
        format!("{text} (timed out; AZURE_TIMEOUT raises the limit)")
    } else {
        text
    }
}

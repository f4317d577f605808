//! One webhook attempt, per the Standard Webhooks specification.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{StatusCode, header};

use super::Outcome;
use crate::{egress, retry, signature};

/// Most of a receiver's answer kept in the attempt log.
pub const RESPONSE_KEEP_BYTES: usize = 1024;

/// The HTTP client every webhook goes through: no redirects (a receiver could bounce
/// the request inward), names resolved by the guarded resolver, a total timeout.
pub fn client(timeout: Duration, allow_private: bool) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("pmcore-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(egress::GuardedResolver { allow_private }.shared())
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?)
}

/// What to send.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    /// The message id: the receiver's idempotency key, the same on every attempt.
    pub id: &'a str,
    pub body: &'a [u8],
    /// Current secret first, then a rotated one still in its grace period.
    pub keys: &'a [&'a [u8]],
}

pub async fn send(
    client: &reqwest::Client,
    request: &Request<'_>,
    now: DateTime<Utc>,
    allow_private: bool,
) -> Outcome {
    let started = Instant::now();
    // IP literals never reach the resolver: check them on each attempt too.
    if let Some(reason) = egress::refuse_url(request.url, allow_private) {
        return Outcome::failed(None, None, format!("refused target: {reason}"), started);
    }
    let timestamp = now.timestamp();
    let signature = signature::header(request.keys, request.id, timestamp, request.body);
    let sent = client
        .post(request.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("webhook-id", request.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(request.body.to_vec())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            let reason = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                error_chain(&e)
            };
            return Outcome::failed(None, None, reason, started);
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, now));
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_KEEP_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(RESPONSE_KEEP_BYTES);
    let body = String::from_utf8_lossy(&kept).replace('\0', "");
    let code = Some(i32::from(status.as_u16()));
    let latency = started.elapsed();
    if status.is_success() {
        Outcome::Delivered {
            code,
            response: Some(body),
            latency,
        }
    } else if status == StatusCode::GONE {
        Outcome::Gone {
            code,
            response: Some(body),
            latency,
        }
    } else {
        let reason = format!("answered {status}");
        Outcome::Failed {
            code,
            response: Some(body),
            error: reason,
            retry_after,
            latency,
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

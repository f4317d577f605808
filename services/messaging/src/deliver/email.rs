//! One email attempt over SMTP.

use std::time::{Duration, Instant};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};

use super::Outcome;
use crate::render::Rendered;

pub type Mailer = AsyncSmtpTransport<Tokio1Executor>;

/// A pooled SMTP client from a URL: `smtp://host:port` (plain, a local sink),
/// `smtp://host:587?tls=required` (STARTTLS) or `smtps://user:pass@host` (TLS).
pub fn mailer(url: &str, timeout: Duration) -> anyhow::Result<Mailer> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
        .timeout(Some(timeout))
        .build())
}

pub async fn send(mailer: &Mailer, from: &Mailbox, to: &str, mail: &Rendered, id: &str) -> Outcome {
    let started = Instant::now();
    let to: Mailbox = match to.parse() {
        Ok(m) => m,
        Err(e) => return Outcome::failed(None, None, format!("bad address: {e}"), started),
    };
    let message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{id}@pmcore>")))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone());
    let message = match message {
        Ok(m) => m,
        Err(e) => return Outcome::failed(None, None, format!("cannot build: {e}"), started),
    };
    match mailer.send(message).await {
        Ok(response) => Outcome::Delivered {
            code: response.code().to_string().parse().ok(),
            response: Some(response.message().collect::<Vec<_>>().join(" ")),
            latency: started.elapsed(),
        },
        Err(e) => Outcome::failed(
            e.status().and_then(|c| c.to_string().parse().ok()),
            None,
            e.to_string(),
            started,
        ),
    }
}

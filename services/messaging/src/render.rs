//! Emails from templates. Templates are data (an organization may save its own), so
//! rendering is bounded: a fuel limit stops runaway loops, and a template is tried on
//! sample data before it is saved, so one that cannot render is refused with the
//! engine's error instead of failing at send time.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

/// Instructions one rendering may spend (a loop over a big range runs out).
const FUEL: u64 = 50_000;

/// Longest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

/// Rendered subject and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // Plain-text mail: nothing to escape, and a missing variable prints empty.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env
}

pub fn render(subject: &str, body: &str, data: &Value) -> Result<Rendered, String> {
    let env = environment();
    let one = |name: &str, source: &str| -> Result<String, String> {
        env.render_str(source, minijinja::value::Serde(data))
            .map_err(|e| format!("{name}: {}", describe(&e)))
    };
    let subject = one("subject", subject)?;
    // A header line: no line breaks, a sane length.
    let subject: String = subject
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    Ok(Rendered {
        subject,
        body: one("body", body)?,
    })
}

fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Checks a template before it is saved: size, syntax, and a rendering on sample data.
pub fn validate(subject: &str, body: &str) -> Result<(), String> {
    for (name, source) in [("subject", subject), ("body", body)] {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(format!("{name}: longer than {MAX_TEMPLATE_BYTES} bytes"));
        }
    }
    if subject.trim().is_empty() {
        return Err("subject: empty".into());
    }
    render(subject, body, &sample()).map(|_| ())
}

/// Data shaped like a notification's, for trying templates.
pub fn sample() -> Value {
    json!({
        "kind": "dispatch-event.scheduled",
        "organization_id": "0190c7d4-0000-7000-8000-000000000001",
        "event_id": "0190c7d4-0000-7000-8000-000000000002",
        "program_id": "0190c7d4-0000-7000-8000-000000000003",
        "program_name": "Summer peak",
        "starts_at": "2026-07-01T17:00:00Z",
        "ends_at": "2026-07-01T19:00:00Z",
        "target_kw": 2000.0,
        "signal": "curtail_kw",
        "reason": "sample",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KINDS;

    #[test]
    fn every_built_in_template_renders() {
        for kind in KINDS {
            let r = render(kind.subject, kind.body, &sample()).expect(kind.name);
            assert!(!r.subject.is_empty(), "{}", kind.name);
        }
    }

    #[test]
    fn variables_fill_in() {
        let r = render(
            "Event {{ program_name }}",
            "From {{ starts_at }}{% if missing %}x{% endif %}",
            &sample(),
        )
        .expect("renders");
        assert_eq!(r.subject, "Event Summer peak");
        assert_eq!(r.body, "From 2026-07-01T17:00:00Z");
    }

    #[test]
    fn the_subject_is_one_line() {
        let r = render("a\r\nBcc: x@y\n b", "", &sample()).expect("renders");
        assert_eq!(r.subject, "a Bcc: x@y b");
    }

    #[test]
    fn broken_templates_are_refused_with_the_reason() {
        let e = validate("ok", "{% for x in %}").expect_err("syntax");
        assert!(e.starts_with("body:"), "{e}");
        let e = validate("{{ 1 / 0 }}", "").expect_err("runtime");
        assert!(e.starts_with("subject:"), "{e}");
        assert!(validate("", "body").is_err());
        assert!(validate("s", &"x".repeat(MAX_TEMPLATE_BYTES + 1)).is_err());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let e = validate(
            "s",
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        )
        .expect_err("fuel");
        assert!(e.contains("fuel"), "{e}");
    }
}

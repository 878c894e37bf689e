//! Message bodies: a template with per-message fields, or a JSON document padded to a size.
//!
//! A template is text with placeholders in double braces, filled for every message:
//! `{{counter}}` (the device's message number, from 0), `{{device_id}}`, `{{timestamp}}`
//! (RFC 3339, UTC) and `{{random}}` (0 to 1) or `{{random:MIN:MAX}}` (an integer
//! when both bounds are integers, else a number with two decimals). A template is parsed once;
//! an unknown or malformed placeholder is an error before anything connects.

use std::fmt::Write as _;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Text(String),
    Counter,
    DeviceId,
    Timestamp,
    /// A random integer in `min..=max`.
    RandomInt {
        min: i64,
        max: i64,
    },
    /// A random number in `min..max`, two decimals.
    RandomFloat {
        min: f64,
        max: f64,
    },
}

/// What each message's body is made of.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// `{"n":<counter>,"pad":"xxx…"}`, padded to this many bytes.
    Padded(usize),
    /// A parsed template.
    Template(Vec<Part>),
}

impl Payload {
    /// Parses a `--payload` template.
    pub(crate) fn template(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!(
                    "--payload: `{{{{` at byte {} is never closed",
                    text.len() - rest.len() + open
                )
            })?;
            parts.push(placeholder(after[..close].trim())?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self::Template(parts))
    }

    /// The body of message `counter` of `device_id`; `random` supplies the random fields.
    pub(crate) fn render(&self, device_id: &str, counter: u64, random: &mut Random) -> Vec<u8> {
        match self {
            Self::Padded(size) => padded(counter, *size),
            Self::Template(parts) => {
                let mut out = String::new();
                for part in parts {
                    // Writing to a String cannot fail.
                    let _ = match part {
                        Part::Text(text) => {
                            out.push_str(text);
                            Ok(())
                        }
                        Part::Counter => write!(out, "{counter}"),
                        Part::DeviceId => {
                            out.push_str(device_id);
                            Ok(())
                        }
                        Part::Timestamp => write!(out, "{}", now_rfc3339()),
                        Part::RandomInt { min, max } => write!(out, "{}", random.int(*min, *max)),
                        Part::RandomFloat { min, max } => {
                            write!(out, "{:.2}", min + (max - min) * random.unit())
                        }
                    };
                }
                out.into_bytes()
            }
        }
    }
}

fn placeholder(name: &str) -> Result<Part, String> {
    let mut fields = name.split(':');
    let part = match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some("counter"), None, ..) => Part::Counter,
        (Some("device_id"), None, ..) => Part::DeviceId,
        (Some("timestamp"), None, ..) => Part::Timestamp,
        (Some("random"), None, ..) => Part::RandomFloat { min: 0.0, max: 1.0 },
        (Some("random"), Some(min), Some(max), None) => random_range(min, max)?,
        _ => {
            return Err(format!(
                "--payload: unknown placeholder {{{{{name}}}}}; use counter, device_id, \
                 timestamp, random or random:MIN:MAX"
            ));
        }
    };
    Ok(part)
}

fn random_range(min: &str, max: &str) -> Result<Part, String> {
    let bad = || format!("--payload: {{{{random:{min}:{max}}}}} needs two numbers, MIN < MAX");
    if let (Ok(lo), Ok(hi)) = (min.parse::<i64>(), max.parse::<i64>()) {
        return if lo <= hi {
            Ok(Part::RandomInt { min: lo, max: hi })
        } else {
            Err(bad())
        };
    }
    match (min.parse::<f64>(), max.parse::<f64>()) {
        (Ok(lo), Ok(hi)) if lo.is_finite() && hi.is_finite() && lo < hi => {
            Ok(Part::RandomFloat { min: lo, max: hi })
        }
        _ => Err(bad()),
    }
}

/// `{"n":<index>,"pad":"xxx…"}`, padded with `x` to `size` bytes (or as short as it can be).
fn padded(index: u64, size: usize) -> Vec<u8> {
    let mut text = format!("{{\"n\":{index},\"pad\":\"");
    let fill = size.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', fill));
    text.push_str("\"}");
    text.into_bytes()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A small, fast generator for payload values (xorshift64*): simulated readings, not secrets.
#[derive(Debug, Clone)]
pub(crate) struct Random(u64);

impl Random {
    /// A generator seeded from `seed` (any value; 0 is remapped).
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An integer in `min..=max`.
    fn int(&mut self, min: i64, max: i64) -> i64 {
        let span = max.abs_diff(min).saturating_add(1);
        let offset = if span == 0 {
            self.next()
        } else {
            self.next() % span
        };
        min.wrapping_add_unsigned(offset)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_template_fills_every_field() {
        let payload =
            Payload::template(r#"{"d":"{{device_id}}","n":{{counter}},"t":"{{timestamp}}","v":{{random:10:12}},"f":{{ random:0.5:1.5 }}}"#)
                .unwrap();
        let mut random = Random::new(7);
        for counter in [0, 41] {
            let body = payload.render("dev-1", counter, &mut random);
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(doc["d"], "dev-1");
            assert_eq!(doc["n"], counter);
            let t = doc["t"].as_str().unwrap();
            assert!(t.ends_with('Z'), "{t}");
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
            assert!((10..=12).contains(&doc["v"].as_i64().unwrap()));
            let f = doc["f"].as_f64().unwrap();
            assert!((0.5..=1.5).contains(&f), "{f}");
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (template, says) in [
            ("{{count}}", "unknown placeholder {{count}}"),
            ("{\"n\":{{counter}", "never closed"),
            ("{{random:5:1}}", "MIN < MAX"),
            ("{{random:a:b}}", "two numbers"),
            ("{{random:1:2:3}}", "unknown placeholder"),
            ("{{random:1.0:inf}}", "two numbers"),
        ] {
            let err = Payload::template(template).unwrap_err();
            assert!(err.contains(says), "{template}: {err}");
        }
    }

    #[test]
    fn text_without_placeholders_is_sent_as_is() {
        let payload = Payload::template("plain {text}").unwrap();
        assert_eq!(payload.render("d", 3, &mut Random::new(1)), b"plain {text}");
    }

    #[test]
    fn padded_bodies_have_the_size_asked_for() {
        for size in [0, 10, 64, 100, 4096] {
            let body = Payload::Padded(size).render("d", 12_345, &mut Random::new(1));
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(doc["n"], 12_345);
            assert_eq!(body.len(), size.max(20), "size {size}");
        }
    }

    #[test]
    fn random_integers_cover_their_range_and_stay_in_it() {
        let mut random = Random::new(0);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = random.int(-2, 2);
            seen[usize::try_from(v + 2).unwrap()] = true;
        }
        assert!(seen.iter().all(|s| *s));
        // The full range neither overflows (a panic in debug builds) nor sticks to one value.
        let values: std::collections::HashSet<i64> =
            (0..100).map(|_| random.int(i64::MIN, i64::MAX)).collect();
        assert!(values.len() > 90);
    }
}

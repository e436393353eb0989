//! Secret templates: the data of a published Secret in the shape the application reads (a
//! `.env` file, a JSON config, a URL), rendered with MiniJinja, a Jinja2 dialect.
//!
//! Contract:
//! - [`Template::compile`] checks every template before anything is asked of Twilio: syntax,
//!   the blocks and operators offered, unknown variables and filters, the rendered data keys and
//!   sizes, by rendering once with placeholder values as long as the real ones. Its errors name
//!   the template key, line and column, and carry no credential: placeholders are not secrets.
//! - [`Template::render`] renders with the real values. Should that still fail (a template whose
//!   behaviour depends on the secret's characters), the error keeps the position and the kind
//!   of failure but never MiniJinja's message, which could quote a value.
//! - Rendering is bounded whatever the template: no block but `if` and `for`, no `*` or `**`
//!   (string repetition), filters that cap their output, a fuel limit on instructions, and
//!   output capped at what a Secret can hold. A hostile template costs at most a few MiB and a
//!   few milliseconds, and never reaches anything beyond its variables.

use crate::api::{MergePolicy, SecretTemplate};
use base64::Engine;
use minijinja::{Environment, Error as RenderError, ErrorKind, UndefinedBehavior, Value};
use std::collections::BTreeMap;

/// The most a Secret's data may hold, as Kubernetes limits it (1 MiB for the whole object).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// The most one filter may produce, so chains of expanding filters stay small.
const MAX_FILTER_OUTPUT: usize = 64 * 1024;
/// Instructions one template may run.
const FUEL: u64 = 100_000;
/// Blocks a template may use.
const BLOCKS: [&str; 6] = ["if", "elif", "else", "endif", "for", "endfor"];

/// A checked template for one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    data: BTreeMap<String, String>,
    merge: MergePolicy,
    digest: String,
}

/// `createdAt` while a template is checked: as long as a real one.
pub const PLACEHOLDER_CREATED_AT: &str = "2000-01-01T00:00:00Z";

/// `createdAt` as templates see it: RFC 3339 in whole seconds, UTC.
pub fn created_at(at: k8s_openapi::jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The data of a Secret: `template` rendered with `values`, or `defaults` without a template.
pub fn data(
    template: Option<&Template>,
    values: &Variables<'_>,
    defaults: &[(&str, &str)],
) -> Result<BTreeMap<String, String>, Invalid> {
    match template {
        Some(t) => t.render(values, defaults),
        None => Ok(defaults
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()),
    }
}

/// Why a template cannot be used; the message names the key and the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The values a template may use, by name.
pub struct Variables<'a> {
    values: Vec<(&'static str, &'a str)>,
}

impl<'a> Variables<'a> {
    /// Variables from (name, value) pairs.
    pub fn new(values: Vec<(&'static str, &'a str)>) -> Self {
        Self { values }
    }

    fn context(&self) -> Value {
        self.values
            .iter()
            .map(|(k, v)| (*k, Value::from(*v)))
            .collect::<BTreeMap<_, _>>()
            .into()
    }
}

impl Template {
    /// Checks `spec` by rendering it with `placeholders`; `defaults` are the data the Secret
    /// holds without a template, kept under `mergePolicy: Merge`.
    pub fn compile(
        spec: &SecretTemplate,
        placeholders: &Variables<'_>,
        defaults: &[(&str, &str)],
    ) -> Result<Self, Invalid> {
        for (key, source) in &spec.data {
            if !valid_data_key(key) {
                return Err(Invalid(format!(
                    "secret.template.data key {key:?} is not a valid Secret data key: use letters, digits, '-', '_' and '.' only, at most 253"
                )));
            }
            check_syntax(key, source)?;
        }
        let mut text = format!("{:?}", spec.merge_policy);
        for (key, source) in &spec.data {
            text.push_str(&format!("\u{0}{key}\u{0}{source}"));
        }
        let template = Self {
            data: spec.data.clone(),
            merge: spec.merge_policy,
            digest: crate::secret::digest(&text),
        };
        template.render_checked(placeholders, defaults, true)?;
        Ok(template)
    }

    /// The Secret's data: the rendered keys, with `defaults` too under Merge.
    pub fn render(
        &self,
        values: &Variables<'_>,
        defaults: &[(&str, &str)],
    ) -> Result<BTreeMap<String, String>, Invalid> {
        self.render_checked(values, defaults, false)
    }

    fn render_checked(
        &self,
        values: &Variables<'_>,
        defaults: &[(&str, &str)],
        show_detail: bool,
    ) -> Result<BTreeMap<String, String>, Invalid> {
        let env = environment();
        let ctx = values.context();
        let mut out = BTreeMap::new();
        if self.merge == MergePolicy::Merge {
            out.extend(defaults.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        }
        for (key, source) in &self.data {
            let rendered = env
                .template_from_str(source)
                .and_then(|t| {
                    let mut buf = Capped::default();
                    t.render_captured_to(ctx.clone(), &mut buf)?;
                    Ok(buf.0)
                })
                .map_err(|e| explain(key, &e, show_detail))?;
            let text = String::from_utf8(rendered).map_err(|_| {
                Invalid(format!(
                    "secret.template.data[{key:?}] rendered text that is not UTF-8"
                ))
            })?;
            out.insert(key.clone(), text);
        }
        let size: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_SECRET_BYTES {
            let (key, bytes) = out
                .iter()
                .max_by_key(|(_, v)| v.len())
                .map(|(k, v)| (k.clone(), v.len()))
                .unwrap_or_default();
            return Err(Invalid(format!(
                "secret.template.data[{key:?}] renders {bytes} bytes, and all keys {size}: more than a Secret can hold ({MAX_SECRET_BYTES}); shorten the templates"
            )));
        }
        Ok(out)
    }

    /// A digest of the template, recorded on the Secret so a template edit is noticed.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

fn valid_data_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Refuses the blocks and operators that could make rendering unbounded, before MiniJinja sees
/// the template: only `if` and `for` blocks, and no `*` inside a tag.
fn check_syntax(key: &str, source: &str) -> Result<(), Invalid> {
    let mut rest = source;
    let mut offset = 0;
    while let Some(start) = rest.find(['{']) {
        let after = &rest[start..];
        let (open, close) = if after.starts_with("{{") {
            ("{{", "}}")
        } else if after.starts_with("{%") {
            ("{%", "%}")
        } else if after.starts_with("{#") {
            ("{#", "#}")
        } else {
            offset += start + 1;
            rest = &rest[start + 1..];
            continue;
        };
        let body_start = start + open.len();
        let Some(len) = rest[body_start..].find(close) else {
            // MiniJinja reports the unclosed tag with its position.
            return Ok(());
        };
        let body = &rest[body_start..body_start + len];
        let at = offset + start;
        if open == "{%" {
            let word = body
                .trim_start_matches(['-', '+'])
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if !BLOCKS.contains(&word) {
                return Err(Invalid(format!(
                    "secret.template.data[{key:?}] {}: the {word:?} block is not offered; only if/elif/else and for blocks are",
                    position(source, at)
                )));
            }
        }
        if open != "{#" && body.contains('*') {
            return Err(Invalid(format!(
                "secret.template.data[{key:?}] {}: the * and ** operators are not offered",
                position(source, at)
            )));
        }
        offset += body_start + len + close.len();
        rest = &rest[body_start + len + close.len()..];
    }
    Ok(())
}

/// "line L, column C" of a byte offset.
fn position(source: &str, at: usize) -> String {
    let before = &source[..at.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// A person's message for a failed render: where, and (for a placeholder render only) what.
fn explain(key: &str, e: &RenderError, show_detail: bool) -> Invalid {
    let at = match e.line() {
        Some(line) => format!("line {line}"),
        None => "somewhere".to_owned(),
    };
    let what = match e.kind() {
        ErrorKind::UndefinedError => {
            "an unknown variable or attribute; the variables are listed in the README (Secret templates)".to_owned()
        }
        ErrorKind::UnknownFilter => "an unknown filter; the filters offered are tojson, b64encode, b64decode, urlencode, lower, upper, trim and default".to_owned(),
        ErrorKind::OutOfFuel => "the template runs too long".to_owned(),
        ErrorKind::WriteFailure => format!("it renders more than a Secret can hold ({MAX_SECRET_BYTES} bytes)"),
        kind if show_detail => match e.detail() {
            Some(detail) => format!("{kind}: {detail}"),
            None => kind.to_string(),
        },
        // Rendered with the real values, MiniJinja's words might quote one of them.
        kind => format!("{kind} with the real values (details withheld: they could contain the credential)"),
    };
    Invalid(format!("secret.template.data[{key:?}] {at}: {what}"))
}

/// The environment every template renders in: nothing but our variables and filters.
fn environment() -> Environment<'static> {
    let mut env = Environment::empty();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(32);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    env.set_syntax(syntax.build().expect("the default delimiters"));
    env.add_filter("tojson", |v: &str| {
        capped(serde_json::to_string(v).unwrap_or_default())
    });
    env.add_filter("b64encode", |v: &str| {
        capped(base64::engine::general_purpose::STANDARD.encode(v))
    });
    env.add_filter("b64decode", |v: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|_| RenderError::new(ErrorKind::InvalidOperation, "b64decode: not base64"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| RenderError::new(ErrorKind::InvalidOperation, "b64decode: not UTF-8 text"))?;
        capped(text)
    });
    env.add_filter("urlencode", |v: &str| {
        capped(percent_encoding::utf8_percent_encode(v, URL_RESERVED).to_string())
    });
    env.add_filter("lower", |v: &str| capped(v.to_lowercase()));
    env.add_filter("upper", |v: &str| capped(v.to_uppercase()));
    env.add_filter("trim", |v: &str| v.trim().to_owned());
    env.add_filter("default", |v: Value, fallback: Option<Value>| {
        if v.is_undefined() || v.is_none() {
            fallback.unwrap_or_else(|| Value::from(""))
        } else {
            v
        }
    });
    env
}

/// Everything but unreserved characters (RFC 3986) is escaped, so a value fits in any part of a
/// URL, the userinfo of a DSN included.
const URL_RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn capped(text: String) -> Result<String, RenderError> {
    if text.len() > MAX_FILTER_OUTPUT {
        return Err(RenderError::new(
            ErrorKind::InvalidOperation,
            "a filter's output is too large",
        ));
    }
    Ok(text)
}

/// Output that stops at what a Secret can hold.
#[derive(Default)]
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_SECRET_BYTES {
            return Err(std::io::Error::other("more than a Secret can hold"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(data: &[(&str, &str)], merge: MergePolicy) -> SecretTemplate {
        SecretTemplate {
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            merge_policy: merge,
        }
    }

    fn vars<'a>(secret: &'a str) -> Variables<'a> {
        Variables::new(vec![
            ("apiKey", "SK1"),
            ("apiSecret", secret),
            ("name", "checkout"),
        ])
    }

    const DEFAULTS: [(&str, &str); 2] = [("TWILIO_API_KEY", "SK1"), ("TWILIO_API_SECRET", "s3cr3t")];

    fn compile(data: &[(&str, &str)]) -> Result<Template, Invalid> {
        Template::compile(&spec(data, MergePolicy::Replace), &vars("0000"), &DEFAULTS)
    }

    #[test]
    fn renders_files_with_the_offered_filters_and_keeps_trailing_newlines() {
        let t = compile(&[
            (".env", "KEY={{ apiKey }}\nSECRET={{ apiSecret }}\n"),
            (
                "config.json",
                r#"{"key": {{ apiKey | tojson }}, "who": {{ (name ~ "/x") | upper | tojson }}}"#,
            ),
            (
                "url",
                "https://{{ apiKey | urlencode }}:{{ apiSecret | urlencode }}@host",
            ),
            (
                "basic",
                "{{ (apiKey ~ ':' ~ apiSecret) | b64encode }} {{ 'dGVhbS1h' | b64decode }}",
            ),
            (
                "loop",
                "{% for c in apiKey %}{% if c != 'K' %}{{ c | lower }}{% endif %}{% endfor %}",
            ),
        ])
        .unwrap();
        let data = t.render(&vars("a b/c"), &DEFAULTS).unwrap();
        assert_eq!(data[".env"], "KEY=SK1\nSECRET=a b/c\n");
        assert_eq!(data["config.json"], r#"{"key": "SK1", "who": "CHECKOUT/X"}"#);
        assert_eq!(data["url"], "https://SK1:a%20b%2Fc@host");
        assert_eq!(data["basic"], "U0sxOmEgYi9j team-a");
        assert_eq!(data["loop"], "s1");
        assert!(
            !data.contains_key("TWILIO_API_KEY"),
            "Replace keeps only the template's keys"
        );
    }

    #[test]
    fn merge_keeps_the_default_keys_and_the_template_wins() {
        let t = Template::compile(
            &spec(
                &[("TWILIO_API_KEY", "{{ apiKey }}-x"), ("extra", "y")],
                MergePolicy::Merge,
            ),
            &vars("0000"),
            &DEFAULTS,
        )
        .unwrap();
        let data = t.render(&vars("s3cr3t"), &DEFAULTS).unwrap();
        assert_eq!(data["TWILIO_API_KEY"], "SK1-x");
        assert_eq!(data["TWILIO_API_SECRET"], "s3cr3t");
        assert_eq!(data["extra"], "y");
    }

    #[test]
    fn refusals_name_the_key_and_the_position() {
        let cases = [
            (("a", "x\n{{ apiKey "), "line 2"),
            (
                ("b", "ok\n  {{ apiSecrt }}"),
                "secret.template.data[\"b\"] line 2",
            ),
            (("c", "{{ apiKey | shout }}"), "unknown filter"),
            (
                ("d", "one\n{% set x = apiSecret %}"),
                "line 2, column 1: the \"set\" block is not offered",
            ),
            (
                ("e", "{{ apiKey * 1000000 }}"),
                "the * and ** operators are not offered",
            ),
            (("f", "{% include 'x' %}"), "the \"include\" block is not offered"),
            (("g/h", "x"), "not a valid Secret data key"),
            (
                (
                    "i",
                    "{% for a in name %}{% for b in name %}{% for c in name %}{% for d in name %}{% for e in name %}{% for f in name %}.{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
                ),
                "too long",
            ),
        ];
        for ((key, source), said) in cases {
            let Err(Invalid(message)) = compile(&[(key, source)]) else {
                panic!("{source:?} was accepted");
            };
            assert!(message.contains(said), "{source:?}: {message}");
        }
    }

    #[test]
    fn output_is_bounded_by_what_a_secret_holds() {
        let big = "{% for a in apiSecret %}{% for b in apiSecret %}{{ apiSecret|b64encode|b64encode|b64encode|b64encode|b64encode|b64encode|b64encode|b64encode }}{% endfor %}{% endfor %}";
        let secret = "0".repeat(32);
        let refused = Template::compile(
            &spec(
                &[("a", big), ("b", big), ("c", big), ("d", big)],
                MergePolicy::Replace,
            ),
            &vars(&secret),
            &DEFAULTS,
        );
        assert!(matches!(refused, Err(Invalid(m)) if m.contains("more than a Secret can hold")));
        let chain = format!("{{{{ apiSecret{} }}}}", "|b64encode".repeat(40));
        let refused = Template::compile(
            &spec(&[("a", &chain)], MergePolicy::Replace),
            &vars(&secret),
            &DEFAULTS,
        );
        assert!(
            matches!(refused, Err(Invalid(m)) if m.contains("too large")),
            "filters cap their output"
        );
    }

    #[test]
    fn a_failure_with_real_values_never_repeats_what_minijinja_said() {
        let source = r#"{% if apiSecret != "0000" %}{{ apiSecret - 1 }}{% endif %}"#;
        let t = compile(&[("x", source)]).unwrap();
        let Err(Invalid(message)) = t.render(&vars("hunter2"), &DEFAULTS) else {
            panic!("rendered");
        };
        assert!(
            message.starts_with("secret.template.data[\"x\"] line 1"),
            "{message}"
        );
        assert!(
            message.contains("details withheld") && !message.contains("hunter2"),
            "{message}"
        );
    }

    #[test]
    fn the_digest_follows_the_template() {
        let a = compile(&[("x", "{{ apiKey }}")]).unwrap();
        let b = compile(&[("x", "{{ apiKey }} ")]).unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), compile(&[("x", "{{ apiKey }}")]).unwrap().digest());
    }
}

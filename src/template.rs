//! Secret templates: the data of a published Secret in the shape the application reads (a `.env`
//! file, a JSON config, a URL), rendered with MiniJinja, a Jinja2 dialect. Every template is checked
//! with placeholder values before anything is asked of Twilio ([`Template::compile`]), and
//! rendering is bounded whatever the template, so a hostile one costs at most a few MiB and a few
//! milliseconds. No error ever quotes a credential.

use crate::api::{MergePolicy, SecretTemplate};
use crate::conditions::{Problem, Reason};
use base64::Engine;
use minijinja::machinery::Token;
use minijinja::{Environment, Error as RenderError, ErrorKind, UndefinedBehavior, Value};
use std::collections::BTreeMap;

/// The most a Secret's data may hold, as Kubernetes limits it (1 MiB for the whole object).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// The longest text a filter takes, so chains of expanding filters stay small (tojson at most
/// sextuples its input).
const MAX_FILTER_INPUT: usize = 2 * 1024;
/// Instructions one template may run.
const FUEL: u64 = 20_000;
/// Blocks a template may use (the words that may follow `{%`).
const BLOCKS: [&str; 6] = ["if", "elif", "else", "endif", "for", "endfor"];

/// A checked template for one Secret.
///
/// Checked before anything is asked of Twilio: syntax, the blocks and operators offered, unknown
/// variables and filters, the rendered data keys and sizes, by rendering once with placeholder
/// values as long as the real ones. Errors name the template key, line and column, and carry no
/// credential. Rendering with the real values ([`Template::render`]) that still fails keeps the
/// position and the kind of failure but never MiniJinja's message, which could quote a value.
/// Bounds: no block but `if` and `for`, no `*` or `**`, filters that refuse long input, a fuel
/// limit on instructions, and one output budget for all keys together, the size of a Secret.
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

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::new(Reason::TemplateInvalid, e.0)
    }
}

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
            if spec.merge_policy == MergePolicy::Merge && defaults.iter().any(|(k, _)| k == key) {
                return Err(Invalid(format!(
                    "secret.template.data[{key:?}] is also a key the Secret holds under mergePolicy Merge; rename it, or use Replace"
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
            digest: crate::fingerprint::digest(&text),
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
        // One budget for every key, so the whole rendering never holds more than a Secret can.
        let mut budget = MAX_SECRET_BYTES;
        for (key, source) in &self.data {
            budget = budget.saturating_sub(key.len());
            let rendered = env
                .template_from_str(source)
                .and_then(|t| {
                    let mut buf = Capped {
                        out: Vec::new(),
                        budget: &mut budget,
                    };
                    t.render_captured_to(ctx.clone(), &mut buf)?;
                    Ok(buf.out)
                })
                .map_err(|e| explain(key, &e, show_detail))?;
            let text = String::from_utf8(rendered).map_err(|_| {
                Invalid(format!(
                    "secret.template.data[{key:?}] rendered text that is not UTF-8"
                ))
            })?;
            out.insert(key.clone(), text);
        }
        Ok(out)
    }

    /// The data keys the rendering writes: the template's, and under Merge the defaults'.
    pub fn keys<'k>(&'k self, defaults: impl IntoIterator<Item = &'k str>) -> Vec<&'k str> {
        let mut keys: Vec<&str> = self.data.keys().map(String::as_str).collect();
        if self.merge == MergePolicy::Merge {
            keys.extend(defaults);
        }
        keys
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

/// Refuses the blocks and operators that could make rendering unbounded, reading the template
/// with MiniJinja's own tokenizer (so quoting cannot hide a tag): only `if` and `for` blocks, and
/// neither `*` nor `**`. Syntax errors are left to MiniJinja, which reports them with a line.
fn check_syntax(key: &str, source: &str) -> Result<(), Invalid> {
    let mut after_block_start = false;
    for token in minijinja::machinery::tokenize(source, false, syntax()) {
        let Ok((token, span)) = token else {
            return Ok(());
        };
        let at = format!("line {}, column {}", span.start_line, span.start_col + 1);
        match token {
            Token::Ident(word) if after_block_start && !BLOCKS.contains(&word) => {
                return Err(Invalid(format!(
                    "secret.template.data[{key:?}] {at}: the {word:?} block is not offered; only if/elif/else and for blocks are"
                )));
            }
            Token::Mul | Token::Pow => {
                return Err(Invalid(format!(
                    "secret.template.data[{key:?}] {at}: the * and ** operators are not offered"
                )));
            }
            _ => {}
        }
        after_block_start = matches!(token, Token::BlockStart);
    }
    Ok(())
}

fn syntax() -> minijinja::syntax::SyntaxConfig {
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    syntax.build().expect("the default delimiters")
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
        ErrorKind::UnknownFilter => "an unknown filter; the filters offered are tojson, b64encode, b64decode, urlencode, lower, upper and trim".to_owned(),
        ErrorKind::OutOfFuel => "the template runs too long".to_owned(),
        ErrorKind::WriteFailure => format!(
            "with the keys before it, this renders more than a Secret can hold ({MAX_SECRET_BYTES} bytes); shorten the templates"
        ),
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
    env.set_syntax(syntax());
    env.add_filter("tojson", |v: &str| {
        bounded(v).map(|v| serde_json::to_string(v).unwrap_or_default())
    });
    env.add_filter("b64encode", |v: &str| {
        bounded(v).map(|v| base64::engine::general_purpose::STANDARD.encode(v))
    });
    env.add_filter("b64decode", |v: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(bounded(v)?)
            .map_err(|_| RenderError::new(ErrorKind::InvalidOperation, "b64decode: not base64"))?;
        String::from_utf8(bytes)
            .map_err(|_| RenderError::new(ErrorKind::InvalidOperation, "b64decode: not UTF-8 text"))
    });
    env.add_filter("urlencode", |v: &str| {
        bounded(v).map(|v| percent_encoding::utf8_percent_encode(v, URL_RESERVED).to_string())
    });
    env.add_filter("lower", |v: &str| bounded(v).map(str::to_lowercase));
    env.add_filter("upper", |v: &str| bounded(v).map(str::to_uppercase));
    env.add_filter("trim", |v: &str| v.trim().to_owned());
    env
}

/// Everything but unreserved characters (RFC 3986) is escaped, so a value fits in any part of a
/// URL, the userinfo of a DSN included.
const URL_RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A filter's input, refused when too long.
fn bounded(text: &str) -> Result<&str, RenderError> {
    if text.len() > MAX_FILTER_INPUT {
        return Err(RenderError::new(
            ErrorKind::InvalidOperation,
            "a filter's input is too large",
        ));
    }
    Ok(text)
}

/// Output that stops once all keys together exceed what a Secret can hold.
struct Capped<'b> {
    out: Vec<u8>,
    budget: &'b mut usize,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > *self.budget {
            return Err(std::io::Error::other("more than a Secret can hold"));
        }
        *self.budget -= buf.len();
        self.out.extend_from_slice(buf);
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
    fn merge_keeps_the_default_keys_beside_the_template() {
        let merge = |data: &[(&str, &str)]| {
            Template::compile(&spec(data, MergePolicy::Merge), &vars("0000"), &DEFAULTS)
        };
        let t = merge(&[("extra", "{{ apiKey }}-x")]).unwrap();
        let data = t.render(&vars("s3cr3t"), &DEFAULTS).unwrap();
        assert_eq!(data["TWILIO_API_KEY"], "SK1");
        assert_eq!(data["TWILIO_API_SECRET"], "s3cr3t");
        assert_eq!(data["extra"], "SK1-x");
        assert_eq!(
            t.keys(DEFAULTS.map(|(k, _)| k)),
            ["extra", "TWILIO_API_KEY", "TWILIO_API_SECRET"]
        );
        let clash = merge(&[("TWILIO_API_KEY", "x")]);
        assert!(matches!(clash, Err(Invalid(m)) if m.contains("also a key the Secret holds")));
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
                "line 2, column 4: the \"set\" block is not offered",
            ),
            (
                ("e", "{{ apiKey * 1000000 }}"),
                "the * and ** operators are not offered",
            ),
            (("f", "{% include 'x' %}"), "the \"include\" block is not offered"),
            (("g/h", "x"), "not a valid Secret data key"),
            (
                ("j", r#"{{ "}}" ~ apiSecret * 1000 }}"#),
                "the * and ** operators are not offered",
            ),
            (
                ("k", r#"{{ "}}{#" }}{% set x = 1 %}"#),
                "the \"set\" block is not offered",
            ),
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
        // 1024 copies of 2000 characters: 2 MB, twice what a Secret holds, within the fuel.
        let big = format!(
            "{{% for a in apiSecret %}}{{% for b in apiSecret %}}{}{{% endfor %}}{{% endfor %}}",
            "x".repeat(2000)
        );
        let secret = "0".repeat(32);
        let refused = Template::compile(
            &spec(&[("a", &big)], MergePolicy::Replace),
            &vars(&secret),
            &DEFAULTS,
        );
        assert!(
            matches!(&refused, Err(Invalid(m)) if m.contains("more than a Secret can hold")),
            "{refused:?}"
        );
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

//! Holds every request and response to Twilio's own OpenAPI description of the operation. Given
//! the directory of Twilio's OpenAPI files (as its npm package ships them),
//! [`Contract::check_request`] reports each way a request departs from the spec (path, method,
//! parameter names, required parameters, enum values, content type) and
//! [`Contract::check_response`] each way a 2xx response departs from its schema. Reports are plain
//! strings the emulator keeps for tests to assert on; error responses, which the spec does not
//! describe, are not checked.

use axum::http::Method;
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const SPEC_FILES: [&str; 4] = [
    "twilio_api_v2010.json",
    "twilio_iam_v1.json",
    "twilio_accounts_v1.json",
    "twilio_voice_v1.json",
];

struct Param {
    name: String,
    required: bool,
    allowed: Option<Vec<String>>,
}

struct Operation {
    id: String,
    method: Method,
    template: String,
    pattern: Regex,
    query: Vec<Param>,
    /// Form parameters, when the operation takes a form body.
    form: Option<Vec<Param>>,
    /// Declared success statuses and their JSON schemas (with the file's components).
    responses: HashMap<u16, Option<Value>>,
}

pub struct Contract {
    operations: Vec<Operation>,
    validators: Mutex<HashMap<(String, u16), Arc<jsonschema::Validator>>>,
}

impl Contract {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut operations = Vec::new();
        for file in SPEC_FILES {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            let doc: Value =
                serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
            operations.extend(operations_of(&doc)?);
        }
        // Literal segments beat templates: `/Usage/Records/ThisMonth.json` before `{Sid}.json`.
        operations.sort_by_key(|op| op.template.matches('{').count());
        Ok(Self {
            operations,
            validators: Mutex::new(HashMap::new()),
        })
    }

    fn find(&self, method: &Method, path: &str) -> Result<&Operation, String> {
        let mut path_known = false;
        for op in self.operations.iter().filter(|op| op.pattern.is_match(path)) {
            path_known = true;
            if op.method == *method {
                return Ok(op);
            }
        }
        Err(if path_known {
            format!("{method} {path}: the spec declares no {method} on this path")
        } else {
            format!("{method} {path}: no such path in the spec")
        })
    }

    pub fn check_request(
        &self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        content_type: Option<&str>,
        form: &[(String, String)],
    ) -> Vec<String> {
        let op = match self.find(method, path) {
            Ok(op) => op,
            Err(problem) => return vec![problem],
        };
        let at = format!("{} ({method} {})", op.id, op.template);
        let mut problems = check_params(&at, "query", &op.query, query);
        match (&op.form, content_type) {
            (Some(params), Some(ct)) if ct.starts_with("application/x-www-form-urlencoded") => {
                problems.extend(check_params(&at, "form", params, form));
            }
            (Some(params), None) if params.iter().all(|p| !p.required) && form.is_empty() => {}
            (Some(_), other) => problems.push(format!(
                "{at}: content type {other:?}, the spec wants application/x-www-form-urlencoded"
            )),
            (None, Some(ct)) if !form.is_empty() => {
                problems.push(format!("{at}: sent a {ct} body, the spec declares none"))
            }
            (None, _) => {}
        }
        problems
    }

    pub fn check_response(&self, method: &Method, path: &str, status: u16, body: &[u8]) -> Vec<String> {
        if !(200..300).contains(&status) {
            return Vec::new();
        }
        let Ok(op) = self.find(method, path) else {
            return Vec::new();
        };
        let at = format!("{} ({method} {}) -> {status}", op.id, op.template);
        let Some(schema) = op.responses.get(&status) else {
            return vec![format!("{at}: status not declared in the spec")];
        };
        let Some(schema) = schema else {
            return if body.is_empty() {
                Vec::new()
            } else {
                vec![format!("{at}: the spec declares no body")]
            };
        };
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return vec![format!("{at}: body is not JSON: {e}")],
        };
        let validator = {
            let mut cache = self.validators.lock().expect("validator cache");
            match cache.get(&(op.id.clone(), status)) {
                Some(v) => v.clone(),
                None => match jsonschema::validator_for(schema) {
                    Ok(v) => cache
                        .entry((op.id.clone(), status))
                        .or_insert(Arc::new(v))
                        .clone(),
                    Err(e) => return vec![format!("{at}: the spec's schema does not compile: {e}")],
                },
            }
        };
        validator
            .iter_errors(&value)
            .take(5)
            .map(|e| format!("{at}: {} at {}", e, e.instance_path()))
            .collect()
    }
}

fn check_params(at: &str, place: &str, declared: &[Param], sent: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in sent {
        match declared.iter().find(|p| &p.name == name) {
            None => problems.push(format!("{at}: {place} parameter {name} is not in the spec")),
            Some(Param {
                allowed: Some(values),
                ..
            }) if !values.contains(value) => problems.push(format!(
                "{at}: {place} parameter {name}={value:?} is not one of {values:?}"
            )),
            Some(_) => {}
        }
    }
    for param in declared.iter().filter(|p| p.required) {
        if !sent.iter().any(|(name, _)| name == &param.name) {
            problems.push(format!(
                "{at}: required {place} parameter {} is missing",
                param.name
            ));
        }
    }
    problems
}

fn operations_of(doc: &Value) -> Result<Vec<Operation>, String> {
    let components = doc.pointer("/components").cloned().unwrap_or(Value::Null);
    let converted_components = to_json_schema(&components);
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().into_iter().flatten() {
        let pattern = template_regex(template).map_err(|e| format!("path {template}: {e}"))?;
        for (verb, op) in item.as_object().into_iter().flatten() {
            let method = match verb.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "delete" => Method::DELETE,
                "put" => Method::PUT,
                _ => continue,
            };
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| Param {
                    name: p["name"].as_str().unwrap_or_default().to_owned(),
                    required: p["required"].as_bool().unwrap_or(false),
                    allowed: enum_values(doc, &p["schema"]),
                })
                .collect();
            let form = op
                .pointer("/requestBody/content/application~1x-www-form-urlencoded/schema")
                .map(|schema| {
                    let schema = resolve(doc, schema);
                    let required: Vec<&str> = schema["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    schema["properties"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(name, prop)| Param {
                            name: name.clone(),
                            required: required.contains(&name.as_str()),
                            allowed: enum_values(doc, prop),
                        })
                        .collect()
                });
            let mut responses = HashMap::new();
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                let Ok(status) = status.parse::<u16>() else {
                    continue;
                };
                let schema = response.pointer("/content/application~1json/schema").map(|s| {
                    let mut schema = to_json_schema(s);
                    if let Value::Object(map) = &mut schema {
                        map.insert("components".into(), converted_components.clone());
                    } else {
                        schema = serde_json::json!({"allOf": [schema], "components": converted_components});
                    }
                    schema
                });
                responses.insert(status, schema);
            }
            out.push(Operation {
                id: op["operationId"].as_str().unwrap_or("?").to_owned(),
                method,
                template: template.clone(),
                pattern: pattern.clone(),
                query,
                form,
                responses,
            });
        }
    }
    Ok(out)
}

/// `/2010-04-01/Accounts/{Sid}.json` as an anchored regex with `[^/]+` for each parameter.
fn template_regex(template: &str) -> Result<Regex, regex::Error> {
    let mut pattern = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        pattern.push_str("[^/]+");
        rest = rest[open..]
            .find('}')
            .map_or("", |close| &rest[open + close + 1..]);
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    Regex::new(&pattern)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        Some(pointer) => doc.pointer(pointer).unwrap_or(schema),
        None => schema,
    }
}

fn enum_values(doc: &Value, schema: &Value) -> Option<Vec<String>> {
    let schema = resolve(doc, schema);
    let from = |s: &Value| {
        s["enum"].as_array().map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
    };
    from(schema).or_else(|| {
        schema
            .get("items")
            .map(|items| resolve(doc, items))
            .and_then(from)
    })
}

/// OpenAPI 3.0 schema objects to JSON Schema 2020-12: `nullable: true` becomes "or null".
fn to_json_schema(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let out: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "nullable")
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if map.get("nullable") == Some(&Value::Bool(true)) {
                return serde_json::json!({"anyOf": [Value::Object(out), {"type": "null"}]});
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

//! The Twilio-facing HTTP surface: one handler that routes, checks the contract, injects faults,
//! authenticates, limits concurrency, runs the operation and renders Twilio's JSON.
//!
//! Contract: bodies and envelopes follow Twilio's published shapes (snake_case fields, v2010
//! flat pagination with relative URIs, IAM `meta` pagination with absolute URLs, error bodies
//! `{code, message, more_info, status}`), every response carries `Twilio-Request-Id`, and key
//! secrets appear only in create responses.

mod accounts;
mod keys;
mod usage;
mod voice;

use crate::faults::Fault;
use crate::routes::{Domain, Route, route};
use crate::world::{ApiError, Principal, World};
use crate::{App, ids};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .nest("/_emulator", crate::admin::router())
        .fallback(handle)
        .with_state(app)
}

/// A parsed request, as the operations see it.
struct Request<'a> {
    path: &'a str,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    /// `scheme://host` of this request, for IAM's absolute page URLs.
    origin: String,
}

impl Request<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn form(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn form_owned(&self, name: &str) -> Option<String> {
        self.form(name).map(str::to_owned)
    }

    fn required(&self, name: &str) -> Result<String, ApiError> {
        self.form_owned(name).ok_or_else(|| ApiError::missing(name))
    }
}

async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let form: Vec<(String, String)> = if content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
    {
        serde_urlencoded::from_bytes(&body).unwrap_or_default()
    } else {
        Vec::new()
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let request = Request {
        path: &path,
        query,
        form,
        origin: format!("http://{host}"),
    };

    let route = match route(&method, &path) {
        Ok(route) => route,
        Err(error) => {
            app.count("unrouted", error.status);
            return error_response(&error, None);
        }
    };
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    app.arrived(route.operation(), &path, user_agent.unwrap_or_default());
    if let Some(contract) = &app.contract {
        app.violations(contract.check_request(
            &method,
            &path,
            &request.query,
            content_type.as_deref(),
            &request.form,
        ));
    }
    let (status, body) = serve(&app, &route, &headers, &request).await;
    if status == 0 {
        app.count(route.operation(), 0);
        return connection_reset();
    }
    let bytes = match &body {
        Ok(Some(value)) => serde_json::to_vec(value).expect("JSON values serialize"),
        _ => Vec::new(),
    };
    if let Some(contract) = &app.contract {
        app.violations(contract.check_response(&method, &path, status, &bytes));
    }
    app.count(route.operation(), status);
    match body {
        Ok(_) => {
            let mut response = (StatusCode::from_u16(status).expect("valid status"), bytes).into_response();
            if status != 204 {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
            with_request_id(response)
        }
        Err((error, retry_after)) => error_response(&error, retry_after),
    }
}

type Outcome = Result<Option<Value>, (ApiError, Option<u64>)>;

/// Runs one request through faults, auth, the concurrency limit and the operation. Status 0
/// means "reset the connection".
async fn serve(app: &App, route: &Route, headers: &HeaderMap, request: &Request<'_>) -> (u16, Outcome) {
    let principal = match credentials(headers)
        .and_then(|(user, pass)| app.world.lock().expect("world").authenticate(&user, &pass))
    {
        Ok(p) => p,
        Err(e) => return (e.status, Err((e, None))),
    };
    if let Some(status) = app
        .world
        .lock()
        .expect("world")
        .take_failure(route.operation(), &principal.account_sid)
    {
        return (status, Err((server_error(status), None)));
    }
    let Some(_slot) = app.enter(&principal.account_sid) else {
        let retry_after = app.knobs.read().expect("knobs").retry_after_secs;
        return (429, Err((too_many_requests(), retry_after)));
    };
    let (delay, fault, retry_after) = {
        let knobs = app.knobs.read().expect("knobs");
        (knobs.delay(), knobs.roll(), knobs.retry_after_secs)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::Reset) => {}
        Some(Fault::TooManyRequests) => return (429, Err((too_many_requests(), retry_after))),
        Some(Fault::ServerError(status)) => return (status, Err((server_error(status), None))),
        None => {}
    }
    let mut world = app.world.lock().expect("world");
    let outcome = execute(&mut world, &principal, route, request);
    // Twilio evaluates triggers about once a minute; the emulator after every change.
    app.deliver(world.fire_triggers());
    drop(world);
    if fault == Some(Fault::Reset) {
        // The dangerous kind: Twilio acted, then the connection dropped before the answer.
        return (0, Ok(None));
    }
    match outcome {
        Ok((status, body)) => (status, Ok(body)),
        Err(e) => (e.status, Err((e, None))),
    }
}

/// A 500 or 503 as Twilio answers it (20500, 20503).
fn server_error(status: u16) -> ApiError {
    ApiError::new(
        status,
        20500 + u32::from(status == 503) * 3,
        "Internal Server Error",
    )
}

fn too_many_requests() -> ApiError {
    ApiError::new(429, 20429, "Too Many Requests")
}

fn credentials(headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::authenticate)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(ApiError::authenticate)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::authenticate())?;
    let text = String::from_utf8(decoded).map_err(|_| ApiError::authenticate())?;
    let (user, pass) = text.split_once(':').ok_or_else(ApiError::authenticate)?;
    Ok((user.to_owned(), pass.to_owned()))
}

/// Runs the operation `route` names as `principal`, in the domain that owns it.
fn execute(world: &mut World, principal: &Principal, route: &Route, req: &Request<'_>) -> Reply {
    let call = Call {
        principal,
        route,
        req,
    };
    match route.domain() {
        Domain::Accounts => accounts::execute(world, call),
        Domain::Keys => keys::execute(world, call),
        Domain::Usage => usage::execute(world, call),
        Domain::Voice => voice::execute(world, call),
    }
}

/// One operation to run: who asks, which route, and the request.
#[derive(Clone, Copy)]
struct Call<'a> {
    principal: &'a Principal,
    route: &'a Route,
    req: &'a Request<'a>,
}

/// What an operation answers: a status and its JSON body, or the error Twilio would give.
type Reply = Result<(u16, Option<Value>), ApiError>;

/// 200 with `body`.
fn ok(body: Value) -> Reply {
    Ok((200, Some(body)))
}

/// 201 with `body`.
fn created(body: Value) -> Reply {
    Ok((201, Some(body)))
}

/// One page of `items`: `(page number, page size, items on it, token of the next page)`.
struct Page<'a, T> {
    number: usize,
    size: usize,
    items: &'a [T],
    next_token: Option<String>,
    previous_token: Option<String>,
}

fn paginate<'a, T>(
    req: &Request<'_>,
    items: &'a [T],
    sid: impl Fn(&T) -> &str,
) -> Result<Page<'a, T>, ApiError> {
    let size = match req.query("PageSize") {
        None => 50,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::new(400, 20001, "PageSize must be between 1 and 1000"))?,
    };
    let number: usize = req.query("Page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let position = |anchor: &str| {
        items
            .iter()
            .position(|item| sid(item) == anchor)
            .ok_or_else(|| ApiError::new(400, 21481, "Invalid PageToken"))
    };
    let start = match req.query("PageToken") {
        None => number * size,
        Some(token) => match (token.get(..2), token.get(2..)) {
            (Some("PA"), Some(anchor)) => position(anchor)? + 1,
            (Some("PB"), Some(anchor)) => position(anchor)?.saturating_sub(size),
            _ => return Err(ApiError::new(400, 21481, "Invalid PageToken")),
        },
    }
    .min(items.len());
    let end = (start + size).min(items.len());
    let page = &items[start..end];
    Ok(Page {
        number,
        size,
        items: page,
        next_token: (end < items.len()).then(|| format!("PA{}", sid(&page[page.len() - 1]))),
        previous_token: (start > 0)
            .then(|| page.first().map(|first| format!("PB{}", sid(first))))
            .flatten(),
    })
}

/// The query string of a page: the caller's filters, then paging.
fn page_query(req: &Request<'_>, size: usize, number: usize, token: Option<&str>) -> String {
    let mut pairs: Vec<(&str, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PageSize" | "Page" | "PageToken"))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    pairs.push(("PageSize", size.to_string()));
    pairs.push(("Page", number.to_string()));
    if let Some(token) = token {
        pairs.push(("PageToken", token.to_owned()));
    }
    serde_urlencoded::to_string(pairs).expect("strings encode")
}

/// One page of a v1 API (IAM, Voice): the items under `key`, and absolute page URLs in `meta`.
fn v1_page<T>(
    req: &Request<'_>,
    key: &str,
    items: &[T],
    sid: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let page = paginate(req, items, sid)?;
    let url = |number: usize, token: Option<&str>| {
        format!(
            "{}{}?{}",
            req.origin,
            req.path,
            page_query(req, page.size, number, token)
        )
    };
    Ok(json!({
        key: page.items.iter().map(render).collect::<Vec<_>>(),
        "meta": {
            "page": page.number,
            "page_size": page.size,
            "first_page_url": url(0, None),
            "previous_page_url": page.previous_token.as_deref().map(|t| url(page.number.saturating_sub(1), Some(t))),
            "url": url(page.number, req.query("PageToken")),
            "next_page_url": page.next_token.as_deref().map(|t| url(page.number + 1, Some(t))),
            "key": key,
        }
    }))
}

fn v2010_page<T>(
    req: &Request<'_>,
    key: &str,
    items: &[T],
    sid: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let page = paginate(req, items, sid)?;
    let uri = |number: usize, token: Option<&str>| {
        format!("{}?{}", req.path, page_query(req, page.size, number, token))
    };
    let start = page.number * page.size;
    Ok(json!({
        key: page.items.iter().map(render).collect::<Vec<_>>(),
        "uri": uri(page.number, req.query("PageToken")),
        "first_page_uri": uri(0, None),
        "next_page_uri": page.next_token.as_deref().map(|t| uri(page.number + 1, Some(t))),
        "previous_page_uri": page.previous_token.as_deref().map(|t| uri(page.number.saturating_sub(1), Some(t))),
        "page": page.number,
        "page_size": page.size,
        "start": start,
        "end": start + page.items.len().saturating_sub(1),
    }))
}

fn with_request_id(mut response: Response) -> Response {
    let id = HeaderValue::from_str(&ids::request_id()).expect("SIDs are header-safe");
    response.headers_mut().insert("twilio-request-id", id);
    response
}

pub fn error_response(error: &ApiError, retry_after: Option<u64>) -> Response {
    let body = json!({
        "code": error.code,
        "message": error.message,
        "more_info": format!("https://www.twilio.com/docs/errors/{}", error.code),
        "status": error.status,
    });
    let mut response = (
        StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    if error.status == 401 {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
    }
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    with_request_id(response)
}

/// Headers, then a body that fails: the client sees the connection drop mid-response.
fn connection_reset() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, "64")
        .body(Body::from_stream(failing))
        .expect("static response")
}

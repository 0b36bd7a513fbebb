//! Requests that do not go through a holder: the CLI-only API-key endpoints of PROTOCOL.md
//! 2.9 (checked with the key being logged in, before any credential is stored) and signed
//! storage URLs (9.8 external weights, 9.10 trace export), which take no credential at all.
//!
//! Both use a plain HTTP client over the library's TLS configuration (bundled and system
//! roots, `crate::core::tls`): no SDK header, no retry layer (the caller decides), no
//! credential other than the one passed explicitly to the API-key endpoints. A signed URL
//! gets no credential and no SDK header, ever.

use crate::core::config::{parse_base_url, DEFAULT_BASE_URL};
use crate::core::error::{Error, ErrorKind, Result, TransportCause};
use crate::core::sanitize::{bounded, redact_url, server_text};
use std::time::Duration;

/// Most bytes read of an API-key endpoint's answer.
const MAX_API_KEY_ANSWER: usize = 64 * 1024;

/// Most redirects a signed URL may take.
const MAX_SIGNED_REDIRECTS: usize = 10;

/// The base URL a session-less tool talks to: `explicit`, else `TINKER_BASE_URL`, else the
/// default (1.1); checked like a client's (`https://`, or `http://` to a loopback host), and
/// without a trailing `/`.
pub fn resolve_base_url(explicit: Option<&str>) -> Result<String> {
    let raw = explicit
        .map(str::to_string)
        .filter(|u| !u.trim().is_empty())
        .or_else(|| {
            std::env::var("TINKER_BASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
    let url = parse_base_url(raw.trim().trim_end_matches('/'), false)?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Organisation of an API key (2.9 `details.org_details`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyOrgDetails {
    /// Organisation name.
    pub name: String,
}

/// User of an API key (2.9 `details.user_details`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyUserDetails {
    /// The user's e-mail address.
    pub email: String,
}

/// Who an API key belongs to (2.9 `details`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyDetails {
    /// The organisation.
    pub org_details: ApiKeyOrgDetails,
    /// The user.
    pub user_details: ApiKeyUserDetails,
}

/// `GET /api/v1/auth/apikey/me`: the public description of the calling key (never the key).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelfApiKey {
    /// The key's numeric id.
    pub key_id: i64,
    /// Its name.
    pub name: String,
    /// Its note.
    #[serde(default)]
    pub note: String,
    /// Organisation and user.
    pub details: ApiKeyDetails,
}

fn plain_client(connect_timeout: Duration, redirects: usize) -> Result<reqwest::Client> {
    let tls = crate::core::tls::client_config()?;
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= redirects {
            return attempt.error("too many redirects");
        }
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            return attempt.error("refusing a redirect from https to plain http");
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(policy)
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| Error::fatal(format!("cannot build the HTTP client: {e}")))
}

/// A transport failure of a plain request: `Transient` with its cause (the caller's
/// exit-code or retry decision), the URL shown without its query (a signature).
fn transport_error(what: &str, e: reqwest::Error) -> Error {
    let mut source = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = cur {
        source = s.to_string();
        cur = s.source();
    }
    let (cause, how) = if e.is_timeout() {
        (TransportCause::Timeout, "timed out")
    } else if e.is_connect() {
        (TransportCause::Connect, "could not connect")
    } else if e.is_redirect() {
        (TransportCause::Io, "bad redirect")
    } else {
        (TransportCause::Io, "connection failed")
    };
    let mut err = Error::new(
        ErrorKind::Transient,
        if source.is_empty() {
            format!("{what}: {how}")
        } else {
            format!("{what}: {how}: {}", server_text(&source))
        },
    );
    err.transport = Some(cause);
    err
}

/// Reads at most `max` bytes of a body.
async fn read_bounded(mut resp: reqwest::Response, max: usize, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(what, e))? {
        if out.len() + chunk.len() > max {
            return Err(Error::fatal(format!(
                "{what}: the answer is longer than {max} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn api_key_request(
    method: reqwest::Method,
    base_url: &str,
    api_key: &str,
    timeout: Duration,
) -> Result<Vec<u8>> {
    const PATH: &str = "/api/v1/auth/apikey/me";
    let mut key = reqwest::header::HeaderValue::from_str(api_key.trim()).map_err(|_| {
        Error::new(
            ErrorKind::Auth,
            "the API key contains characters that cannot be sent in a header",
        )
    })?;
    key.set_sensitive(true);
    let client = plain_client(timeout, 0)?;
    let resp = client
        .request(method, format!("{base_url}{PATH}"))
        .header("x-api-key", key)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            transport_error(
                &format!("Could not reach the Tinker API at {}", redact_url(base_url)),
                e,
            )
        })?;
    let status = resp.status().as_u16();
    let body = read_bounded(resp, MAX_API_KEY_ANSWER, PATH).await?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        let mut err = Error::from_status(status, &text);
        err.message = format!("{} (from {PATH})", err.message);
        return Err(err);
    }
    Ok(body)
}

/// `GET /api/v1/auth/apikey/me` with `X-API-Key: api_key` (2.9): verifies the key and
/// returns its description. A rejected key is an `Auth` error (401/403).
pub async fn get_self_api_key(
    base_url: &str,
    api_key: &str,
    timeout: Duration,
) -> Result<SelfApiKey> {
    let body = api_key_request(reqwest::Method::GET, base_url, api_key, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| {
        Error::fatal(format!(
            "The Tinker API returned an unexpected response to auth/apikey/me: {}",
            bounded(&e.to_string(), 200)
        ))
    })
}

/// `DELETE /api/v1/auth/apikey/me` with `X-API-Key: api_key` (2.9): revokes that key (and
/// only it) on the server.
pub async fn delete_self_api_key(base_url: &str, api_key: &str, timeout: Duration) -> Result<()> {
    api_key_request(reqwest::Method::DELETE, base_url, api_key, timeout)
        .await
        .map(drop)
}

/// An open download of a signed URL (see [`open_signed_url`]).
pub struct SignedResponse {
    resp: reqwest::Response,
    /// HTTP status: 200 (whole file) or 206 (the requested tail).
    pub status: u16,
    /// Bytes this answer will carry, when announced.
    pub content_length: Option<u64>,
    /// For a 206: the first byte carried and the file's total size (`Content-Range`).
    pub range: Option<(u64, Option<u64>)>,
    /// The file's entity tag, when the server sent one (strong validators only).
    pub etag: Option<String>,
    shown: String,
}

impl std::fmt::Debug for SignedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedResponse")
            .field("url", &self.shown)
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl SignedResponse {
    /// The file's total size: the `Content-Range` total of a 206, the length of a 200.
    pub fn total_size(&self) -> Option<u64> {
        match self.range {
            Some((_, total)) => total,
            None => self.content_length,
        }
    }

    /// The next piece of the body, `None` at its end. A connection that breaks mid-body is
    /// a `Transient` error with a transport cause (the bytes received so far are valid).
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        self.resp
            .chunk()
            .await
            .map_err(|e| transport_error(&format!("download of {}", self.shown), e))
    }
}

/// `Content-Range: bytes <first>-<last>/<total|*>` → (first, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok().filter(|t| *t > last)?),
    };
    Some((first, total))
}

/// Opens a signed storage URL (9.8, 9.10) for reading from byte `from`: no credential and
/// no SDK header are sent. With `from > 0` the request carries `Range: bytes=<from>-` and,
/// when `if_range` is given (the entity tag of the bytes already held), `If-Range`, so a
/// changed file comes back whole (200) instead of as a mismatched tail. `http://` is
/// accepted only to a loopback host unless `allow_insecure_http`.
///
/// Errors: a status other than 200/206 is an error classified by status (403 for an
/// expired or bad signature, 416 for a range past the end); a transport failure is
/// `Transient` with its cause.
pub async fn open_signed_url(
    url: &str,
    from: u64,
    if_range: Option<&str>,
    connect_timeout: Duration,
    allow_insecure_http: bool,
) -> Result<SignedResponse> {
    let shown = redact_url(url);
    let parsed = url::Url::parse(url)
        .map_err(|_| Error::user(format!("not a valid download URL: {shown}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if !loopback && !allow_insecure_http {
                return Err(Error::user(format!(
                    "refusing a plain-http download URL to a non-loopback host: {shown}"
                )));
            }
        }
        other => {
            return Err(Error::user(format!(
                "unsupported download URL scheme {:?}: {shown}",
                bounded(other, 16)
            )))
        }
    }
    let client = plain_client(connect_timeout, MAX_SIGNED_REDIRECTS)?;
    let mut req = client.get(parsed);
    if from > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        if let Some(tag) = if_range {
            req = req.header(reqwest::header::IF_RANGE, tag);
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| transport_error(&format!("download of {shown}"), e))?;
    let status = resp.status().as_u16();
    if status != 200 && status != 206 {
        let body = read_bounded(resp, MAX_API_KEY_ANSWER, "download")
            .await
            .unwrap_or_default();
        let mut err = Error::from_status(status, &String::from_utf8_lossy(&body));
        err.message = format!("{} (download of {shown})", err.message);
        return Err(err);
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let range = if status == 206 {
        let r = header(reqwest::header::CONTENT_RANGE)
            .as_deref()
            .and_then(parse_content_range)
            .ok_or_else(|| {
                let mut e = Error::fatal(format!(
                    "download of {shown}: a 206 answer without a valid Content-Range"
                ));
                e.http_status = Some(206);
                e
            })?;
        if r.0 != from {
            let mut e = Error::fatal(format!(
                "download of {shown}: asked for bytes from {from}, got a range from {}",
                r.0
            ));
            e.http_status = Some(206);
            return Err(e);
        }
        Some(r)
    } else {
        None
    };
    let etag = header(reqwest::header::ETAG).filter(|t| {
        !t.starts_with("W/") && t.len() <= 1024 && t.bytes().all(|b| b.is_ascii_graphic())
    });
    Ok(SignedResponse {
        content_length: resp.content_length(),
        status,
        range,
        etag,
        shown,
        resp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 10-19/20"), Some((10, Some(20))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 10-19/19"), None);
        assert_eq!(parse_content_range("bytes 19-10/30"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}

//! A scripted hostile HTTP server for the hardening tests (issue 11).
//!
//! It speaks raw HTTP/1.1 by hand over a tokio `TcpListener` on 127.0.0.1:0, so it can
//! misbehave at the byte level. Every request is forwarded to an `upstream` (a normal
//! tinkex-emulator), so the preamble of an operation (client/config, create_session,
//! create_model, get_info, ...) looks exactly like a real server's, except the requests that
//! match the [`Target`]: those get the hostile answer of the [`Mode`].
//!
//! A second listener, the "other origin", records every byte it receives (cross-origin
//! redirects point there) and answers 404; tests assert the API key never reaches it.
//!
//! Only tokio and std are used so the Rust tests can embed this file with `#[path]` and the
//! `hostile-server` binary (src/main.rs) can serve the C, Python and Elixir suites.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of the `detail` of [`Mode::BigDetail`]: 50 MB.
pub const BIG_DETAIL_BYTES: usize = 50 * 1000 * 1000;
/// Decompressed size of the gzip and zstd bombs: 256 MiB (4× the assumed default body
/// limit) from ~1.7 MB (gzip) or ~8 KB (zstd).
pub const BOMB_BYTES: u64 = 256 << 20;
/// What a huge or endless body sends at most before it just holds the connection (so a
/// client without a limit shows its growth without taking the machine down).
pub const DEFAULT_CAP_BYTES: u64 = 1 << 30;
/// The query string of a cross-origin redirect: a signed-URL token that must not be echoed.
pub const SIGNED_QUERY_CANARY: &str = "X-Amz-Signature=sig-CANARY-QUERY-9876";
/// Headers of [`Mode::HeaderBomb`].
pub const HEADER_BOMB_COUNT: usize = 10_000;
/// Size of the one header of [`Mode::HugeHeader`].
pub const HUGE_HEADER_BYTES: usize = 4 << 20;
/// Nesting depth of [`Mode::DeepJson`].
pub const DEEP_JSON_DEPTH: usize = 1_000_000;

/// What the hostile answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything unchanged (control runs).
    Pass,
    /// 200 `application/json` with a cut-off JSON document.
    MalformedJson,
    /// 200 `text/html` (a captive portal).
    WrongContentType,
    /// The upstream's 200 answer with its body cut in half (protobuf results: truncated
    /// protobuf).
    Truncated,
    /// 200 protobuf `SampleResponse` whose top-k prompt logprobs claim `k = 0,
    /// length = 2^32-1` (10 bytes).
    LyingTopk,
    /// 200 protobuf `ForwardBackwardOutput` with one record of `num_datums = 2^40`.
    LyingNumDatums,
    /// 200 protobuf `ForwardBackwardOutput` whose batched tensor offsets point past the end.
    LyingOffsets,
    /// 200 with `Content-Length: 10 GiB`, then spaces as fast as the client reads.
    HugeAnnounced,
    /// 200 chunked (no length announced), spaces without end.
    EndlessChunked,
    /// An error whose `detail` (or a future's `error`) is 50 MB.
    BigDetail,
    /// 200 with `Content-Length: 4096`, one byte per drip interval.
    SlowDrip,
    /// 200 with 10 000 headers.
    HeaderBomb,
    /// 200 with one 4 MiB header.
    HugeHeader,
    /// A redirect with this status to the same origin (`/__same<path>`, then forwarded).
    RedirectSame(u16),
    /// A redirect with this status to the other origin, with a signed-URL query.
    RedirectOther(u16),
    /// 302 to itself, forever.
    RedirectLoop,
    /// 200 `[[[[…]]]]`, 1 000 000 deep.
    DeepJson,
    /// 200 JSON with invalid UTF-8 inside its strings.
    InvalidUtf8Json,
    /// The upstream's answer with invalid UTF-8 header values added.
    InvalidUtf8Header,
    /// 200 `Content-Encoding: gzip` of [`BOMB_BYTES`] of spaces.
    GzipBomb,
    /// 200 `Content-Encoding: zstd` of [`BOMB_BYTES`] of spaces.
    ZstdBomb,
}

impl Mode {
    /// Every hostile mode (not [`Mode::Pass`]).
    pub fn all() -> Vec<Mode> {
        let mut v = vec![
            Mode::MalformedJson,
            Mode::WrongContentType,
            Mode::Truncated,
            Mode::LyingTopk,
            Mode::LyingNumDatums,
            Mode::LyingOffsets,
            Mode::HugeAnnounced,
            Mode::EndlessChunked,
            Mode::BigDetail,
            Mode::SlowDrip,
            Mode::HeaderBomb,
            Mode::HugeHeader,
        ];
        for code in [301, 302, 303, 307, 308] {
            v.push(Mode::RedirectSame(code));
            v.push(Mode::RedirectOther(code));
        }
        v.extend([
            Mode::RedirectLoop,
            Mode::DeepJson,
            Mode::InvalidUtf8Json,
            Mode::InvalidUtf8Header,
            Mode::GzipBomb,
            Mode::ZstdBomb,
        ]);
        v
    }

    /// The command-line name, e.g. `redirect_other_307`.
    pub fn name(self) -> String {
        match self {
            Mode::Pass => "pass".into(),
            Mode::MalformedJson => "malformed_json".into(),
            Mode::WrongContentType => "wrong_content_type".into(),
            Mode::Truncated => "truncated".into(),
            Mode::LyingTopk => "lying_topk".into(),
            Mode::LyingNumDatums => "lying_num_datums".into(),
            Mode::LyingOffsets => "lying_offsets".into(),
            Mode::HugeAnnounced => "huge_announced".into(),
            Mode::EndlessChunked => "endless_chunked".into(),
            Mode::BigDetail => "big_detail".into(),
            Mode::SlowDrip => "slow_drip".into(),
            Mode::HeaderBomb => "header_bomb".into(),
            Mode::HugeHeader => "huge_header".into(),
            Mode::RedirectSame(c) => format!("redirect_same_{c}"),
            Mode::RedirectOther(c) => format!("redirect_other_{c}"),
            Mode::RedirectLoop => "redirect_loop".into(),
            Mode::DeepJson => "deep_json".into(),
            Mode::InvalidUtf8Json => "invalid_utf8_json".into(),
            Mode::InvalidUtf8Header => "invalid_utf8_header".into(),
            Mode::GzipBomb => "gzip_bomb".into(),
            Mode::ZstdBomb => "zstd_bomb".into(),
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Mode> {
        if s == "pass" {
            return Some(Mode::Pass);
        }
        Mode::all().into_iter().find(|m| m.name() == s)
    }

    /// Whether a correct client may complete the operation successfully in this mode
    /// (the hostile part is harmless or a same-origin redirect it may follow).
    pub fn success_allowed(self) -> bool {
        matches!(
            self,
            Mode::Pass | Mode::RedirectSame(_) | Mode::InvalidUtf8Header
        )
    }
}

/// Which requests get the hostile answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Requests whose path (without the query) starts with this.
    Path(String),
    /// The `retrieve_future` polls of the futures created by a submit to this path.
    Result(String),
}

impl Target {
    /// `result:/api/v1/asample` or a path such as `/api/v1/create_session`.
    pub fn parse(s: &str) -> Target {
        match s.strip_prefix("result:") {
            Some(p) => Target::Result(p.to_string()),
            None => Target::Path(s.to_string()),
        }
    }
}

/// Settings of one server.
#[derive(Clone, Debug)]
pub struct Options {
    /// The hostile answer.
    pub mode: Mode,
    /// Where it lands.
    pub target: Target,
    /// `host:port` of the normal server everything else is forwarded to.
    pub upstream: String,
    /// Interval of [`Mode::SlowDrip`].
    pub drip: Duration,
    /// Most bytes a huge or endless body sends before holding the connection.
    pub cap_bytes: u64,
    /// Print `HIT <path>` on stdout for every hostile answer (the binary does, so the
    /// out-of-process suites can check that the hostile answer landed).
    pub print_hits: bool,
}

impl Options {
    /// Defaults: 100 ms drip, 1 GiB cap.
    pub fn new(mode: Mode, target: Target, upstream: &str) -> Options {
        Options {
            mode,
            target,
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            drip: Duration::from_millis(100),
            cap_bytes: DEFAULT_CAP_BYTES,
            print_hits: false,
        }
    }
}

struct State {
    opts: Options,
    url: String,
    other_url: String,
    pending_ids: Mutex<Vec<String>>,
    hits: AtomicU64,
    other_received: Arc<Mutex<Vec<u8>>>,
    record_file: Option<std::path::PathBuf>,
}

/// A started server.
pub struct Running {
    /// Base URL of the hostile server.
    pub url: String,
    /// Base URL of the recording other origin.
    pub other_url: String,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Every byte the other origin received so far.
    pub fn other_received(&self) -> Vec<u8> {
        self.state.other_received.lock().unwrap().clone()
    }

    /// How many hostile answers were served.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the hostile server and the other origin on 127.0.0.1:0. `record_other`: a file
/// that every byte the other origin receives is appended to (for the out-of-process
/// suites).
pub async fn start(
    opts: Options,
    record_other: Option<std::path::PathBuf>,
) -> std::io::Result<Running> {
    let main = TcpListener::bind("127.0.0.1:0").await?;
    let other = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", main.local_addr()?);
    let other_url = format!("http://{}", other.local_addr()?);
    if let Some(f) = &record_other {
        std::fs::write(f, b"")?;
    }
    let state = Arc::new(State {
        opts,
        url: url.clone(),
        other_url: other_url.clone(),
        pending_ids: Mutex::new(Vec::new()),
        hits: AtomicU64::new(0),
        other_received: Arc::new(Mutex::new(Vec::new())),
        record_file: record_other,
    });
    let s1 = state.clone();
    let t1 = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = main.accept().await else {
                continue;
            };
            let s = s1.clone();
            tokio::spawn(async move {
                let _ = serve_main(s, sock).await;
            });
        }
    });
    let s2 = state.clone();
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = other.accept().await else {
                continue;
            };
            let s = s2.clone();
            tokio::spawn(async move {
                let _ = serve_other(s, sock).await;
            });
        }
    });
    Ok(Running {
        url,
        other_url,
        state,
        tasks: vec![t1, t2],
    })
}

/// One parsed request.
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request (head + content-length body). `raw` receives every byte read.
async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut raw: impl FnMut(&[u8]),
) -> Option<Req> {
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        raw(&chunk[..n]);
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                len = v.parse().ok()?;
            }
            headers.push((k, v.as_bytes().to_vec()));
        }
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        raw(&chunk[..n]);
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

async fn serve_other(state: Arc<State>, mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let rec = state.other_received.clone();
        let file = state.record_file.clone();
        let req = read_request(&mut sock, &mut buf, |bytes| {
            rec.lock().unwrap().extend_from_slice(bytes);
            if let Some(f) = &file {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(f) {
                    let _ = f.write_all(bytes);
                }
            }
        })
        .await;
        let Some(req) = req else { return Ok(()) };
        let body = format!(
            "{{\"detail\":\"the other origin does not serve {} {}\"}}",
            req.method,
            req.path_only()
        );
        write_simple(
            &mut sock,
            404,
            &[("content-type", b"application/json".as_slice())],
            body.as_bytes(),
            true,
        )
        .await?;
    }
}

async fn serve_main(state: Arc<State>, mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // One request per connection: every answer closes it (keeps hostile answers simple).
    let Some(req) = read_request(&mut sock, &mut buf, |_| {}).await else {
        return Ok(());
    };
    if let Some(rest) = req.path.strip_prefix("/__same").map(str::to_string) {
        let mut req = req;
        req.path = rest;
        let resp = forward(&state.opts.upstream, &req).await?;
        return sock.write_all(&resp).await;
    }
    let hostile = match &state.opts.target {
        Target::Path(p) => req.path_only().starts_with(p.as_str()),
        Target::Result(p) => {
            if req.path_only() == p {
                let resp = forward(&state.opts.upstream, &req).await?;
                if let Some(id) = json_string_field(&resp, "request_id") {
                    state.pending_ids.lock().unwrap().push(id);
                }
                return sock.write_all(&resp).await;
            }
            req.path_only() == "/api/v1/retrieve_future" && {
                let ids = state.pending_ids.lock().unwrap();
                ids.iter()
                    .any(|id| find(&req.body, format!("\"{id}\"").as_bytes()).is_some())
            }
        }
    };
    if !hostile || state.opts.mode == Mode::Pass {
        let resp = forward(&state.opts.upstream, &req).await?;
        return sock.write_all(&resp).await;
    }
    serve_hostile(&state, &mut sock, &req).await
}

/// The first `"field":"value"` string of a JSON text (good enough for request ids).
fn json_string_field(resp: &[u8], field: &str) -> Option<String> {
    let body = &resp[find(resp, b"\r\n\r\n")? + 4..];
    let text = String::from_utf8_lossy(body);
    let key = format!("\"{field}\"");
    let at = text.find(&key)? + key.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// Forwards one request to the upstream with `Connection: close` and returns its whole raw
/// answer.
async fn forward(upstream: &str, req: &Req) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
    for (k, v) in &req.headers {
        if k == "connection" || k == "keep-alive" || k == "host" {
            continue;
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("host: {upstream}\r\nconnection: close\r\n\r\n").as_bytes());
    out.extend_from_slice(&req.body);
    up.write_all(&out).await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    Ok(resp)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Whatever",
    }
}

async fn write_simple(
    sock: &mut TcpStream,
    status: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    sock.write_all(&out).await?;
    sock.flush().await
}

/// Holds a connection open until the client closes it (or a minute passes).
async fn hold(sock: &mut TcpStream) {
    let mut b = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(n) = sock.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

static GZIP: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
static ZSTD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

fn cached(cell: &'static std::sync::OnceLock<Vec<u8>>, f: fn() -> Vec<u8>) -> &'static [u8] {
    cell.get_or_init(f)
}

/// Computes the payloads of `mode` ahead (the gzip bomb takes about a second), so the
/// first hostile answer is not late.
pub fn warm(mode: Mode) {
    match mode {
        Mode::GzipBomb => {
            cached(&GZIP, || gzip_bomb(BOMB_BYTES));
        }
        Mode::ZstdBomb => {
            cached(&ZSTD, || zstd_bomb(BOMB_BYTES));
        }
        _ => {}
    }
}

const PROTO: &[u8] = b"application/x-protobuf";
const JSON: &[u8] = b"application/json";

async fn serve_hostile(state: &State, sock: &mut TcpStream, req: &Req) -> std::io::Result<()> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let opts = &state.opts;
    if opts.print_hits {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "HIT {} {}", req.method, req.path_only());
        let _ = out.flush();
    }
    let is_result = matches!(opts.target, Target::Result(_));
    match opts.mode {
        Mode::Pass => unreachable!(),
        Mode::MalformedJson => {
            let body = br#"{"request_id": "req-malformed", "session_id": "sess-malf"#;
            write_simple(sock, 200, &[("content-type", JSON)], body, false).await
        }
        Mode::WrongContentType => {
            let body =
                b"<!doctype html><html><body><h1>Please sign in to the Wi-Fi</h1></body></html>";
            write_simple(
                sock,
                200,
                &[("content-type", b"text/html; charset=utf-8".as_slice())],
                body,
                false,
            )
            .await
        }
        Mode::Truncated => {
            let resp = forward(&opts.upstream, req).await?;
            let resp = truncate_response(&resp);
            sock.write_all(&resp).await
        }
        Mode::LyingTopk => {
            write_simple(sock, 200, &[("content-type", PROTO)], &lying_topk(), false).await
        }
        Mode::LyingNumDatums => {
            write_simple(
                sock,
                200,
                &[("content-type", PROTO)],
                &lying_num_datums(),
                false,
            )
            .await
        }
        Mode::LyingOffsets => {
            write_simple(
                sock,
                200,
                &[("content-type", PROTO)],
                &lying_offsets(),
                false,
            )
            .await
        }
        Mode::HugeAnnounced => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
                if is_result {
                    "application/x-protobuf"
                } else {
                    "application/json"
                },
                10u64 << 30
            );
            sock.write_all(head.as_bytes()).await?;
            let block = vec![b' '; 64 * 1024];
            let mut sent = 0u64;
            while sent < opts.cap_bytes {
                sock.write_all(&block).await?;
                sent += block.len() as u64;
            }
            hold(sock).await;
            Ok(())
        }
        Mode::EndlessChunked => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\n\r\n",
                if is_result {
                    "application/x-protobuf"
                } else {
                    "application/json"
                },
            );
            sock.write_all(head.as_bytes()).await?;
            let mut block = format!("{:x}\r\n", 64 * 1024).into_bytes();
            block.extend(std::iter::repeat_n(b' ', 64 * 1024));
            block.extend_from_slice(b"\r\n");
            let mut sent = 0u64;
            while sent < opts.cap_bytes {
                sock.write_all(&block).await?;
                sent += 64 * 1024;
            }
            hold(sock).await;
            Ok(())
        }
        Mode::BigDetail => {
            let filler = "A".repeat(BIG_DETAIL_BYTES);
            if is_result {
                let body = format!("{{\"error\":\"{filler}\",\"category\":\"user\"}}");
                write_simple(sock, 200, &[("content-type", JSON)], body.as_bytes(), false).await
            } else {
                let body = format!("{{\"detail\":\"{filler}\"}}");
                write_simple(sock, 400, &[("content-type", JSON)], body.as_bytes(), false).await
            }
        }
        Mode::SlowDrip => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n")
                .await?;
            for _ in 0..4096 {
                sock.write_all(b" ").await?;
                sock.flush().await?;
                tokio::time::sleep(opts.drip).await;
            }
            Ok(())
        }
        Mode::HeaderBomb => {
            let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_vec();
            for i in 0..HEADER_BOMB_COUNT {
                head.extend_from_slice(format!("x-bomb-{i}: {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"content-length: 2\r\nconnection: close\r\n\r\n{}");
            sock.write_all(&head).await
        }
        Mode::HugeHeader => {
            let mut head =
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-huge: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', HUGE_HEADER_BYTES));
            head.extend_from_slice(b"\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
            sock.write_all(&head).await
        }
        Mode::RedirectSame(code) => {
            let loc = format!("/__same{}", req.path);
            write_simple(sock, code, &[("location", loc.as_bytes())], b"", false).await
        }
        Mode::RedirectOther(code) => {
            let sep = if req.path.contains('?') { '&' } else { '?' };
            let loc = format!("{}{}{sep}{SIGNED_QUERY_CANARY}", state.other_url, req.path);
            write_simple(sock, code, &[("location", loc.as_bytes())], b"", false).await
        }
        Mode::RedirectLoop => {
            write_simple(sock, 302, &[("location", req.path.as_bytes())], b"", false).await
        }
        Mode::DeepJson => {
            let mut body = vec![b'['; DEEP_JSON_DEPTH];
            body.extend(std::iter::repeat_n(b']', DEEP_JSON_DEPTH));
            write_simple(sock, 200, &[("content-type", JSON)], &body, false).await
        }
        Mode::InvalidUtf8Json => {
            let body: &[u8] = b"{\"request_id\":\"\xff\xfe\xfd\",\"session_id\":\"\xc3\x28\",\"model_id\":\"\xed\xa0\x80\",\"error\":\"\xff\",\"detail\":\"\xfe\"}";
            write_simple(sock, 200, &[("content-type", JSON)], body, false).await
        }
        Mode::InvalidUtf8Header => {
            let resp = forward(&opts.upstream, req).await?;
            let at = find(&resp, b"\r\n").map_or(resp.len(), |i| i + 2);
            let mut out = resp[..at].to_vec();
            out.extend_from_slice(b"x-weird: \xff\xfe\x80bad\r\nx-request-id: \xc3\x28\r\n");
            out.extend_from_slice(&resp[at..]);
            sock.write_all(&out).await
        }
        Mode::GzipBomb => {
            let ct = if is_result { PROTO } else { JSON };
            let body = cached(&GZIP, || gzip_bomb(BOMB_BYTES));
            write_simple(
                sock,
                200,
                &[
                    ("content-type", ct),
                    ("content-encoding", b"gzip".as_slice()),
                ],
                &body,
                false,
            )
            .await
        }
        Mode::ZstdBomb => {
            let ct = if is_result { PROTO } else { JSON };
            let body = cached(&ZSTD, || zstd_bomb(BOMB_BYTES));
            write_simple(
                sock,
                200,
                &[
                    ("content-type", ct),
                    ("content-encoding", b"zstd".as_slice()),
                ],
                &body,
                false,
            )
            .await
        }
    }
}

/// A raw HTTP answer with its body cut in half and `content-length` adjusted. A JSON
/// `try_again` (a long poll that is not the result yet) passes unchanged.
fn truncate_response(resp: &[u8]) -> Vec<u8> {
    let Some(head_end) = find(resp, b"\r\n\r\n") else {
        return resp.to_vec();
    };
    let body = &resp[head_end + 4..];
    if find(body, b"try_again").is_some() || !resp.starts_with(b"HTTP/1.1 200") {
        return resp.to_vec();
    }
    let cut = &body[..body.len() / 2];
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let mut out = Vec::new();
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", cut.len()).as_bytes());
    out.extend_from_slice(cut);
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn len_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint_field(tag: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3), out);
    varint(v, out);
}

/// `SampleResponse { topk_prompt_logprobs: TopkLogprobs { k: 0, length: 2^32-1 } }`.
pub fn lying_topk() -> Vec<u8> {
    let mut topk = Vec::new();
    varint_field(3, 0, &mut topk); // k = 0 (written explicitly)
    varint_field(4, u64::from(u32::MAX), &mut topk); // length = 2^32-1
    let mut msg = Vec::new();
    len_field(3, &topk, &mut msg);
    msg
}

/// `ForwardBackwardOutput { loss_fn_outputs: [ArrayRecord { num_datums: 2^40 }] }`.
pub fn lying_num_datums() -> Vec<u8> {
    let mut record = Vec::new();
    varint_field(3, 1 << 40, &mut record);
    let mut msg = Vec::new();
    len_field(1, b"tinker.ArrayRecord:ArrayRecord", &mut msg);
    len_field(2, &record, &mut msg);
    msg
}

/// A `ForwardBackwardOutput` whose one batched tensor has 8 bytes of data and offsets
/// `[0, 2^40, 8]` (past the end, and decreasing).
pub fn lying_offsets() -> Vec<u8> {
    let mut tensor = Vec::new();
    len_field(1, &[0u8; 8], &mut tensor);
    let mut offsets = Vec::new();
    for o in [0i64, 1 << 40, 8] {
        offsets.extend_from_slice(&o.to_le_bytes());
    }
    len_field(2, &offsets, &mut tensor);
    varint_field(3, 1, &mut tensor); // FLOAT32
    let mut entry = Vec::new();
    len_field(1, b"logprobs", &mut entry);
    len_field(2, &tensor, &mut entry);
    let mut record = Vec::new();
    len_field(1, b"ArrayRecord", &mut record);
    len_field(2, &entry, &mut record);
    varint_field(3, 2, &mut record);
    let mut msg = Vec::new();
    len_field(1, b"tinker.ArrayRecord:ArrayRecord", &mut msg);
    len_field(2, &record, &mut msg);
    msg
}

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn bits(&mut self, v: u64, count: u32) {
        self.acc |= v << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let mut rev = 0u64;
        for i in 0..len {
            rev |= u64::from((code >> i) & 1) << (len - 1 - i);
        }
        self.bits(rev, len);
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

fn crc32_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    t
}

/// A valid gzip member that inflates to about `size` spaces (one fixed-Huffman deflate block
/// of a literal and length-258 distance-1 matches).
pub fn gzip_bomb(size: u64) -> Vec<u8> {
    let matches = (size - 1) / 258;
    let total = 1 + matches * 258;
    let mut w = BitWriter {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff],
        acc: 0,
        n: 0,
    };
    w.bits(1, 1); // BFINAL
    w.bits(1, 2); // fixed Huffman
    w.code(0x30 + u32::from(b' '), 8); // literal ' '
    for _ in 0..matches {
        w.code(0xC0 + (285 - 280), 8); // length 258
        w.code(0, 5); // distance 1
    }
    w.code(0, 7); // end of block
    let mut out = w.finish();
    let table = crc32_table();
    let mut crc = !0u32;
    for _ in 0..total {
        crc = table[((crc ^ u32::from(b' ')) & 0xff) as usize] ^ (crc >> 8);
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

/// A valid zstd frame of RLE blocks that decompresses to `size` spaces (about 4 bytes per
/// 128 KiB).
pub fn zstd_bomb(size: u64) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD];
    out.push(0x00); // no content size, not single-segment, no checksum, no dictionary
    out.push(7 << 3); // window 2^17
    let block = 128 * 1024u64;
    let blocks = size.div_ceil(block);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let n = block.min(size - i * block) as u32;
        let header = last | (1 << 1) | (n << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(b' ');
    }
    out
}

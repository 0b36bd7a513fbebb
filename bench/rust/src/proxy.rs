//! A wire-timing TCP proxy: forwards every connection to the emulator unchanged and, for each
//! HTTP/1.1 request a client sends, logs when its first byte and its last body byte arrived
//! (CLOCK_MONOTONIC, taken when the `read` that returned the byte completed). It reads the
//! client as fast as the kernel delivers (forwarding is decoupled through an unbounded
//! queue), so the times measure the client, not the emulator's speed of reading.
//!
//! Each request's line is written when the first byte of the server's answer to it comes back
//! (`t_resp`; HTTP/1.1 answers in order, so the first bytes from the server after a request's
//! last byte answer it): the acceptance time of a chunk is `t_resp - t_last`. Lines of
//! requests left unanswered are written, without `t_resp`, when the connection closes.
//!
//! `tinkex-bench proxy --upstream 127.0.0.1:PORT --log FILE` prints its base URL first.

use crate::util::{mono, Args};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

enum State {
    /// Reading the request line and headers.
    Head(Vec<u8>),
    /// A body with a known length: bytes left.
    Body(usize),
    /// Chunked body: reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Chunked body: bytes of chunk data (+ its CRLF) left.
    ChunkData(usize),
    /// Chunked body: the trailer up to the empty line.
    Trailer(Vec<u8>),
}

struct Req {
    method: String,
    path: String,
    t_first: f64,
    head_bytes: usize,
    body_bytes: usize,
}

/// Log lines of the requests of one connection that were sent whole and wait for the first
/// byte of their answer.
#[derive(Clone)]
struct Unanswered {
    lines: Arc<Mutex<VecDeque<serde_json::Value>>>,
    log: Arc<Mutex<std::fs::File>>,
}

impl Unanswered {
    /// Writes every waiting line, with `t_resp` when given.
    fn flush(&self, t_resp: Option<f64>) {
        let lines: Vec<_> = self.lines.lock().unwrap().drain(..).collect();
        if lines.is_empty() {
            return;
        }
        let mut f = self.log.lock().unwrap();
        for mut line in lines {
            if let Some(t) = t_resp {
                line["t_resp"] = t.into();
            }
            let _ = writeln!(f, "{line}");
        }
    }
}

struct Parser {
    state: State,
    req: Option<Req>,
    unanswered: Unanswered,
}

fn find_crlf2(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

impl Parser {
    fn done(&mut self, now: f64) {
        if let Some(r) = self.req.take() {
            let line = serde_json::json!({
                "method": r.method, "path": r.path, "t_first": r.t_first, "t_last": now,
                "head_bytes": r.head_bytes, "body_bytes": r.body_bytes,
            });
            self.unanswered.lines.lock().unwrap().push_back(line);
        }
        self.state = State::Head(Vec::new());
    }

    /// Feeds bytes that arrived at `now`.
    fn feed(&mut self, mut data: &[u8], now: f64) {
        while !data.is_empty() {
            match &mut self.state {
                State::Head(acc) => {
                    if acc.is_empty() && self.req.is_none() {
                        self.req = Some(Req {
                            method: String::new(),
                            path: String::new(),
                            t_first: now,
                            head_bytes: 0,
                            body_bytes: 0,
                        });
                    }
                    let old = acc.len();
                    acc.extend_from_slice(data);
                    let Some(end) = find_crlf2(&acc[old.saturating_sub(3)..])
                        .map(|e| e + old.saturating_sub(3))
                    else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&acc[..end]).into_owned();
                    let consumed = end - old;
                    data = &data[consumed..];
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let (mut len, mut chunked) = (0usize, false);
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            let k = k.trim().to_ascii_lowercase();
                            if k == "content-length" {
                                len = v.trim().parse().unwrap_or(0);
                            } else if k == "transfer-encoding"
                                && v.to_ascii_lowercase().contains("chunked")
                            {
                                chunked = true;
                            }
                        }
                    }
                    let r = self.req.as_mut().unwrap();
                    r.method = first.next().unwrap_or("").to_string();
                    r.path = first.next().unwrap_or("").to_string();
                    r.head_bytes = end;
                    if chunked {
                        self.state = State::ChunkSize(Vec::new());
                    } else if len > 0 {
                        self.state = State::Body(len);
                    } else {
                        self.done(now);
                    }
                }
                State::Body(left) => {
                    let k = (*left).min(data.len());
                    *left -= k;
                    data = &data[k..];
                    self.req.as_mut().unwrap().body_bytes += k;
                    if *left == 0 {
                        self.done(now);
                    }
                }
                State::ChunkSize(acc) => {
                    let Some(p) = data.iter().position(|b| *b == b'\n') else {
                        acc.extend_from_slice(data);
                        return;
                    };
                    acc.extend_from_slice(&data[..=p]);
                    data = &data[p + 1..];
                    let line = String::from_utf8_lossy(acc).trim().to_string();
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("0").trim(), 16)
                            .unwrap_or(0);
                    self.state = if size == 0 {
                        State::Trailer(Vec::new())
                    } else {
                        State::ChunkData(size + 2)
                    };
                }
                State::ChunkData(left) => {
                    let k = (*left).min(data.len());
                    *left -= k;
                    data = &data[k..];
                    self.req.as_mut().unwrap().body_bytes += k;
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailer(acc) => {
                    let Some(p) = data.iter().position(|b| *b == b'\n') else {
                        acc.extend_from_slice(data);
                        return;
                    };
                    acc.extend_from_slice(&data[..=p]);
                    data = &data[p + 1..];
                    if acc == b"\r\n" || acc == b"\n" {
                        self.done(now);
                    } else {
                        acc.clear();
                    }
                }
            }
        }
    }
}

async fn handle(client: TcpStream, upstream: String, log: Arc<Mutex<std::fs::File>>) {
    let Ok(up) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    let unanswered = Unanswered {
        lines: Arc::default(),
        log,
    };
    let answers = unanswered.clone();
    tokio::spawn(async move {
        // Server → client: the first bytes after a request was sent whole answer it.
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            answers.flush(Some(mono()));
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
        answers.flush(None);
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if uw.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = uw.shutdown().await;
    });
    let mut parser = Parser {
        state: State::Head(Vec::new()),
        req: None,
        unanswered: unanswered.clone(),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = mono();
        parser.feed(&buf[..n], now);
        if tx.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
    unanswered.flush(None);
}

/// Runs the proxy until killed.
pub async fn run(a: &Args) {
    let upstream = a
        .req("upstream")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.req("log"))
            .expect("proxy log"),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("http://{}", listener.local_addr().unwrap());
    let _ = std::io::stdout().flush();
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(handle(s, upstream.clone(), log.clone()));
    }
}

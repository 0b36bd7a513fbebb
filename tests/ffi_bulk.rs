//! The typed-array bulk path and the JSON path put the same request on the wire (issue 5,
//! acceptance 4). A tiny recording HTTP/1.1 proxy sits between the client and the emulator
//! and keeps every `forward_backward` body; the two bodies are compared byte for byte,
//! except `seq_id` (each call takes the next one). The core encodes protobuf maps in key
//! order, so equal requests are equal bytes.

mod ffi_support;

use ffi_support::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::ffi::datum::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::training::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A recording reverse proxy in front of the emulator.
struct Proxy {
    rt: Option<tokio::runtime::Runtime>,
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.to_string();
        let recorded = bodies.clone();
        rt.spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, recorded) =
                    (client.clone(), upstream.clone(), recorded.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, client, upstream, recorded).await;
                });
            }
        });
        Proxy {
            rt: Some(rt),
            url,
            bodies,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Serves one keep-alive connection: read a request, forward it, write the answer back.
async fn serve(
    stream: tokio::net::TcpStream,
    client: reqwest::Client,
    upstream: String,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            assert_ne!(
                name, "transfer-encoding",
                "the proxy reads Content-Length only"
            );
            if name == "content-length" {
                length = value.parse().unwrap();
            }
            headers.push((name, value));
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        if path == "/api/v1/forward_backward" {
            recorded.lock().unwrap().push(body.clone());
        }
        let mut req = client.request(method.parse().unwrap(), format!("{upstream}{path}"));
        for (name, value) in &headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                req = req.header(name, value);
            }
        }
        let resp = req.body(body).send().await.map_err(std::io::Error::other)?;
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        let resp_body = resp.bytes().await.map_err(std::io::Error::other)?;
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        for (name, value) in &resp_headers {
            if !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                head.push_str(&format!("{}: {}\r\n", name, value.to_str().unwrap_or("")));
            }
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", resp_body.len()));
        write.write_all(head.as_bytes()).await?;
        write.write_all(&resp_body).await?;
        write.flush().await?;
    }
}

/// One top-level protobuf field: number and its complete encoding (tag included).
fn fields(mut buf: &[u8]) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[0];
            *buf = &buf[1..];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let start = buf;
        let tag = varint(&mut buf);
        let payload: &[u8] = match tag & 7 {
            0 => {
                let before = buf;
                varint(&mut buf);
                &before[..before.len() - buf.len()]
            }
            1 => {
                let p = &buf[..8];
                buf = &buf[8..];
                p
            }
            2 => {
                let n = varint(&mut buf) as usize;
                let p = &buf[..n];
                buf = &buf[n..];
                p
            }
            5 => {
                let p = &buf[..4];
                buf = &buf[4..];
                p
            }
            w => panic!("unexpected wire type {w}"),
        };
        let whole = start[..start.len() - buf.len()].to_vec();
        out.push((tag >> 3, whole, payload.to_vec()));
    }
    out
}

/// The raw field encodings of a `ForwardBackwardRequest` body, in wire order, minus
/// `seq_id` (field 2).
fn canonical(body: &[u8]) -> Vec<Vec<u8>> {
    fields(body)
        .into_iter()
        .filter(|(num, _, _)| *num != 2)
        .map(|(_, whole, _)| whole)
        .collect()
}

fn seq_id(body: &[u8]) -> u64 {
    let (_, _, payload) = fields(body).into_iter().find(|f| f.0 == 2).unwrap();
    let mut v = 0u64;
    for (i, b) in payload.iter().enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
    }
    v
}

/// The datums of one case: token ids as int32, float inputs as float64, to exercise the
/// conversions; the JSON path states the same numbers.
struct Case {
    loss_fn: &'static str,
    tokens: Vec<Vec<i32>>,
    inputs: Vec<(&'static str, Vec<f64>)>,
}

fn json_body(c: &Case) -> Vec<u8> {
    let data: Vec<Value> = c
        .tokens
        .iter()
        .map(|t| {
            let n = t.len() - 1;
            let mut inputs = serde_json::Map::new();
            inputs.insert(
                "target_tokens".into(),
                json!({"data": &t[1..], "dtype": "int64", "shape": [n]}),
            );
            for (name, values) in &c.inputs {
                inputs.insert(
                    (*name).into(),
                    json!({"data": &values[..n], "dtype": "float32", "shape": [n]}),
                );
            }
            json!({
                "model_input": {"chunks": [{"type": "encoded_text", "tokens": &t[..n]}]},
                "loss_fn_inputs": inputs
            })
        })
        .collect();
    j(&json!({"data": data, "loss_fn": c.loss_fn}))
}

fn bulk_batch(c: &Case) -> *mut tinkex_datum_batch {
    let mut b = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(tinkex_datum_batch_new(&mut b, &mut err), tinkex_status::Ok);
    for t in &c.tokens {
        let n = t.len() - 1;
        let ok = |s| assert_eq!(s, tinkex_status::Ok);
        ok(tinkex_datum_batch_push(
            b,
            t.as_ptr().cast(),
            n,
            tinkex_dtype::Int32 as i32,
            &mut err,
        ));
        let target = t[1..].to_vec();
        let name = b"target_tokens";
        ok(tinkex_datum_batch_set_loss_input(
            b,
            name.as_ptr(),
            name.len(),
            target.as_ptr().cast(),
            n,
            tinkex_dtype::Int32 as i32,
            std::ptr::null(),
            0,
            &mut err,
        ));
        let shape = [n as i64];
        for (name, values) in &c.inputs {
            ok(tinkex_datum_batch_set_loss_input(
                b,
                name.as_ptr(),
                name.len(),
                values.as_ptr().cast(),
                n,
                tinkex_dtype::Float64 as i32,
                shape.as_ptr(),
                1,
                &mut err,
            ));
        }
    }
    b
}

#[test]
fn bulk_and_json_paths_put_identical_requests_on_the_wire() {
    let emu = Emu::start("ffi-bulk");
    let proxy = Proxy::start(&emu.url);
    let rt = Rt::new();
    let svc = Svc::new(&rt, &proxy.url);
    let training = training_client(&svc);
    let tokens: Vec<Vec<i32>> = batch_tokens()
        .iter()
        .map(|t| t.iter().map(|&x| x as i32).collect())
        .collect();
    // Values that float32 cannot hold exactly: both paths must round alike.
    let wobbly: Vec<f64> = (0..24).map(|i| 0.1 + f64::from(i) / 3.0).collect();
    let cases = [
        Case {
            loss_fn: "cross_entropy",
            tokens: tokens.clone(),
            inputs: vec![("weights", vec![1.0; 24])],
        },
        Case {
            loss_fn: "importance_sampling",
            tokens,
            inputs: vec![
                ("logprobs", wobbly.iter().map(|x| -x).collect()),
                ("advantages", wobbly.clone()),
            ],
        },
    ];
    for case in &cases {
        proxy.bodies.lock().unwrap().clear();
        let body = json_body(case);
        let via_json = submit(|cb, ud, out, err| {
            tinkex_training_client_forward_backward(
                training.0,
                body.as_ptr(),
                body.len(),
                cb,
                ud,
                out,
                err,
            )
        })
        .json();
        let batch = bulk_batch(case);
        assert_eq!(tinkex_datum_batch_len(batch), 4);
        let loss = j(&json!({ "loss_fn": case.loss_fn }));
        let via_bulk = submit(|cb, ud, out, err| {
            tinkex_training_client_forward_backward_batch(
                training.0,
                batch,
                loss.as_ptr(),
                loss.len(),
                cb,
                ud,
                out,
                err,
            )
        })
        .json();
        // Borrowed by the submit (its datums were copied): still intact, freed by its owner.
        assert_eq!(tinkex_datum_batch_len(batch), 4);
        tinkex_datum_batch_free(batch);
        let bodies = proxy.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2, "one forward_backward request per path");
        let (a, b) = (&bodies[0], &bodies[1]);
        assert_eq!(a.len(), b.len(), "{}: same size on the wire", case.loss_fn);
        assert_eq!(seq_id(b), seq_id(a) + 1);
        let (ca, cb) = (canonical(a), canonical(b));
        let first_diff = ca.iter().zip(&cb).position(|(x, y)| x != y);
        assert!(
            ca == cb,
            "{}: the bulk request differs from the JSON request (field {first_diff:?} of {})",
            case.loss_fn,
            ca.len()
        );
        assert!(
            ca.len() >= 6,
            "model_id, 4 datums and loss_fn were compared"
        );
        // Same datums, same model state except one step of accumulation: same outputs'
        // shapes.
        assert_eq!(
            via_json["loss_fn_outputs"].as_array().unwrap().len(),
            via_bulk["loss_fn_outputs"].as_array().unwrap().len()
        );
    }
}

//! `hostile-server`: the hostile server of tests/hostile as a process, for the C, Python and
//! Elixir suites. Prints one line `URL=<hostile base URL> OTHER=<other origin base URL>` on
//! stdout, then `HIT <method> <path>` for every hostile answer, and serves until killed (or
//! until stdin closes, with --exit-on-eof).

use hostile_server::{Mode, Options, Target};
use std::io::Write;
use std::time::Duration;

const USAGE: &str = "\
usage: hostile-server --mode MODE --target TARGET --upstream URL
                      [--record-other FILE] [--drip-ms MS] [--cap-bytes N] [--exit-on-eof]

  MODE    pass | malformed_json | wrong_content_type | truncated | lying_topk |
          lying_num_datums | lying_offsets | huge_announced | endless_chunked | big_detail |
          slow_drip | header_bomb | huge_header | redirect_same_{301,302,303,307,308} |
          redirect_other_{301,302,303,307,308} | redirect_loop | deep_json |
          invalid_utf8_json | invalid_utf8_header | gzip_bomb | zstd_bomb
  TARGET  a path prefix (/api/v1/create_session) or result:<submit path>
          (result:/api/v1/forward_backward: the retrieve_future polls of that future)
  URL     the normal server (a tinkex-emulator) everything else is forwarded to";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode = None;
    let mut target = None;
    let mut upstream = None;
    let mut record = None;
    let mut drip = None;
    let mut cap = None;
    let mut exit_on_eof = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--exit-on-eof" {
            exit_on_eof = true;
            continue;
        }
        if flag == "--port" {
            // Accepted for symmetry with the emulator; always 0 (a free port).
            it.next();
            continue;
        }
        let Some(v) = it.next() else {
            eprintln!("{flag} needs a value\n{USAGE}");
            std::process::exit(2);
        };
        match flag.as_str() {
            "--mode" => mode = Mode::parse(v),
            "--target" => target = Some(Target::parse(v)),
            "--upstream" => upstream = Some(v.clone()),
            "--record-other" => record = Some(std::path::PathBuf::from(v)),
            "--drip-ms" => drip = v.parse().ok().map(Duration::from_millis),
            "--cap-bytes" => cap = v.parse().ok(),
            _ => {
                eprintln!("unknown flag {flag}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let (Some(mode), Some(target), Some(upstream)) = (mode, target, upstream) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut opts = Options::new(mode, target, &upstream);
    opts.print_hits = true;
    if let Some(d) = drip {
        opts.drip = d;
    }
    if let Some(c) = cap {
        opts.cap_bytes = c;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    hostile_server::warm(mode);
    rt.block_on(async move {
        let running = hostile_server::start(opts, record).await.expect("listen");
        println!("URL={} OTHER={}", running.url, running.other_url);
        std::io::stdout().flush().ok();
        if exit_on_eof {
            tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await
            .ok();
        } else {
            std::future::pending::<()>().await;
        }
        drop(running);
    });
}

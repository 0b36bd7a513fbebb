//! `tinkex-bench`: the Rust side of the benchmark suite (driven by bench/driver.py, see
//! docs/benchmarks.md). Each subcommand runs one workload against an emulator and prints one
//! JSON object on stdout.
//!
//! ```text
//! tinkex-bench sample   --client rust|raw|ffi --base-url URL [--total N --inflight K | --rate R] [--telemetry 1]
//! tinkex-bench memory   --client rust|raw|ffi --base-url URL --n N [--hold-ms MS]
//! tinkex-bench rss      --client rust|raw|ffi --base-url URL --n N [--hold-ms MS]
//! tinkex-bench recovery --client rust|raw|ffi --base-url URL --n N [--hold-ms MS --outage-ms MS]
//! tinkex-bench fwdbwd   --client rust|raw --base-url URL(proxy) --datums D --tokens T --reps R
//! tinkex-bench encode   --datums D --tokens T --reps R
//! tinkex-bench proxy    --upstream URL --log FILE
//! ```

mod curves;
mod ffi_client;
mod fwdbwd;
mod proxy;
mod raw;
mod sample;
mod util;

use util::Args;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("usage: tinkex-bench sample|memory|rss|recovery|fwdbwd|encode|proxy [--flags]");
        std::process::exit(2);
    };
    let a = Args::parse(rest);
    // Never dropped: the process exits right after printing (no orderly shutdown to wait for).
    let rt = Box::leak(Box::new(util::runtime()));
    let out = match cmd.as_str() {
        "encode" => fwdbwd::encode(&a),
        "proxy" => {
            rt.block_on(proxy::run(&a));
            return;
        }
        "sample" => rt.block_on(sample::throughput(&a)),
        "memory" => rt.block_on(sample::memory(&a)),
        "rss" => rt.block_on(curves::rss(&a)),
        "recovery" => rt.block_on(sample::recovery(&a)),
        "fwdbwd" => rt.block_on(fwdbwd::run(&a)),
        other => {
            eprintln!("unknown subcommand {other}");
            std::process::exit(2);
        }
    };
    println!("{out}");
    // Skip the runtime's orderly shutdown (pending heartbeats etc.): the measurement is done.
    std::process::exit(0);
}

//! The README quick start: a short supervised training loop, then save, sample and print.
//!
//! With neither `TINKER_API_KEY` nor `TINKER_BASE_URL` set it starts the local emulator
//! in-process (a tiny CPU model behind the real protocol); otherwise it talks to the
//! configured service.
//!
//! ```text
//! cargo run --release --example train
//! ```

use std::io::Write;
use std::time::Instant;
use tinkex::core::types::{
    AdamParams, Datum, FinishReasonKind, ModelInput, SamplingParams, TensorData,
};
use tinkex::core::{Config, LoraOptions, SampleOptions, ServiceClient};

const BASE_MODEL: &str = "Qwen/Qwen3-8B";
const STEPS: usize = 60;
const DATASET: &[&str] = &[
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a bird sang in the tree.",
    "the sun rose over the hill.",
    "we read a book by the fire.",
    "the rain fell on the roof.",
];

/// Byte-level "tokenizer": token id = byte value (valid ids for every real tokenizer).
fn tokenize(text: &str) -> Vec<i64> {
    text.bytes().map(i64::from).collect()
}

fn detokenize(tokens: &[i64]) -> String {
    tokens
        .iter()
        .map(|&t| match u8::try_from(t) {
            Ok(b) if b.is_ascii_graphic() || b == b' ' => b as char,
            _ => '·',
        })
        .collect()
}

/// Next-token prediction over one sentence: inputs are all but the last token, targets all
/// but the first.
fn datum(text: &str) -> Datum {
    let tokens = tokenize(text);
    let n = tokens.len() - 1;
    let mut d = Datum {
        model_input: ModelInput::from_ints(tokens[..n].to_vec()),
        ..Default::default()
    };
    d.loss_fn_inputs.insert(
        "target_tokens".into(),
        TensorData::from_i64(tokens[1..].to_vec()),
    );
    d.loss_fn_inputs
        .insert("weights".into(), TensorData::from_f32(vec![1.0; n]));
    d
}

fn progress_bar(done: usize, total: usize) -> String {
    let width = 24;
    let filled = done * width / total;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let use_real = std::env::var_os("TINKER_API_KEY").is_some()
        || std::env::var_os("TINKER_BASE_URL").is_some();
    let mut emulator = None;
    let config = if use_real {
        println!("Using the Tinker service configured by TINKER_API_KEY / TINKER_BASE_URL");
        Config::from_env()?
    } else {
        let state = std::env::temp_dir().join(format!("tinkex-quickstart-{}", std::process::id()));
        let emu =
            tinkex_emulator::Emulator::start(tinkex_emulator::EmulatorConfig::new(&state)).await?;
        println!(
            "Started the local emulator at {} (state in {})",
            emu.base_url(),
            state.display()
        );
        let config = Config::builder()
            .api_key("tml-local-emulator")
            .base_url(emu.base_url())
            .build()?;
        emulator = Some((emu, state));
        config
    };

    let service = ServiceClient::new(config)?;
    let training = service
        .create_lora_training_client(
            BASE_MODEL,
            LoraOptions {
                rank: 16,
                ..Default::default()
            },
        )
        .await?;
    println!("Training {} (model {})", BASE_MODEL, training.model_id());

    let batch: Vec<Datum> = DATASET.iter().map(|s| datum(s)).collect();
    let tokens: usize = batch
        .iter()
        .map(|d| d.model_input.length().unwrap_or(0))
        .sum();
    let adam = AdamParams {
        learning_rate: 1e-3,
        ..Default::default()
    };
    let started = Instant::now();
    let mut first_loss = None;
    let mut loss = 0.0;
    for step in 1..=STEPS {
        // Submit both before awaiting: the client keeps them in order on the wire.
        let fb = training.forward_backward(batch.clone(), "cross_entropy", None);
        let opt = training.optim_step(adam);
        let out = fb.await?;
        opt.await?;
        loss = out.metrics["loss:sum"] / tokens as f64;
        first_loss.get_or_insert(loss);
        print!(
            "\rstep {step:>3}/{STEPS} {} loss {loss:.4}",
            progress_bar(step, STEPS)
        );
        std::io::stdout().flush()?;
    }
    println!(
        "\ntrained {STEPS} steps in {:.1} s: loss {:.4} -> {loss:.4}",
        started.elapsed().as_secs_f64(),
        first_loss.unwrap_or(loss)
    );

    let path = training.save_state("quickstart-final").await?;
    println!("saved training state: {path}");
    let sampler = training.save_weights_and_get_sampling_client().await?;
    let params = SamplingParams {
        max_tokens: Some(24),
        temperature: 0.7,
        ..Default::default()
    };
    for prompt in ["the cat", "a bird", "the rain"] {
        let out = sampler
            .sample(
                ModelInput::from_ints(tokenize(prompt)),
                2,
                params.clone(),
                SampleOptions::default(),
            )
            .await?;
        for seq in &out.sequences {
            println!("sample  {prompt:>8} | {}", detokenize(&seq.tokens));
        }
    }
    service.close(FinishReasonKind::Success, None).await?;
    if let Some((emu, state)) = emulator {
        emu.shutdown().await;
        let _ = std::fs::remove_dir_all(state);
    }
    Ok(())
}

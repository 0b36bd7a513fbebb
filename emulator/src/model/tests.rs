//! Behavioural tests of the tiny model.

use super::network::MATRICES;
use super::rng::SplitMix64;
use super::*;

fn config(seed: u64) -> ModelConfig {
    ModelConfig {
        base_model: "Qwen/Qwen3-8B".into(),
        lora_rank: 32,
        seed: Some(seed),
        train_unembed: true,
        train_mlp: true,
        train_attn: true,
    }
}

fn adam(lr: f64) -> AdamParams {
    AdamParams {
        learning_rate: lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-12,
        weight_decay: 0.0,
        grad_clip_norm: 0.0,
    }
}

/// `count` datums of `len` next-token pairs over random ids in 100000..160000.
fn random_batch(seed: u64, count: usize, len: usize) -> Vec<DatumInput> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let seq: Vec<i64> = (0..=len)
                .map(|_| 100_000 + (rng.next_u64() % 60_000) as i64)
                .collect();
            DatumInput {
                tokens: seq[..len].to_vec(),
                target_tokens: seq[1..].to_vec(),
                ..Default::default()
            }
        })
        .collect()
}

fn ce_loss(model: &mut TinyModel, data: &[DatumInput]) -> f64 {
    let out = model.forward_backward(data, &LossFn::CrossEntropy, true);
    out.unwrap().loss_sum
}

/// Loss of a fixed 4 × 32 batch before and after 20 AdamW steps at `lr`.
fn train_curve(lr: f64, lora_rank: u32) -> (f64, f64) {
    let mut model = TinyModel::new(ModelConfig {
        lora_rank,
        ..config(7)
    });
    let data = random_batch(11, 4, 32);
    let before = ce_loss(&mut model, &data);
    for _ in 0..20 {
        let out = model.forward_backward(&data, &LossFn::CrossEntropy, false);
        assert!(out.unwrap().loss_sum.is_finite());
        model.optim_step(&adam(lr)).unwrap();
    }
    (before, ce_loss(&mut model, &data))
}

#[test]
fn loss_falls_at_realistic_learning_rates() {
    for rank in [8, 32, 128] {
        let (before, after) = train_curve(1e-3, rank);
        assert!(
            after <= 0.6 * before,
            "rank {rank}, lr 1e-3: {before} -> {after}"
        );
        let (before, after) = train_curve(1e-4, rank);
        assert!(
            after <= 0.95 * before,
            "rank {rank}, lr 1e-4: {before} -> {after}"
        );
        let (_, after) = train_curve(1e-2, rank);
        assert!(after.is_finite(), "rank {rank}, lr 1e-2 diverged: {after}");
    }
}

#[test]
#[ignore = "prints the learning curves; run with --ignored --nocapture"]
fn print_learning_rates() {
    for rank in [1, 8, 32, 128] {
        for lr in [1e-4, 1e-3, 1e-2] {
            let (before, after) = train_curve(lr, rank);
            let drop = 100.0 * (1.0 - after / before);
            let (before, after) = (before / 128.0, after / 128.0);
            println!(
                "rank {rank:3} lr {lr:e}: {before:.4} -> {after:.4} per token ({drop:.1}% lower)"
            );
        }
    }
}

// ---------------------------------------------------------------- gradients

/// The adapter gradients of the trainable matrices, flattened.
fn flat_grads(model: &TinyModel) -> Vec<Vec<f32>> {
    (0..MATRICES)
        .map(|i| {
            let (da, db) = model.net.mats[i].adapter_grads(&model.grads.mats[i]);
            [da, db].concat()
        })
        .collect()
}

/// Adds `eps · dir` to the adapters of every matrix.
fn perturb(model: &mut TinyModel, dir: &[Vec<f32>], eps: f32) {
    for (mat, d) in model.net.mats.iter_mut().zip(dir) {
        let (da, db) = d.split_at(mat.a.len());
        mat.a.iter_mut().zip(da).for_each(|(p, x)| *p += eps * x);
        mat.b.iter_mut().zip(db).for_each(|(p, x)| *p += eps * x);
        mat.merge();
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = math::sum_sq(v).sqrt() as f32;
    v.iter().map(|x| x / norm.max(1e-30)).collect()
}

/// A model whose adapters have moved away from `B = 0`.
fn warmed_model() -> TinyModel {
    let mut model = TinyModel::new(config(3));
    let data = random_batch(5, 2, 16);
    for _ in 0..3 {
        model
            .forward_backward(&data, &LossFn::CrossEntropy, false)
            .unwrap();
        model.optim_step(&adam(2e-3)).unwrap();
    }
    model
}

/// Checks `dL/d(direction)` against a central finite difference, along the
/// gradient of each matrix plus a random component.
fn check_gradients(model: &TinyModel, data: &[DatumInput], loss: &LossFn) {
    let mut model = model.clone();
    model.forward_backward(data, loss, false).unwrap();
    let grads = flat_grads(&model);
    model.grads.clear();
    let mut rng = SplitMix64::new(99);
    for i in 0..MATRICES {
        let random: Vec<f32> = (0..grads[i].len()).map(|_| rng.symmetric(1.0)).collect();
        let along: Vec<f32> = unit(&grads[i])
            .iter()
            .zip(unit(&random))
            .map(|(g, r)| g + r)
            .collect();
        let mut dir: Vec<Vec<f32>> = grads.iter().map(|g| vec![0.0; g.len()]).collect();
        dir[i] = along;
        let analytic: f64 = grads[i]
            .iter()
            .zip(&dir[i])
            .map(|(&g, &d)| f64::from(g) * f64::from(d))
            .sum();
        let eps = 1e-3;
        let mut plus = model.clone();
        perturb(&mut plus, &dir, eps);
        let mut minus = model.clone();
        perturb(&mut minus, &dir, -eps);
        let lp = plus.forward_backward(data, loss, true).unwrap().loss_sum;
        let lm = minus.forward_backward(data, loss, true).unwrap().loss_sum;
        let numeric = (lp - lm) / (2.0 * f64::from(eps));
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(
            err < 1e-3,
            "{} matrix {i}: analytic {analytic}, numeric {numeric}",
            loss.name()
        );
        assert!(
            analytic.abs() > 1e-3,
            "{} matrix {i}: zero gradient",
            loss.name()
        );
    }
}

/// Copies of `data` with sampler logprobs `logp + shift(t)` and ±1 advantages.
fn rl_data(model: &TinyModel, data: &[DatumInput], shifts: &[f32]) -> Vec<DatumInput> {
    let mut probe = model.clone();
    let out = probe
        .forward_backward(data, &LossFn::CrossEntropy, true)
        .unwrap();
    data.iter()
        .zip(&out.outputs)
        .map(|(d, o)| {
            let n = d.tokens.len();
            let shift = |t: usize| shifts[t % shifts.len()];
            DatumInput {
                sampling_logprobs: Some((0..n).map(|t| o.logprobs[t] + shift(t)).collect()),
                advantages: Some(
                    (0..n)
                        .map(|t| if t % 3 == 0 { -1.0 } else { 1.0 })
                        .collect(),
                ),
                ..d.clone()
            }
        })
        .collect()
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let model = warmed_model();
    let mut data = random_batch(21, 2, 12);
    data[1].weights = Some((0..12).map(|t| (t % 4) as f32 * 0.5).collect());
    check_gradients(&model, &data, &LossFn::CrossEntropy);
}

#[test]
fn importance_sampling_gradient_matches_finite_differences() {
    let model = warmed_model();
    let data = rl_data(&model, &random_batch(22, 2, 12), &[0.3, -0.2, 0.1, 0.0]);
    check_gradients(&model, &data, &LossFn::ImportanceSampling);
}

#[test]
fn ppo_gradient_matches_finite_differences_with_clipping() {
    let model = warmed_model();
    // Ratios exp(-shift): 1.82, 1.11, 0.90, 0.55 against clip range [0.8, 1.2].
    let data = rl_data(&model, &random_batch(23, 2, 12), &[-0.6, -0.1, 0.1, 0.6]);
    let mut probe = model.clone();
    let out = probe
        .forward_backward(&data, &LossFn::ppo_default(), true)
        .unwrap();
    let clipped = data
        .iter()
        .zip(&out.outputs)
        .flat_map(|(d, o)| (0..d.tokens.len()).map(move |t| (d, o, t)))
        .filter(|(d, o, t)| {
            let adv = d.advantages.as_ref().unwrap()[*t];
            let ratio = (o.logprobs[*t] - d.sampling_logprobs.as_ref().unwrap()[*t]).exp();
            (adv > 0.0 && ratio > 1.2) || (adv < 0.0 && ratio < 0.8)
        })
        .count();
    assert!(clipped >= 4, "only {clipped} clipped positions");
    check_gradients(&model, &data, &LossFn::ppo_default());
    let wide = LossFn::Ppo {
        clip_low: 0.1,
        clip_high: 10.0,
    };
    check_gradients(&model, &data, &wide);
}

#[test]
fn ppo_without_clipping_equals_importance_sampling() {
    let model = warmed_model();
    let data = rl_data(&model, &random_batch(24, 1, 10), &[0.05, -0.05]);
    let mut a = model.clone();
    let mut b = model.clone();
    let la = a
        .forward_backward(&data, &LossFn::ppo_default(), false)
        .unwrap();
    let lb = b
        .forward_backward(&data, &LossFn::ImportanceSampling, false)
        .unwrap();
    assert!((la.loss_sum - lb.loss_sum).abs() < 1e-9);
    assert_eq!(flat_grads(&a), flat_grads(&b));
}

#[test]
fn gradients_accumulate_across_calls() {
    let model = warmed_model();
    let data = random_batch(25, 2, 10);
    let mut split = model.clone();
    split
        .forward_backward(&data[..1], &LossFn::CrossEntropy, false)
        .unwrap();
    split
        .forward_backward(&data[1..], &LossFn::CrossEntropy, false)
        .unwrap();
    let mut joint = model.clone();
    joint
        .forward_backward(&data, &LossFn::CrossEntropy, false)
        .unwrap();
    for (s, j) in split.grads.mats.iter().zip(&joint.grads.mats) {
        for (x, y) in s.iter().zip(j) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()));
        }
    }
}

#[test]
fn forward_only_changes_nothing() {
    let mut model = warmed_model();
    let before = model.to_bytes(true);
    let data = random_batch(26, 3, 20);
    let fwd = model
        .forward_backward(&data, &LossFn::CrossEntropy, true)
        .unwrap();
    assert!(model.grads.mats.iter().all(|g| g.iter().all(|&x| x == 0.0)));
    model.optim_step(&adam(1e-3)).unwrap();
    assert_eq!(model.grads.mats, TinyModel::new(config(3)).grads.mats);
    let mut reference = TinyModel::from_bytes(&before).unwrap();
    reference.optim_step(&adam(1e-3)).unwrap();
    assert!(model.to_bytes(true) == reference.to_bytes(true));
    let again = reference
        .forward_backward(&data, &LossFn::CrossEntropy, true)
        .unwrap();
    assert_eq!(fwd.outputs.len(), again.outputs.len());
}

#[test]
fn outputs_are_consistent() {
    let mut model = warmed_model();
    let data = random_batch(27, 2, 9);
    let out = model
        .forward_backward(&data, &LossFn::CrossEntropy, true)
        .unwrap();
    let sum: f64 = out
        .outputs
        .iter()
        .flat_map(|o| o.elementwise_loss.iter().map(|&l| f64::from(l)))
        .sum();
    assert!((sum - out.loss_sum).abs() < 1e-4);
    for (d, o) in data.iter().zip(&out.outputs) {
        assert_eq!(o.logprobs.len(), 9);
        assert!(o.logprobs.iter().all(|&lp| lp < 0.0));
        let mut prompt = d.tokens.clone();
        prompt.push(*d.target_tokens.last().unwrap());
        let scored = model.prompt_logprobs(&prompt);
        assert_eq!(scored.len(), 10);
        assert_eq!(scored[0], None);
        for t in 0..9 {
            assert_eq!(scored[t + 1], Some(o.logprobs[t]));
        }
    }
}

// ---------------------------------------------------------------- optimizer

fn adapters(model: &TinyModel, index: usize) -> (Vec<f32>, Vec<f32>) {
    let mat = &model.net.mats[index];
    (mat.a.clone(), mat.b.clone())
}

#[test]
fn weight_decay_is_decoupled_and_respects_frozen_groups() {
    let mut model = TinyModel::new(ModelConfig {
        train_mlp: false,
        ..config(4)
    });
    let before: Vec<_> = (0..MATRICES).map(|i| adapters(&model, i)).collect();
    let params = AdamParams {
        learning_rate: 0.01,
        weight_decay: 0.5,
        ..adam(0.01)
    };
    model.optim_step(&params).unwrap();
    for (i, (a, _)) in before.iter().enumerate() {
        let (a_now, _) = adapters(&model, i);
        let factor = if i == network::W_IN { 1.0 } else { 1.0 - 0.005 };
        for (x, y) in a.iter().zip(&a_now) {
            assert!((x * factor - y).abs() <= 1e-7, "matrix {i}: {x} -> {y}");
        }
    }
}

#[test]
fn frozen_groups_keep_their_weights() {
    let mut model = TinyModel::new(ModelConfig {
        train_unembed: false,
        train_attn: false,
        ..config(5)
    });
    let before: Vec<_> = (0..MATRICES).map(|i| adapters(&model, i)).collect();
    let data = random_batch(30, 2, 16);
    for _ in 0..3 {
        model
            .forward_backward(&data, &LossFn::CrossEntropy, false)
            .unwrap();
        model.optim_step(&adam(1e-3)).unwrap();
    }
    for (i, b) in before.iter().enumerate() {
        let changed = adapters(&model, i) != *b;
        assert_eq!(changed, i == network::W_IN, "matrix {i}");
    }
}

fn first_moment_norm(model: &TinyModel) -> f64 {
    model
        .moments
        .iter()
        .flatten()
        .map(|m| math::sum_sq(&m.m))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn grad_clipping_caps_the_global_norm() {
    let data = random_batch(31, 2, 16);
    let mut free = TinyModel::new(config(6));
    free.forward_backward(&data, &LossFn::CrossEntropy, false)
        .unwrap();
    let metrics = free.optim_step(&adam(1e-3)).unwrap();
    let norm = metrics["grad_norm:mean"];
    assert!(norm > 0.0);
    assert_eq!(metrics["lr:mean"], 1e-3);
    assert_eq!(metrics["step:max"], 1.0);
    assert!((first_moment_norm(&free) - 0.1 * norm).abs() < 1e-3 * norm);

    let mut clipped = TinyModel::new(config(6));
    clipped
        .forward_backward(&data, &LossFn::CrossEntropy, false)
        .unwrap();
    let clip = norm / 10.0;
    let params = AdamParams {
        grad_clip_norm: clip,
        ..adam(1e-3)
    };
    let metrics = clipped.optim_step(&params).unwrap();
    assert!((metrics["grad_norm:mean"] - norm).abs() < 1e-6 * norm);
    assert!((first_moment_norm(&clipped) - 0.1 * clip).abs() < 1e-3 * clip);
}

#[test]
fn invalid_adam_params_are_rejected() {
    let mut model = TinyModel::new(config(1));
    let bad = AdamParams {
        beta2: 1.0,
        ..adam(1e-3)
    };
    let err = model.optim_step(&bad).unwrap_err().to_string();
    assert!(err.contains("beta2"), "{err}");
    let bad = AdamParams {
        learning_rate: f64::NAN,
        ..adam(1e-3)
    };
    assert!(model.optim_step(&bad).is_err());
    assert_eq!(model.optimizer_steps(), 0);
}

// ------------------------------------------------------------- determinism

#[test]
fn same_seed_same_model_and_samples() {
    let a = TinyModel::new(config(42));
    let b = TinyModel::new(config(42));
    assert!(a.to_bytes(true) == b.to_bytes(true));
    let other = TinyModel::new(config(43));
    assert!(a.to_bytes(true) != other.to_bytes(true));
    // B = 0 at init: every seed starts as the same base model.
    let prompt = [151_644, 872, 198, 9707];
    assert_eq!(a.prompt_logprobs(&prompt), other.prompt_logprobs(&prompt));
    let renamed = TinyModel::new(ModelConfig {
        base_model: "meta-llama/Llama-3.1-8B".into(),
        ..config(42)
    });
    assert_ne!(a.prompt_logprobs(&prompt), renamed.prompt_logprobs(&prompt));

    let params = SampleParams {
        max_tokens: 20,
        seed: Some(9),
        ..Default::default()
    };
    let sa = a.sample(&prompt, &params, 3);
    assert_eq!(sa, b.sample(&prompt, &params, 3));
    assert_ne!(sa[0].tokens, sa[1].tokens);
    let reseeded = SampleParams {
        seed: Some(10),
        ..params.clone()
    };
    assert_ne!(sa, a.sample(&prompt, &reseeded, 3));
}

#[test]
fn training_is_deterministic() {
    let run = || {
        let mut model = TinyModel::new(config(8));
        let data = random_batch(8, 2, 20);
        for _ in 0..3 {
            model
                .forward_backward(&data, &LossFn::CrossEntropy, false)
                .unwrap();
            model.optim_step(&adam(1e-3)).unwrap();
        }
        model.to_bytes(true)
    };
    assert!(run() == run());
}

// -------------------------------------------------------------------- codec

#[test]
fn checkpoint_round_trips_with_optimizer() {
    let mut model = warmed_model();
    let bytes = model.to_bytes(true);
    let mut loaded = TinyModel::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(loaded.optimizer_steps(), 3);
    assert!(loaded.has_optimizer_state());
    assert!(loaded.to_bytes(true) == bytes);
    let data = random_batch(40, 2, 10);
    for m in [&mut model, &mut loaded] {
        m.forward_backward(&data, &LossFn::CrossEntropy, false)
            .unwrap();
        m.optim_step(&adam(1e-3)).unwrap();
    }
    assert!(loaded.to_bytes(true) == model.to_bytes(true));
}

#[test]
fn checkpoint_round_trips_without_optimizer() {
    let model = warmed_model();
    let bytes = model.to_bytes(false);
    assert!(bytes.len() < model.to_bytes(true).len());
    let mut loaded = TinyModel::from_bytes(&bytes).unwrap();
    assert_eq!(loaded.optimizer_steps(), 0);
    assert!(!loaded.has_optimizer_state());
    assert!(loaded
        .moments
        .iter()
        .flatten()
        .all(|m| m.m.iter().all(|&x| x == 0.0)));
    let prompt = [100_123, 120_000, 150_000, 7];
    assert_eq!(
        loaded.prompt_logprobs(&prompt),
        model.prompt_logprobs(&prompt)
    );
    let params = SampleParams {
        seed: Some(1),
        ..Default::default()
    };
    assert_eq!(
        loaded.sample(&prompt, &params, 2),
        model.sample(&prompt, &params, 2)
    );
    loaded.optim_step(&adam(1e-3)).unwrap();
    assert!(loaded.has_optimizer_state());
    assert_eq!(loaded.optimizer_steps(), 1);
}

#[test]
fn damaged_checkpoints_are_corrupt() {
    let bytes = warmed_model().to_bytes(true);
    for len in [0, 5, 8, 20, 27, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = TinyModel::from_bytes(&bytes[..len]).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt(_)), "{len}: {err}");
    }
    let err = TinyModel::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut garbled = bytes.clone();
    garbled[bytes.len() / 2] ^= 0x40;
    let err = TinyModel::from_bytes(&garbled).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let mut foreign = bytes.clone();
    foreign[0] = b'X';
    let err = TinyModel::from_bytes(&foreign).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    let mut longer = bytes;
    longer.push(0);
    assert!(TinyModel::from_bytes(&longer).is_err());
}

// ----------------------------------------------------------------- sampling

fn seeded(max_tokens: usize, seed: u64) -> SampleParams {
    SampleParams {
        max_tokens,
        seed: Some(seed),
        ..Default::default()
    }
}

#[test]
fn sampling_honours_max_tokens_and_num_samples() {
    let model = warmed_model();
    let out = model.sample(&[100_001, 100_002], &seeded(13, 1), 4);
    assert_eq!(out.len(), 4);
    for s in &out {
        assert_eq!(s.tokens.len(), 13);
        assert_eq!(s.logprobs.len(), 13);
        assert!(!s.stopped);
    }
    assert!(model
        .sample(&[1], &seeded(0, 1), 2)
        .iter()
        .all(|s| s.tokens.is_empty()));
    assert!(model.sample(&[1], &seeded(5, 1), 0).is_empty());
    assert_eq!(model.sample(&[], &seeded(5, 1), 1)[0].tokens.len(), 5);
}

#[test]
fn sampled_logprobs_match_training_logprobs() {
    let mut model = warmed_model();
    let prompt = vec![100_001, 130_000, 42];
    let params = SampleParams {
        temperature: 0.7,
        top_p: 0.9,
        ..seeded(12, 3)
    };
    let sample = model.sample(&prompt, &params, 1).remove(0);
    let full: Vec<i64> = prompt.iter().chain(&sample.tokens).copied().collect();
    let datum = DatumInput {
        tokens: full[..full.len() - 1].to_vec(),
        target_tokens: full[1..].to_vec(),
        ..Default::default()
    };
    let out = model
        .forward_backward(&[datum], &LossFn::CrossEntropy, true)
        .unwrap();
    assert_eq!(
        &out.outputs[0].logprobs[prompt.len() - 1..],
        &sample.logprobs[..]
    );
}

#[test]
fn top_k_one_is_greedy() {
    let model = warmed_model();
    let prompt = [100_500, 101_000];
    let params = SampleParams {
        top_k: 1,
        ..seeded(6, 5)
    };
    let greedy = model.sample(&prompt, &params, 2);
    assert_eq!(greedy[0], greedy[1]);
    let zero_temp = SampleParams {
        temperature: 0.0,
        ..seeded(6, 6)
    };
    assert_eq!(model.sample(&prompt, &zero_temp, 1)[0], greedy[0]);
    let mut context = prompt.to_vec();
    for (&token, &lp) in greedy[0].tokens.iter().zip(&greedy[0].logprobs) {
        context.push(0);
        let top = model.topk_prompt_logprobs(&context, 3);
        let last = top.last().unwrap();
        assert_eq!(last.len(), 3);
        assert!(last[0].1 >= last[1].1 && last[1].1 >= last[2].1);
        assert_eq!(last[0], (token, lp));
        *context.last_mut().unwrap() = token;
    }
    assert!(model.topk_prompt_logprobs(&context, 3)[0].is_empty());
}

/// An unconstrained seeded sample long enough to contain ASCII bytes.
fn long_sample(model: &TinyModel) -> (SampleParams, SampledSequence) {
    let params = seeded(60, 77);
    let sample = model.sample(&[100_000], &params, 1).remove(0);
    (params, sample)
}

#[test]
fn stop_tokens_end_the_sequence() {
    let model = warmed_model();
    let (params, full) = long_sample(&model);
    let stop = full.tokens[4];
    let cut = full.tokens.iter().position(|&t| t == stop).unwrap();
    let params = SampleParams {
        stop_tokens: vec![-5, stop],
        ..params
    };
    let out = model.sample(&[100_000], &params, 1).remove(0);
    assert!(out.stopped);
    assert_eq!(out.tokens, full.tokens[..=cut]);
    assert_eq!(out.logprobs, full.logprobs[..=cut]);
}

#[test]
fn stop_strings_match_token_bytes() {
    let model = warmed_model();
    let (params, full) = long_sample(&model);
    let bytes: Vec<u8> = full.tokens.iter().map(|&t| bucket(t) as u8).collect();
    let end = (1..bytes.len())
        .find(|&i| bytes[i - 1].is_ascii() && bytes[i].is_ascii())
        .expect("two ASCII bytes in a row");
    let stop = String::from_utf8(bytes[end - 1..=end].to_vec()).unwrap();
    let params = SampleParams {
        stop_strings: vec![String::new(), stop.clone()],
        ..params
    };
    let out = model.sample(&[100_000], &params, 1).remove(0);
    assert!(out.stopped);
    let cut = bytes.windows(2).position(|w| w == stop.as_bytes()).unwrap() + 1;
    assert_eq!(out.tokens, full.tokens[..=cut]);
}

#[test]
fn trained_model_samples_original_token_ids() {
    let mut model = TinyModel::new(config(12));
    let seq: Vec<i64> = (0..24).map(|i| 151_644 + 7 * i).collect();
    let datum = DatumInput {
        tokens: seq[..23].to_vec(),
        target_tokens: seq[1..].to_vec(),
        ..Default::default()
    };
    for _ in 0..40 {
        model
            .forward_backward(std::slice::from_ref(&datum), &LossFn::CrossEntropy, false)
            .unwrap();
        model.optim_step(&adam(3e-3)).unwrap();
    }
    let params = SampleParams {
        temperature: 0.0,
        ..seeded(10, 0)
    };
    let out = model.sample(&seq[..4], &params, 1).remove(0);
    assert_eq!(out.tokens, seq[4..14]);
}

// --------------------------------------------------------------- validation

fn error_of(data: &[DatumInput], loss: &LossFn) -> String {
    let mut model = TinyModel::new(config(1));
    let before = model.to_bytes(true);
    let err = model.forward_backward(data, loss, false).unwrap_err();
    assert!(matches!(err, ModelError::InvalidInput(_)));
    assert!(
        model.to_bytes(true) == before,
        "failed call changed the model"
    );
    err.to_string()
}

#[test]
fn validation_errors_are_clear() {
    let good = random_batch(50, 4, 6);
    assert!(error_of(&[], &LossFn::CrossEntropy).contains("at least one datum"));

    let mut data = good.clone();
    data[2].target_tokens.pop();
    let err = error_of(&data, &LossFn::CrossEntropy);
    assert!(
        err.contains("datum 2") && err.contains("target_tokens"),
        "{err}"
    );

    let mut data = good.clone();
    data[1].weights = Some(vec![1.0; 5]);
    let err = error_of(&data, &LossFn::CrossEntropy);
    assert!(err.contains("datum 1") && err.contains("weights"), "{err}");

    let mut data = good.clone();
    data[0].weights = Some(vec![1.0, 1.0, f32::NAN, 1.0, 1.0, 1.0]);
    let err = error_of(&data, &LossFn::CrossEntropy);
    assert!(
        err.contains("[\"weights\"][2]") && err.contains("finite"),
        "{err}"
    );

    let mut data = good.clone();
    for d in &mut data {
        d.sampling_logprobs = Some(vec![-1.0; 6]);
        d.advantages = Some(vec![1.0; 6]);
    }
    data[3].advantages = None;
    let err = error_of(&data, &LossFn::ImportanceSampling);
    assert!(
        err.contains(
            "loss_fn importance_sampling requires loss_fn_inputs[\"advantages\"] (datum 3)"
        ),
        "{err}"
    );
    data[3].advantages = Some(vec![1.0; 6]);
    data[0].sampling_logprobs = None;
    let err = error_of(&data, &LossFn::ppo_default());
    assert!(
        err.contains("ppo requires loss_fn_inputs[\"logprobs\"] (datum 0)"),
        "{err}"
    );

    let mut data = good;
    data[0].tokens.clear();
    data[0].target_tokens.clear();
    assert!(error_of(&data, &LossFn::CrossEntropy).contains("datum 0"));
    let bad_clip = LossFn::Ppo {
        clip_low: 1.5,
        clip_high: 1.2,
    };
    assert!(error_of(&random_batch(1, 1, 3), &bad_clip).contains("clip"));
}

#[test]
fn prompt_logprobs_shape() {
    let model = TinyModel::new(config(2));
    assert!(model.prompt_logprobs(&[]).is_empty());
    assert_eq!(model.prompt_logprobs(&[5]), vec![None]);
    let lps = model.prompt_logprobs(&[5, 151_644, 9, 9]);
    assert_eq!(lps.len(), 4);
    assert_eq!(lps[0], None);
    assert!(lps[1..].iter().all(|lp| lp.is_some_and(|v| v < 0.0)));
}

#[test]
fn buckets_are_stable_and_spread() {
    assert_eq!(bucket(7), 7);
    assert_eq!(bucket(255), 255);
    // Ids outside the vocabulary hash to pinned buckets: saved checkpoints store the
    // vocabulary map by bucket, so a change of the hash (or its seed) must fail here.
    let pinned = [
        (256, 113),
        (100_000, 126),
        (151_644, 229),
        (151_645, 38),
        (-1, 1),
        (i64::MAX, 172),
    ];
    for (token, expected) in pinned {
        assert_eq!(bucket(token), expected, "bucket({token})");
    }
    let mut counts = [0usize; VOCAB];
    for t in 100_000..160_000 {
        counts[bucket(t)] += 1;
    }
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(*lo > 150 && *hi < 320, "{lo}..{hi}");
}

#[test]
fn top_k_and_top_p_restrict_the_candidates() {
    let model = warmed_model();
    let prompt = vec![100_777, 150_001];
    let params = SampleParams {
        top_k: 2,
        temperature: 5.0,
        ..seeded(30, 8)
    };
    let sample = model.sample(&prompt, &params, 1).remove(0);
    let mut context = prompt.clone();
    for &token in &sample.tokens {
        context.push(token);
        let top = model.topk_prompt_logprobs(&context, 2);
        let allowed: Vec<i64> = top.last().unwrap().iter().map(|&(t, _)| t).collect();
        assert!(allowed.contains(&token), "{token} not in {allowed:?}");
    }
    let tiny_p = SampleParams {
        top_p: 1e-6,
        ..seeded(30, 9)
    };
    let greedy = SampleParams {
        top_k: 1,
        ..seeded(30, 10)
    };
    assert_eq!(
        model.sample(&prompt, &tiny_p, 1)[0].tokens,
        model.sample(&prompt, &greedy, 1)[0].tokens
    );
}

#[test]
fn vocab_map_remembers_weighted_targets_only() {
    let mut model = TinyModel::new(config(13));
    let datum = DatumInput {
        tokens: vec![1, 2],
        target_tokens: vec![151_644, 151_645],
        weights: Some(vec![1.0, 0.0]),
        ..Default::default()
    };
    model
        .forward_backward(std::slice::from_ref(&datum), &LossFn::CrossEntropy, true)
        .unwrap();
    assert!(
        model.vocab_map.iter().all(Option::is_none),
        "forward_only must not learn ids"
    );
    model
        .forward_backward(&[datum], &LossFn::CrossEntropy, false)
        .unwrap();
    assert_eq!(model.vocab_map[bucket(151_644)], Some(151_644));
    // The two ids fall in different buckets (pinned in `buckets_are_stable_and_spread`),
    // so the weight-0 target must not have been learned.
    assert_ne!(bucket(151_645), bucket(151_644));
    assert_eq!(model.vocab_map[bucket(151_645)], None);
    let loaded = TinyModel::from_bytes(&model.to_bytes(false)).unwrap();
    assert_eq!(loaded.vocab_map, model.vocab_map);
}

#[test]
fn overflowing_importance_ratios_do_not_corrupt_the_weights() {
    let mut model = warmed_model();
    let before: Vec<_> = (0..MATRICES).map(|i| adapters(&model, i)).collect();
    let mut data = random_batch(60, 1, 4);
    data[0].sampling_logprobs = Some(vec![-1e30; 4]);
    data[0].advantages = Some(vec![1.0; 4]);
    let out = model
        .forward_backward(&data, &LossFn::ImportanceSampling, false)
        .unwrap();
    assert!(!out.loss_sum.is_finite());
    let err = model.optim_step(&adam(1e-3)).unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    assert!((0..MATRICES).all(|i| adapters(&model, i) == before[i]));
    assert_eq!(model.optimizer_steps(), 3);
    assert!(model.grads.mats.iter().all(|g| g.iter().all(|&x| x == 0.0)));
}

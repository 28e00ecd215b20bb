//! Label words of several tokens on the real SmolLM2-135M-Instruct: the whole-word score (first
//! token at the answer position, the rest from a continuation pass on the prompt's keys and
//! values) against a direct log-probability of each full sequence; training's verbalizer loss
//! through the same score; and greedy generation on the KV cache against decoding without one.

use candle_core::{D, DType, Device, IndexOp, Tensor};
use wick::config::{Config, PromptConfig};
use wick::model::{Batch, LoadedModel};
use wick::prompt::{PromptTokens, Prompter};
use wick::score::{Head, ScoreOptions, score};
use wick::train::{TrainLoss, batches::Encoded, micro_batch_loss};

const GGUF: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

fn load() -> LoadedModel {
    wick::model::load(GGUF, DType::F32, &Device::Cpu).expect("run scripts/fetch-assets first")
}

/// Three review sites with words of 2, 2 and 3 tokens; " a movie" and " a restaurant" share their
/// first token, so a first-token score could not tell them apart.
fn site_prompt(norm: &str) -> (PromptConfig, Vec<String>) {
    let labels: Vec<String> = ["movie", "restaurant", "shop"].iter().map(|s| s.to_string()).collect();
    let text = format!(
        r#"
[data]
path = "unused.jsonl"
labels = ["movie", "restaurant", "shop"]
[prompt]
template = "Which website is this review from?\nReview: {{text}}"
answer_prefix = "It is a review of"
label_norm = "{norm}"
label_words = {{ movie = " a movie", restaurant = " a restaurant", shop = " an online shop" }}
"#
    );
    (Config::parse(&text).unwrap().prompt, labels)
}

/// log p(word | prompt) by running prompt + word in one forward and summing its tokens.
fn direct_logprob(loaded: &LoadedModel, prompt: &[u32], word: &[u32]) -> f32 {
    let ids = [prompt, word].concat();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let hidden = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false).unwrap();
    let logits = loaded.model.logits(&hidden.i(0).unwrap()).unwrap();
    let logp = wick::ops::log_softmax_last_dim(&logits).unwrap();
    word.iter().enumerate().map(|(j, &tok)| logp.i((prompt.len() + j - 1, tok as usize)).unwrap().to_scalar::<f32>().unwrap()).sum()
}

const TEXTS: [&str; 4] = [
    "The pho was cold and the waiter never came back.",
    "The battery died after two days and the seller ignored my emails.",
    "A slow, aimless film with one great performance.",
    "Great.",
];

#[test]
fn multi_token_words_score_their_full_sequence_log_probability() {
    let loaded = load();
    for norm in ["sum", "mean"] {
        let (cfg, labels) = site_prompt(norm);
        let prompter = Prompter::new(&cfg, &labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None).unwrap();
        let words = prompter.label_tokens().clone();
        assert_eq!(words.seqs.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 3], "{:?}", words.seqs);
        assert_eq!(words.seqs[0][0], words.seqs[1][0], "the first two words share their first token");
        let prompts: Vec<PromptTokens> = TEXTS.iter().map(|t| prompter.tokens(t, &[]).unwrap()).collect();
        for (prefix_cache, batch_size) in [(true, 3), (false, 1), (false, 4)] {
            let opts = ScoreOptions { batch_size, max_len: usize::MAX, prefix_cache };
            let scored = score(&loaded.model, &words, &prompts, opts).unwrap();
            let mut worst = 0f32;
            for (p, s) in prompts.iter().zip(&scored) {
                for (j, seq) in words.seqs.iter().enumerate() {
                    let direct = direct_logprob(&loaded, &p.full(), seq);
                    let want = if norm == "mean" { direct / seq.len() as f32 } else { direct };
                    worst = worst.max((s.label_logprobs[j] - want).abs());
                }
            }
            println!("{norm}, prefix cache {prefix_cache}, batch {batch_size}: max |whole-word score − direct| = {worst:.2e}");
            assert!(worst < 1e-4, "{norm} {prefix_cache} {batch_size}: {worst}");
        }
    }
}

#[test]
fn the_verbalizer_loss_of_multi_token_words_is_the_cross_entropy_of_the_same_scores() {
    let loaded = load();
    let (cfg, labels) = site_prompt("sum");
    let prompter = Prompter::new(&cfg, &labels, &loaded.tokenizer, loaded.chat_template.as_deref(), None).unwrap();
    let words = prompter.label_tokens().clone();
    let items: Vec<Encoded> =
        TEXTS.iter().zip([1usize, 2, 0, 1]).map(|(t, label)| Encoded { prompt: prompter.tokens(t, &[]).unwrap(), label }).collect();
    let refs: Vec<&Encoded> = items.iter().collect();
    let (loss, _) = micro_batch_loss(&loaded.model, Head::Verbalizer(&words), TrainLoss::LabelWords, &refs, refs.len()).unwrap();
    let mut want = 0f64;
    for item in &items {
        let scores: Vec<f64> = words.seqs.iter().map(|s| direct_logprob(&loaded, &item.prompt.full(), s) as f64).collect();
        let lse = scores.iter().map(|s| s.exp()).sum::<f64>().ln();
        want += -(scores[item.label] - lse) / items.len() as f64;
    }
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    println!("verbalizer loss {got:.6}, from direct log-probabilities {want:.6}");
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    // And the gradient reaches the adapters through the continuation pass.
    let mut loaded = loaded;
    loaded.model.add_lora(&["q_proj".into(), "v_proj".into()], 4, 2.0, 0.0, 5).unwrap();
    for (name, var) in loaded.model.lora_vars() {
        if name.ends_with("lora_B.weight") {
            var.set(&Tensor::randn(0f32, 0.02, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let (loss, _) = micro_batch_loss(&loaded.model, Head::Verbalizer(&words), TrainLoss::LabelWords, &refs, refs.len()).unwrap();
    let grads = loaded.model.backward(&loss).unwrap();
    let vars = loaded.model.lora_vars();
    assert!(vars.iter().all(|(_, v)| grads.get(v.as_tensor()).is_some()), "every adapter tensor gets a gradient");
}

#[test]
fn greedy_generation_on_the_kv_cache_equals_decoding_without_one_and_stops() {
    let loaded = load();
    let im_end = loaded.tokenizer.token_to_id("<|im_end|>").unwrap();
    let chat = "<|im_start|>user\nName three colours, briefly.<|im_end|>\n<|im_start|>assistant\n";
    let prompt = loaded.tokenizer.encode(chat, false).unwrap().get_ids().to_vec();
    // Without a cache: the whole sequence again for every token.
    let mut ids = prompt.clone();
    let mut plain = Vec::new();
    for _ in 0..24 {
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let hidden = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false).unwrap();
        let next =
            loaded.model.logits(&hidden.i((0, ids.len() - 1)).unwrap()).unwrap().argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
        if next == im_end {
            break;
        }
        ids.push(next);
        plain.push(next);
    }
    let cached = loaded.model.generate_greedy(&prompt, 24, &[im_end]).unwrap();
    println!("generated {} tokens: {:?}", cached.len(), loaded.tokenizer.decode(&cached, false).unwrap());
    assert_eq!(cached, plain);
    // The limit holds, and the stop token ends generation without being returned.
    assert_eq!(loaded.model.generate_greedy(&prompt, 3, &[im_end]).unwrap(), plain[..3.min(plain.len())].to_vec());
    if plain.len() < 24 {
        assert!(!cached.contains(&im_end));
    }
}

#[test]
fn batched_greedy_generation_equals_one_prompt_at_a_time() {
    let loaded = load();
    let im_end = loaded.tokenizer.token_to_id("<|im_end|>").unwrap();
    let chat = |q: &str| format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
    let encode = |q: &str| loaded.tokenizer.encode(chat(q), false).unwrap().get_ids().to_vec();
    // Two prompts of one length and two of others: one left-padded decoding batch of four.
    let short: Vec<Vec<u32>> =
        ["Say hi.", "Say yo.", "Say hello.", "Say thanks.", "Say bye.", "Say yes.", "Say no."].iter().map(|q| encode(q)).collect();
    let (i, j) = (0..short.len())
        .flat_map(|i| (i + 1..short.len()).map(move |j| (i, j)))
        .find(|&(i, j)| short[i].len() == short[j].len())
        .expect("two short prompts of one length");
    let prompts =
        vec![short[i].clone(), short[j].clone(), encode("Name a fruit, in one word."), encode("What is two plus two? Answer briefly.")];
    for max_new in [1usize, 5, 20] {
        let batched = loaded.model.generate_greedy_batch(&prompts, max_new, &[im_end], 16).unwrap();
        for (p, b) in prompts.iter().zip(&batched) {
            let alone = loaded.model.generate_greedy(p, max_new, &[im_end]).unwrap();
            assert_eq!(b, &alone, "max_new {max_new}");
            assert!(b.len() <= max_new && !b.contains(&im_end));
        }
    }
    // Short answers end at end-of-turn well before the limit.
    let long = loaded.model.generate_greedy_batch(&prompts[..1], 60, &[im_end], 16).unwrap();
    assert!(long[0].len() < 60, "{:?}", loaded.tokenizer.decode(&long[0], false));
}

/// The answer state read off the generation's cache equals a fresh pass over prompt, reasoning
/// and tail, for rows that stop (the stop token is not fed) and rows cut at the limit (their last
/// token is), in one left-padded batch that drops rows as they finish.
#[test]
fn reading_the_answer_off_the_generation_cache_equals_a_fresh_pass() {
    let loaded = load();
    let im_end = loaded.tokenizer.token_to_id("<|im_end|>").unwrap();
    let encode = |q: &str| {
        loaded.tokenizer.encode(format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"), false).unwrap().get_ids().to_vec()
    };
    let prompts: Vec<Vec<u32>> =
        ["Say hi.", "Name a fruit, in one word.", "What is two plus two? Answer briefly.", "Describe a rainy day in a sentence or two."]
            .iter()
            .map(|q| encode(q))
            .collect();
    let tail = loaded.tokenizer.encode("\nAnswer:", false).unwrap().get_ids().to_vec();
    for max_new in [3usize, 24] {
        let Some((made, hidden)) = loaded.model.generate_then_read(&prompts, max_new, &[im_end], &tail, 16).unwrap() else {
            // No fused attention here (no single-threaded BLAS): nothing to compare.
            assert!(!wick::ops::blas::required_by_env().1, "WICK_REQUIRE_BLAS=mkl but the cached path did not apply");
            return;
        };
        assert_eq!(made, loaded.model.generate_greedy_batch(&prompts, max_new, &[im_end], 16).unwrap(), "max_new {max_new}");
        for (row, (p, m)) in prompts.iter().zip(&made).enumerate() {
            let ids = [p.as_slice(), m, &tail].concat();
            let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let fresh = loaded.model.forward_hidden(&Batch { input_ids: &input, lengths: &[ids.len()] }, None, false).unwrap();
            let fresh = fresh.i((0, ids.len() - 1)).unwrap();
            let diff = (hidden.get(row).unwrap() - fresh).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 2e-3, "max_new {max_new}, row {row}: hidden states differ by {diff}");
        }
        if max_new == 24 {
            assert!(made.iter().any(|m| m.len() < 24) && made.iter().any(|m| m.len() == 24), "want rows that stop and rows cut: {made:?}");
        }
    }
}

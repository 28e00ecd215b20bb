//! The GGUF-rebuilt tokenizer against the real SmolLM2 file, plus chat templates.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Value};
use tokenizers::Tokenizer;
use wick::tokenizer::{ChatMessage, ChatTemplate, GgufTokenizer, chat_template_from_tokenizer_config, tokenizer_from_gguf};

fn gguf_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn smol() -> &'static GgufTokenizer {
    static TOK: OnceLock<GgufTokenizer> = OnceLock::new();
    TOK.get_or_init(|| GgufTokenizer::load(&gguf_path()).expect("SmolLM2 GGUF tokenizer loads"))
}

fn gguf_tokens() -> Vec<String> {
    let mut f = std::fs::File::open(gguf_path()).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let Some(Value::Array(items)) = content.metadata.get("tokenizer.ggml.tokens") else { panic!("no tokens") };
    items.iter().map(|v| v.to_string().unwrap().clone()).collect()
}

fn ids(tok: &Tokenizer, s: &str) -> Vec<u32> {
    tok.encode(s, false).unwrap().get_ids().to_vec()
}

fn roundtrip(tok: &Tokenizer, s: &str) {
    let ids = ids(tok, s);
    assert_eq!(tok.decode(&ids, false).unwrap(), s, "round trip of {s:?} via {ids:?}");
}

#[test]
fn round_trips_text_of_every_script() {
    let tok = &smol().tokenizer;
    for s in [
        "Hello world",
        "  leading and trailing spaces  ",
        "Tabs\tand\nnewlines\r\n",
        "café, naïve, Ångström, façade",
        "日本語のテキストと中文",
        "emoji 🎉🦀 and 👩‍👩‍👧",
        "prices: 12345 and 3.14159, 2024-01-31",
        "<|im_start|>user\nHi<|im_end|>\n",
        "code: fn main() { println!(\"{}\", 42); }",
    ] {
        roundtrip(tok, s);
    }
}

#[test]
fn digits_are_split_individually() {
    let tok = &smol().tokenizer;
    let enc = tok.encode("12345", false).unwrap();
    assert_eq!(enc.get_tokens(), ["1", "2", "3", "4", "5"]);
    assert_eq!(&enc.get_ids()[..2], [33, 34]);
}

#[test]
fn special_tokens_match_gguf_ids() {
    let g = smol();
    let tokens = gguf_tokens();
    for (text, id) in [("<|endoftext|>", 0u32), ("<|im_start|>", 1), ("<|im_end|>", 2)] {
        assert_eq!(tokens[id as usize], text, "GGUF token list");
        assert_eq!(g.tokenizer.token_to_id(text), Some(id));
        assert_eq!(ids(&g.tokenizer, text), [id], "{text} must be one special token");
    }
    assert_eq!(g.special.bos, Some((1, "<|im_start|>".to_string())));
    assert_eq!(g.special.eos, Some((2, "<|im_end|>".to_string())));
    assert_eq!(g.special.pad, Some((2, "<|im_end|>".to_string())));
    assert_eq!(g.special.unk, Some((0, "<|endoftext|>".to_string())));
    assert!(!g.add_bos, "SmolLM2 does not prepend BOS");
    assert_eq!(g.tokenizer.get_vocab_size(true), 49152);
}

#[test]
fn chat_markup_encodes_with_special_ids_and_no_bos() {
    let tok = &smol().tokenizer;
    let got = ids(tok, "<|im_start|>user\nHi<|im_end|>\n");
    assert_eq!(got.first(), Some(&1));
    assert_eq!(got.iter().filter(|&&i| i == 2).count(), 1);
    assert!(got.iter().all(|&i| i != 0));
    // BOS is never added implicitly, even with add_special_tokens = true.
    assert_eq!(tok.encode("Hi", true).unwrap().get_ids(), ids(tok, "Hi"));
    // Skipping special tokens removes exactly the markup.
    assert_eq!(tok.decode(&got, true).unwrap(), "user\nHi\n");
}

#[test]
fn label_words_are_single_tokens() {
    let tok = &smol().tokenizer;
    let tokens = gguf_tokens();
    for (word, id) in [(" positive", 2731u32), (" negative", 3524)] {
        assert_eq!(ids(tok, word), [id], "{word:?}");
        assert_eq!(tokens[id as usize], word.replace(' ', "Ġ"));
    }
}

#[test]
fn hello_world_is_gpt2_style_bpe() {
    let enc = smol().tokenizer.encode("Hello world", false).unwrap();
    assert_eq!(enc.get_tokens(), ["Hello", "Ġworld"]);
    assert_eq!(enc.get_ids(), [19556, 905]);
}

#[test]
fn saved_json_reloads_with_identical_encodings() {
    let tok = &smol().tokenizer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path, false).unwrap();
    let reloaded = Tokenizer::from_file(&path).unwrap();
    for s in ["Hello world", "12345", "<|im_start|>user\nHi<|im_end|>\n", "café 日本 🎉", " positive"] {
        let a = tok.encode(s, true).unwrap();
        let b = reloaded.encode(s, true).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{s:?}");
        assert_eq!(a.get_offsets(), b.get_offsets(), "{s:?}");
        assert_eq!(reloaded.decode(b.get_ids(), false).unwrap(), s);
    }
}

#[test]
fn gguf_chat_template_renders_chatml() {
    let template = smol().chat_template().unwrap().expect("SmolLM2 GGUF has a chat template");
    let msgs = [ChatMessage::new("system", "Classify."), ChatMessage::new("user", "Great film!")];
    let out = template.render(&msgs, true).unwrap();
    assert_eq!(out, "<|im_start|>system\nClassify.<|im_end|>\n<|im_start|>user\nGreat film!<|im_end|>\n<|im_start|>assistant\n");
    let no_prompt = template.render(&msgs, false).unwrap();
    assert!(no_prompt.ends_with("<|im_end|>\n"));
    // Without a system turn the template inserts SmolLM's default one.
    let user_only = template.render(&msgs[1..], true).unwrap();
    assert!(user_only.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
}

#[test]
fn chat_template_supports_hf_idioms() {
    let src = "{% for m in messages %}{% if m['role'] == 'bad' %}{{ raise_exception('role bad is not allowed') }}{% endif %}\n\
               {{ bos_token }}[{{ loop.index }}]{{ m['content'].strip() }}{{ eos_token }}\n{% endfor %}";
    let t = ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into())).unwrap();
    let out = t.render(&[ChatMessage::new("user", "  hi  "), ChatMessage::new("assistant", "yo")], false).unwrap();
    // trim_blocks drops the newline after each block tag, as transformers' Jinja setup does.
    assert_eq!(out, "<s>[1]hi</s>\n<s>[2]yo</s>\n");
    let err = t.render(&[ChatMessage::new("bad", "x")], false).unwrap_err().to_string();
    assert!(err.contains("role bad is not allowed"), "{err}");
    let ns = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}";
    let t = ChatTemplate::new(ns, None, None).unwrap();
    assert_eq!(t.render(&[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")], false).unwrap(), "2");
    assert!(ChatTemplate::new("{% for %}", None, None).is_err());
}

#[test]
fn chat_template_from_tokenizer_config_forms() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let s = write("a.json", r#"{"chat_template": "{{ messages[0]['content'] }}"}"#);
    assert_eq!(chat_template_from_tokenizer_config(&s).unwrap().as_deref(), Some("{{ messages[0]['content'] }}"));
    let list = write("b.json", r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#);
    assert_eq!(chat_template_from_tokenizer_config(&list).unwrap().as_deref(), Some("D"));
    let none = write("c.json", r#"{"bos_token": "<s>"}"#);
    assert_eq!(chat_template_from_tokenizer_config(&none).unwrap(), None);
    let bad = write("d.json", "{not json");
    let err = chat_template_from_tokenizer_config(&bad).unwrap_err().to_string();
    assert!(err.contains("d.json"), "{err}");
}

fn write_gguf(path: &Path, metadata: &[(&str, Value)]) {
    let mut f = std::fs::File::create(path).unwrap();
    let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut f, &refs, &[]).unwrap();
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// A tiny byte-level vocabulary (all 256 byte symbols plus one merge) for synthetic GGUFs.
fn tiny_vocab(pre: &str) -> Vec<(&'static str, Value)> {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    tokens.push("he".into());
    let n = tokens.len();
    let mut types = vec![Value::I32(1); n];
    types[0] = Value::I32(3);
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strings(&["h e".to_string()])),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ]
}

#[test]
fn gguf_without_tokens_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-tokens.gguf");
    write_gguf(&path, &[("general.architecture", Value::String("llama".into())), ("tokenizer.ggml.model", Value::String("gpt2".into()))]);
    let err = GgufTokenizer::load(&path).unwrap_err().to_string();
    assert!(err.contains("no-tokens.gguf") && err.contains("tokenizer.ggml.tokens"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn unknown_pre_tokenizer_and_sentencepiece_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.gguf");
    write_gguf(&path, &tiny_vocab("mystery-pre"));
    let err = GgufTokenizer::load(&path).unwrap_err().to_string();
    assert!(err.contains("odd.gguf") && err.contains("mystery-pre"), "{err}");

    let mut spm = tiny_vocab("default");
    spm[0].1 = Value::String("llama".into());
    write_gguf(&path, &spm);
    let err = GgufTokenizer::load(&path).unwrap_err().to_string();
    assert!(err.contains("`llama`"), "{err}");
}

#[test]
fn other_pre_tokenizers_build_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for pre in ["gpt2", "default", "smollm", "starcoder", "qwen2", "llama-bpe"] {
        let path = dir.path().join(format!("{pre}.gguf"));
        write_gguf(&path, &tiny_vocab(pre));
        let mut f = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let tok = tokenizer_from_gguf(&content).unwrap();
        for s in ["hello there 12345", "Ünïcödé 日本 🎉\n\n", "<|endoftext|>he"] {
            roundtrip(&tok, s);
        }
        assert_eq!(ids(&tok, "<|endoftext|>"), [0], "{pre}");
        assert_eq!(tok.encode("he", false).unwrap().get_tokens(), ["he"], "{pre}");
    }
}

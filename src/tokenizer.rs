//! Tokenizer rebuilt from GGUF metadata, and chat templates.
//!
//! GGUF files carry the vocabulary, merges and token types but no `tokenizer.json`, so the
//! HF tokenizer is reassembled here to match what `transformers` would load for the same model.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use minijinja::{Environment, ErrorKind};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// GGUF `token_type` of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF `token_type` of user-defined tokens (matched verbatim but not special).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Split regex of Qwen2's `tokenizer.json` (single digits, letter runs with one leading symbol).
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Split regex of Llama 3's `tokenizer.json` (same as Qwen2 but digits in groups of up to 3).
const LLAMA3_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A special token's id and text.
pub type SpecialToken = (u32, String);

/// The model's special tokens, each `None` when the model does not define it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning-of-sequence token.
    pub bos: Option<SpecialToken>,
    /// End-of-sequence token (generation stops here).
    pub eos: Option<SpecialToken>,
    /// Padding token.
    pub pad: Option<SpecialToken>,
    /// Unknown-token placeholder.
    pub unk: Option<SpecialToken>,
}

/// A tokenizer rebuilt from a GGUF file, with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    /// The HF tokenizer; it never adds BOS by itself.
    pub tokenizer: Tokenizer,
    /// Special tokens named in the GGUF metadata.
    pub special: SpecialTokens,
    /// The Jinja chat template (`tokenizer.chat_template`), if any.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.add_bos_token` (false when absent): whether callers should prepend BOS.
    pub add_bos: bool,
}

impl GgufTokenizer {
    /// Read the GGUF header of `path` and rebuild its tokenizer.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let content =
            gguf_file::Content::read(&mut file).map_err(|e| Error::Model(format!("{}: not a readable GGUF file: {e}", path.display())))?;
        Self::from_content(&content, path)
    }

    /// Rebuild the tokenizer from already-read GGUF metadata; `path` is only used in errors.
    pub fn from_content(content: &gguf_file::Content, path: &Path) -> Result<Self> {
        let in_file = |e: Error| match e {
            Error::Model(m) => Error::Model(format!("{}: {m}", path.display())),
            other => other,
        };
        let tokenizer = tokenizer_from_gguf(content).map_err(in_file)?;
        let special = special_tokens_from_gguf(content).map_err(in_file)?;
        let chat_template = match content.metadata.get("tokenizer.chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let add_bos = matches!(content.metadata.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        Ok(Self { tokenizer, special, chat_template, add_bos })
    }

    /// The compiled chat template with this model's BOS/EOS, if the GGUF has one.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>> {
        let text = |t: &Option<SpecialToken>| t.as_ref().map(|(_, s)| s.clone());
        self.chat_template.as_deref().map(|src| ChatTemplate::new(src, text(&self.special.bos), text(&self.special.eos))).transpose()
    }
}

fn meta<'a>(content: &'a gguf_file::Content, key: &str) -> Option<&'a Value> {
    content.metadata.get(key)
}

fn missing(key: &str) -> Error {
    Error::Model(format!("GGUF metadata has no `{key}`; this file carries no usable tokenizer"))
}

fn string_array(content: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    let values = meta(content, key).ok_or_else(|| missing(key))?;
    let Value::Array(items) = values else {
        return Err(Error::Model(format!("GGUF metadata `{key}` is not an array")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(Error::Model(format!("GGUF metadata `{key}`[{i}] is not a string"))),
        })
        .collect()
}

/// Any GGUF integer as i64: writers disagree on the integer width of ids and token types.
fn as_int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn token_types(content: &gguf_file::Content, n_tokens: usize) -> Result<Vec<i64>> {
    let key = "tokenizer.ggml.token_type";
    let Some(value) = meta(content, key) else {
        // Without types nothing is known to be special; treat every token as normal.
        return Ok(vec![1; n_tokens]);
    };
    let Value::Array(items) = value else {
        return Err(Error::Model(format!("GGUF metadata `{key}` is not an array")));
    };
    if items.len() != n_tokens {
        return Err(Error::Model(format!("GGUF metadata `{key}` has {} entries but there are {n_tokens} tokens", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| as_int(v).ok_or_else(|| Error::Model(format!("GGUF metadata `{key}`[{i}] is not an integer"))))
        .collect()
}

/// The special tokens (`tokenizer.ggml.{bos,eos,padding,unknown}_token_id`) of a GGUF file.
pub fn special_tokens_from_gguf(content: &gguf_file::Content) -> Result<SpecialTokens> {
    let tokens = string_array(content, "tokenizer.ggml.tokens")?;
    let lookup = |name: &str| -> Option<SpecialToken> {
        let key = format!("tokenizer.ggml.{name}_token_id");
        let id = as_int(meta(content, &key)?)?;
        match usize::try_from(id).ok().and_then(|i| tokens.get(i)) {
            Some(text) => Some((id as u32, text.clone())),
            None => {
                // Some converters write placeholder ids; a bad optional id should not make the model unusable.
                tracing::warn!("GGUF metadata `{key}` = {id} is outside the vocabulary ({} tokens); ignored", tokens.len());
                None
            }
        }
    };
    Ok(SpecialTokens { bos: lookup("bos"), eos: lookup("eos"), pad: lookup("padding"), unk: lookup("unknown") })
}

/// The llama.cpp `tokenizer.ggml.pre` name whose pre-tokenizer serialises to `pre_tokenizer`
/// (a tokenizer.json's `pre_tokenizer` value), for writing GGUF.
pub fn gguf_pre_name(pre_tokenizer: &serde_json::Value) -> Option<&'static str> {
    ["smollm", "gpt2", "qwen2", "llama-bpe"]
        .into_iter()
        .find(|name| pre_tokenizer_for(name).ok().and_then(|(p, _)| serde_json::to_value(&p).ok()).is_some_and(|v| &v == pre_tokenizer))
}

/// The pre-tokenizer (and normalizer need) matching llama.cpp's `tokenizer.ggml.pre` name.
fn pre_tokenizer_for(pre: &str) -> Result<(PreTokenizerWrapper, bool)> {
    let byte_level = |use_regex: bool| ByteLevel::new(false, true, use_regex);
    let split = |pattern: &str| {
        Split::new(SplitPattern::Regex(pattern.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::Model(format!("pre-tokenizer `{pre}`: bad split regex: {e}")))
    };
    Ok(match pre {
        "gpt2" | "default" => (byte_level(true).into(), false),
        // StarCoder-family vocabularies (SmolLM, SmolLM2) split every digit before byte-level BPE.
        "smollm" | "starcoder" | "refact" => {
            let seq = Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]);
            (seq.into(), false)
        }
        "qwen2" => {
            let seq = Sequence::new(vec![split(QWEN2_PATTERN)?.into(), byte_level(false).into()]);
            (seq.into(), true)
        }
        "llama3" | "llama-bpe" => {
            let seq = Sequence::new(vec![split(LLAMA3_PATTERN)?.into(), byte_level(false).into()]);
            (seq.into(), false)
        }
        other => {
            return Err(Error::Model(format!(
                "unsupported GGUF pre-tokenizer `tokenizer.ggml.pre = {other}` \
                 (supported: smollm, starcoder, refact, gpt2, default, qwen2, llama-bpe)"
            )));
        }
    })
}

/// Build a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.*`).
pub fn tokenizer_from_gguf(content: &gguf_file::Content) -> Result<Tokenizer> {
    let model = match meta(content, "tokenizer.ggml.model") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Error::Model("GGUF metadata `tokenizer.ggml.model` is not a string".into())),
        None => return Err(missing("tokenizer.ggml.model")),
    };
    if model != "gpt2" {
        return Err(Error::Model(format!("GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)")));
    }
    let tokens = string_array(content, "tokenizer.ggml.tokens")?;
    let types = token_types(content, tokens.len())?;
    let merges = string_array(content, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok((a.to_string(), b.to_string())),
            _ => Err(Error::Model(format!("GGUF merge #{i} `{m}` is not two space-separated tokens"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let pre = match meta(content, "tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Error::Model("GGUF metadata `tokenizer.ggml.pre` is not a string".into())),
        None => {
            // Old converters omitted it; llama.cpp then falls back to the GPT-2 split.
            tracing::warn!("GGUF metadata has no `tokenizer.ggml.pre`; using the GPT-2 pre-tokenizer");
            "default".to_string()
        }
    };
    let (pre_tokenizer, nfc) = pre_tokenizer_for(&pre)?;

    let mut vocab = Vocab::default();
    for (id, tok) in tokens.iter().enumerate() {
        // Duplicated strings (padding entries in some vocabularies) keep their first id.
        vocab.entry(tok.clone()).or_insert(id as u32);
    }
    let special = special_tokens_from_gguf(content)?;
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
    if let Some((_, unk)) = &special.unk {
        builder = builder.unk_token(unk.clone());
    }
    let bpe = builder.build().map_err(|e| Error::Model(format!("GGUF vocabulary and merges do not form a BPE model: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    if nfc {
        tokenizer.with_normalizer(Some(NFC)).map_err(|e| Error::Model(format!("cannot set NFC normalizer: {e}")))?;
    }
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));

    // Special tokens must be matched before BPE sees the text, or `<|im_start|>` would be split.
    let named: Vec<&str> =
        [&special.bos, &special.eos, &special.pad, &special.unk].into_iter().flatten().map(|(_, s)| s.as_str()).collect();
    let mut specials = Vec::new();
    let mut user_defined = Vec::new();
    for (tok, ty) in tokens.iter().zip(&types) {
        if *ty == TOKEN_TYPE_CONTROL || named.contains(&tok.as_str()) {
            specials.push(AddedToken::from(tok.clone(), true));
        } else if *ty == TOKEN_TYPE_USER_DEFINED {
            user_defined.push(AddedToken::from(tok.clone(), false).normalized(false));
        }
    }
    tokenizer.add_special_tokens(specials).map_err(|e| Error::Model(format!("cannot register GGUF control tokens: {e}")))?;
    tokenizer.add_tokens(user_defined).map_err(|e| Error::Model(format!("cannot register GGUF user-defined tokens: {e}")))?;
    Ok(tokenizer)
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A compiled HF Jinja chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compile `source` the way `transformers` does (trim_blocks, lstrip_blocks, Python string methods).
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Model(format!("chat template: {e}")))?;
        env.set_syntax(syntax);
        // HF templates call `.strip()`, `.startswith()`, `.items()` etc. as in Python.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| Error::Model(format!("chat template does not compile: {e}")))?;
        Ok(Self { env, bos_token: bos_token.unwrap_or_default(), eos_token: eos_token.unwrap_or_default() })
    }

    /// Render `messages` to the model's prompt text; `add_generation_prompt` opens the assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                let mut map = BTreeMap::new();
                map.insert("role", minijinja::Value::from(m.role.as_str()));
                map.insert("content", minijinja::Value::from(m.content.as_str()));
                minijinja::Value::from(map)
            })
            .collect();
        let mut ctx = BTreeMap::new();
        ctx.insert("messages", minijinja::Value::from(messages));
        ctx.insert("add_generation_prompt", minijinja::Value::from(add_generation_prompt));
        ctx.insert("bos_token", minijinja::Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token", minijinja::Value::from(self.eos_token.as_str()));
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| Error::Model(format!("chat template: {e}")))?;
        template.render(minijinja::Value::from(ctx)).map_err(|e| Error::Model(format!("chat template failed to render: {e}")))
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", path.display())))
}

/// The `chat_template` of an HF `tokenizer_config.json` (string form, or the `default` entry of the list form).
pub fn chat_template_from_tokenizer_config(path: &Path) -> Result<Option<String>> {
    let json = read_json(path)?;
    match json.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(items)) => {
            let template_of = |item: &serde_json::Value| item.get("template").and_then(|t| t.as_str()).map(String::from);
            let default = items.iter().find(|i| i.get("name").and_then(|n| n.as_str()) == Some("default"));
            match default.or(items.first()).and_then(template_of) {
                Some(t) => Ok(Some(t)),
                None => Err(Error::Model(format!("{}: `chat_template` list has no entry with a `template` string", path.display()))),
            }
        }
        Some(_) => Err(Error::Model(format!("{}: `chat_template` is neither a string nor a list", path.display()))),
    }
}

/// BOS/EOS/PAD/UNK of an HF `tokenizer_config.json`, with ids looked up in `tokenizer`.
pub fn special_tokens_from_tokenizer_config(path: &Path, tokenizer: &Tokenizer) -> Result<SpecialTokens> {
    let json = read_json(path)?;
    let lookup = |key: &str| -> Option<SpecialToken> {
        // Either "<s>" or {"content": "<s>", ...} (AddedToken form).
        let text = match json.get(key)? {
            serde_json::Value::String(s) => s.clone(),
            obj => obj.get("content")?.as_str()?.to_string(),
        };
        Some((tokenizer.token_to_id(&text)?, text))
    };
    Ok(SpecialTokens { bos: lookup("bos_token"), eos: lookup("eos_token"), pad: lookup("pad_token"), unk: lookup("unk_token") })
}

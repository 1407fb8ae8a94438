//! `tokenize(text, tokenizer [, add_eos [, add_bos]])` and `token_count(text, tokenizer)`.
//!
//! The tokenizer is a Hugging Face `tokenizer.json` or a `.gguf` model whose vocabulary is
//! used, named by a constant path; it is loaded once per process. Texts are encoded without
//! the tokenizer's own special tokens (no `[CLS]`, no BOS template), as trainers' preprocessors
//! do; `add_eos` appends the end-of-document token and `add_bos` puts the start token first:
//! `true` finds it among the usual names (`<|endoftext|>`, `</s>`, ...), a string names it.
//! A batch is encoded on all cores.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int64Array, ListArray, StringViewArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use delt_models::tokenizer::{BOS_NAMES, EOS_NAMES, find_token, load};
use tokenizers::Tokenizer;

/// `tokenize(text, tokenizer [, add_eos [, add_bos]])`: the token ids of each text.
pub const TOKENIZE: &str = "tokenize";
/// `token_count(text, tokenizer)`: how many tokens each text is.
pub const TOKEN_COUNT: &str = "token_count";

/// A loaded tokenizer and the special tokens delt may add.
#[derive(Debug)]
pub struct DocumentTokenizer {
    path: PathBuf,
    inner: Tokenizer,
}

static LOADED: LazyLock<Mutex<HashMap<PathBuf, Arc<DocumentTokenizer>>>> =
    LazyLock::new(Default::default);

impl DocumentTokenizer {
    /// The tokenizer at `path`, loaded on first use.
    pub fn shared(path: &str) -> Result<Arc<Self>> {
        let path = PathBuf::from(path);
        if let Some(loaded) = LOADED.lock().expect("tokenizers").get(&path) {
            return Ok(Arc::clone(loaded));
        }
        let inner = load(&path).map_err(|e| {
            DataFusionError::Plan(format!(
                "{e}; give the path of a tokenizer.json or a .gguf model"
            ))
        })?;
        let loaded = Arc::new(Self {
            path: path.clone(),
            inner,
        });
        LOADED
            .lock()
            .expect("tokenizers")
            .insert(path, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Ids a token of this vocabulary can have: `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `name`, or of the first of the usual end-of-document names when `name` is
    /// `None`.
    pub fn eos(&self, name: Option<&str>) -> Result<u32> {
        let how = "the COPY option eos_token, or tokenize's add_eos argument";
        self.special("end-of-document", how, name, &EOS_NAMES)
    }

    /// The id of `name`, or of the first of the usual start-of-document names.
    pub fn bos(&self, name: Option<&str>) -> Result<u32> {
        let how = "the COPY option bos_token, or tokenize's add_bos argument";
        self.special("start-of-document", how, name, &BOS_NAMES)
    }

    /// The id of the token `name`, given with the COPY option `option`.
    pub fn token(&self, option: &str, name: &str) -> Result<u32> {
        self.special(
            "such",
            &format!("the COPY option {option}"),
            Some(name),
            &[],
        )
    }

    /// The id of `name` or of the first of `usual`; the error says `what` token is missing and
    /// `how` to name one.
    fn special(&self, what: &str, how: &str, name: Option<&str>, usual: &[&str]) -> Result<u32> {
        let found = match name {
            Some(name) => find_token(&self.inner, &[name]).map(|(_, id)| id),
            None => find_token(&self.inner, usual).map(|(_, id)| id),
        };
        found.ok_or_else(|| {
            let looked = name.map_or_else(|| usual.join(" "), str::to_string);
            DataFusionError::Plan(format!(
                "tokenizer {} has no {what} token (looked for {looked}): name one with {how}",
                self.path.display()
            ))
        })
    }

    /// Token ids of each text (no special tokens), on all cores; `None` for a NULL text.
    pub fn encode(&self, texts: &[Option<&str>]) -> Result<Vec<Option<Vec<u32>>>> {
        let present: Vec<&str> = texts.iter().flatten().copied().collect();
        let encodings = self.inner.encode_batch_fast(present, false).map_err(|e| {
            DataFusionError::Execution(format!("tokenizer {} failed: {e}", self.path.display()))
        })?;
        let mut encodings = encodings.into_iter();
        Ok(texts
            .iter()
            .map(|t| {
                t.and_then(|_| encodings.next())
                    .map(|e| e.get_ids().to_vec())
            })
            .collect())
    }
}

/// `tokenize` and `token_count`.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(TokenFunction {
            name: TOKENIZE,
            signature: Signature::variadic_any(Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(TokenFunction {
            name: TOKEN_COUNT,
            signature: Signature::any(2, Volatility::Immutable),
        }),
    ]
}

/// The type `tokenize` returns.
pub fn token_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, false)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TokenFunction {
    name: &'static str,
    signature: Signature,
}

impl TokenFunction {
    fn usage(&self) -> &'static str {
        if self.name == TOKENIZE {
            "tokenize(text, 'tokenizer.json' [, add_eos [, add_bos]])"
        } else {
            "token_count(text, 'tokenizer.json')"
        }
    }
}

impl ScalarUDFImpl for TokenFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let arity = if self.name == TOKENIZE { 2..=4 } else { 2..=2 };
        if !arity.contains(&args.len()) {
            return plan_err!(
                "{} takes {} arguments: {}",
                self.name,
                args.len(),
                self.usage()
            );
        }
        if !matches!(
            args[0],
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return plan_err!(
                "{}: the text must be a string, got {}: {}",
                self.name,
                args[0],
                self.usage()
            );
        }
        Ok(if self.name == TOKENIZE {
            token_list_type()
        } else {
            DataType::Int64
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let path = constant_string(&args.args[1], self.name, "tokenizer", self.usage())?;
        let tokenizer = DocumentTokenizer::shared(&path)?;
        let special = |i: usize, what: &str| -> Result<Option<Special>> {
            args.args
                .get(i)
                .map_or(Ok(None), |a| special_arg(a, self.name, what, self.usage()))
        };
        let eos = match special(2, "add_eos")? {
            None => None,
            Some(name) => Some(tokenizer.eos(name.as_deref())?),
        };
        let bos = match special(3, "add_bos")? {
            None => None,
            Some(name) => Some(tokenizer.bos(name.as_deref())?),
        };
        let texts = args.args[0].to_array(rows)?;
        let texts = cast(&texts, &DataType::Utf8View)?;
        let texts: &StringViewArray = texts.as_string_view();
        let texts: Vec<Option<&str>> = texts.iter().collect();
        let ids = tokenizer.encode(&texts)?;
        let result: ArrayRef = if self.name == TOKEN_COUNT {
            Arc::new(Int64Array::from_iter(
                ids.iter().map(|d| d.as_ref().map(|d| d.len() as i64)),
            ))
        } else {
            Arc::new(token_lists(&ids, bos, eos))
        };
        Ok(ColumnarValue::Array(result))
    }
}

/// A `List<UInt32>` of `bos`, the ids and `eos` of each document; NULL where the text was.
fn token_lists(ids: &[Option<Vec<u32>>], bos: Option<u32>, eos: Option<u32>) -> ListArray {
    let extra = usize::from(bos.is_some()) + usize::from(eos.is_some());
    let mut values = Vec::with_capacity(ids.iter().flatten().map(|d| d.len() + extra).sum());
    let mut lengths = Vec::with_capacity(ids.len());
    for doc in ids {
        let Some(doc) = doc else {
            lengths.push(0);
            continue;
        };
        values.extend(bos);
        values.extend_from_slice(doc);
        values.extend(eos);
        lengths.push(doc.len() + extra);
    }
    let nulls = ids
        .iter()
        .any(Option::is_none)
        .then(|| datafusion::arrow::buffer::NullBuffer::from_iter(ids.iter().map(Option::is_some)));
    ListArray::new(
        Arc::new(Field::new_list_field(DataType::UInt32, false)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(UInt32Array::from(values)),
        nulls,
    )
}

fn constant_string(
    value: &ColumnarValue,
    function: &str,
    what: &str,
    usage: &str,
) -> Result<String> {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Ok(s.clone()),
        _ => exec_err!("{function}: the {what} must be a constant string: {usage}"),
    }
}

/// A special token to add: `None` inside for the usual names, `Some(name)` for one token.
type Special = Option<String>;

/// `add_eos` / `add_bos`: false (`None`), true (the usual names) or a token's name.
fn special_arg(
    value: &ColumnarValue,
    function: &str,
    what: &str,
    usage: &str,
) -> Result<Option<Special>> {
    match value {
        ColumnarValue::Scalar(ScalarValue::Boolean(Some(b))) => Ok(b.then_some(None)),
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Ok(Some(Some(s.clone()))),
        _ => exec_err!("{function}: {what} must be true, false or a token's name: {usage}"),
    }
}

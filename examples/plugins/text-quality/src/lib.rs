//! A delt scorer plugin, written as a third party would: it depends on the `delt-plugin` SDK
//! only and builds to a shared library that `delt` loads at run time.
//!
//! `text_quality(text)` scores web text in [0, 1] with the kind of rules web-text pipelines
//! use to drop boilerplate and noise (in the spirit of Gopher's quality filters): enough words,
//! plausible word lengths, few symbols, little repetition, and stop words present. Each rule
//! gives a factor in [0, 1]; the score is their product.
//!
//! `text_bytes(text)` is the UTF-8 length of the text: a trivial function used to measure the
//! cost of the plugin boundary itself. It takes string views, the type DataFusion reads text
//! as, so no string is copied on the way in.

use std::collections::HashSet;
use std::sync::Arc;

use delt_plugin::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use delt_plugin::{ArgType, FunctionSpec, Manifest, Options, Plugin, Scorer};

const STOP_WORDS: &[&str] = &[
    "the", "be", "to", "of", "and", "a", "in", "that", "have", "i", "it", "for", "not", "on",
    "with", "he", "as", "you", "do", "at", "this", "but", "his", "by", "from", "they", "we", "say",
    "her", "she", "or", "an", "will", "my", "one", "all", "would", "there", "their", "what", "so",
    "up", "out", "if", "about", "who", "get", "which", "go", "me", "is", "are", "was", "were",
    "has", "had", "can", "its", "than",
];

/// The quality rules with their thresholds.
struct TextQuality {
    min_words: usize,
    max_symbol_ratio: f64,
    stop_words: HashSet<&'static str>,
}

impl TextQuality {
    fn from_options(options: &Options) -> Result<Self, String> {
        let number = |name: &str, default: f64| match options.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| *x >= 0.0)
                .ok_or_else(|| format!("option {name} must be a non-negative number, got {v}")),
        };
        Ok(Self {
            min_words: number("min_words", 20.0)? as usize,
            max_symbol_ratio: number("max_symbol_ratio", 0.1)?,
            stop_words: STOP_WORDS.iter().copied().collect(),
        })
    }

    fn quality(&self, text: &str) -> f64 {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return 0.0;
        }
        let n = words.len() as f64;
        let length = (n / self.min_words.max(1) as f64).min(1.0);
        let mean_word = words.iter().map(|w| w.chars().count()).sum::<usize>() as f64 / n;
        let word_shape = if (3.0..=10.0).contains(&mean_word) {
            1.0
        } else {
            0.5
        };
        let chars = text.chars().filter(|c| !c.is_whitespace()).count().max(1) as f64;
        let symbols = text
            .chars()
            .filter(|c| !c.is_alphanumeric() && !c.is_whitespace())
            .count() as f64;
        let symbol_ratio = symbols / chars;
        let symbols = if symbol_ratio <= self.max_symbol_ratio {
            1.0
        } else {
            self.max_symbol_ratio / symbol_ratio
        };
        let lowered: Vec<String> = words
            .iter()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .collect();
        let unique = lowered.iter().collect::<HashSet<_>>().len() as f64 / n;
        let repetition = if n < 10.0 {
            1.0
        } else {
            (unique / 0.3).min(1.0)
        };
        let stop = lowered
            .iter()
            .filter(|w| self.stop_words.contains(w.as_str()))
            .count() as f64
            / n;
        let stop_words = (stop / 0.1).min(1.0);
        length * word_shape * symbols * repetition * stop_words
    }
}

impl Scorer for TextQuality {
    fn score(&mut self, args: &[ArrayRef]) -> Result<ArrayRef, String> {
        let text = args[0].as_string::<i32>();
        Ok(Arc::new(
            text.iter()
                .map(|t| t.map(|t| self.quality(t)))
                .collect::<Float64Array>(),
        ))
    }
}

/// `text_bytes`: the byte length of the text.
struct TextBytes;

impl Scorer for TextBytes {
    fn score(&mut self, args: &[ArrayRef]) -> Result<ArrayRef, String> {
        let text = args[0].as_string_view();
        // A view's low 32 bits are the string's length: no need to look at the string.
        let lengths = text
            .views()
            .iter()
            .map(|view| *view as u32 as f64)
            .collect();
        Ok(Arc::new(Float64Array::new(lengths, text.nulls().cloned())))
    }
}

struct TextQualityPlugin;

impl Plugin for TextQualityPlugin {
    fn manifest() -> Manifest {
        Manifest::new("text-quality", env!("CARGO_PKG_VERSION"))
            .function(
                FunctionSpec::new(
                    "text_quality",
                    [ArgType::Utf8],
                    ArgType::Float64,
                    "Heuristic web-text quality in [0, 1]: length, word shape, symbols, repetition, stop words.",
                )
                .option("min_words", "words for full marks on length (default 20)")
                .option("max_symbol_ratio", "largest unpenalised share of symbol characters (default 0.1)"),
            )
            .function(FunctionSpec::new("text_bytes", [ArgType::Utf8View], ArgType::Float64, "UTF-8 length of the text in bytes."))
    }

    fn create(function: &str, options: &Options) -> Result<Box<dyn Scorer>, String> {
        match function {
            "text_quality" => Ok(Box::new(TextQuality::from_options(options)?)),
            "text_bytes" => Ok(Box::new(TextBytes)),
            other => Err(format!("no function {other}")),
        }
    }
}

delt_plugin::export_plugin!(TextQualityPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_beats_noise() {
        let rules = TextQuality::from_options(&Options::new()).unwrap();
        let prose = "The history of the city is told in the stones of its old walls, and in the stories \
                     that the people who live there still tell to their children at night.";
        let noise = "$$$ ### !!! click >>> http://x.y/z?=&& ### $$$ click click click click";
        assert!(rules.quality(prose) > 0.8, "{}", rules.quality(prose));
        assert!(rules.quality(noise) < 0.1, "{}", rules.quality(noise));
        assert_eq!(rules.quality(""), 0.0);
    }
}

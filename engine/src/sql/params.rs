//! `${name}` parameters, bound as SQL literals so that one pipeline file serves many runs and
//! no value can add SQL of its own.
//!
//! Where a placeholder sits decides what its value may be:
//!
//! * inside a plain `'...'` string: any text; its quotes are doubled (`'` -> `''`), so it
//!   cannot end the string;
//! * outside quotes: a number (`3`, `-0.5`, `1e6`) or `true`/`false`, bound as a token of its
//!   own;
//! * inside a comment: nothing; the placeholder is left as it is and is not a use;
//! * inside a quoted identifier (`"..."`) or any other kind of string (`E'...'`, `$$...$$`,
//!   ...): an error, as no value can be bound there safely.
//!
//! A small lexer finds the placeholders: it knows comments, quoted identifiers and the kinds
//! of string that sqlparser's generic dialect (the one `DFParser` uses) reads. As a second
//! line of defence, the bound SQL is run through that dialect's tokenizer, which must see the
//! text values change nothing but the contents of their strings.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{DeltError, Result};

/// Values for `${name}` placeholders, from `--param name=value`.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `name=value` arguments; the value may itself contain `=`.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for arg in args {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| DeltError::BadParam(arg.into()))?;
            if !is_param_name(name) {
                return Err(DeltError::BadParam(arg.into()));
            }
            map.insert(name.to_string(), value.to_string());
        }
        Ok(Self(map))
    }

    /// The parameters by name.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Sets one parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// Binds every `${name}` of `sql` outside comments (see the module documentation). A
    /// placeholder without a value, a value that does not fit its place, or a placeholder
    /// where no value can go is an error; text that is not a well-formed placeholder (`$1`,
    /// `${ x }`) is left alone.
    pub fn bind(&self, sql: &str) -> Result<String> {
        let mut bound = String::with_capacity(sql.len());
        // The same SQL with every text value empty, for `check_tokens`.
        let mut probe = String::with_capacity(sql.len());
        let mut texts = Vec::new();
        let mut copied = 0;
        for placeholder in placeholders(sql) {
            let name = placeholder.name;
            match placeholder.place {
                Place::Identifier(quote) => {
                    return Err(DeltError::ParamInIdentifier {
                        name: name.into(),
                        quote: quote.into(),
                    });
                }
                Place::OtherString(opening) => {
                    return Err(DeltError::ParamInString {
                        name: name.into(),
                        opening: opening.into(),
                    });
                }
                Place::Code | Place::Text => {}
            }
            let value = self
                .0
                .get(name)
                .ok_or_else(|| DeltError::MissingParam { name: name.into() })?;
            let before = &sql[copied..placeholder.start];
            bound.push_str(before);
            probe.push_str(before);
            if placeholder.place == Place::Text {
                bound.push_str(&value.replace('\'', "''"));
                texts.push(name);
            } else if is_number(value) || is_boolean(value) {
                // Spaces keep the value a token of its own: `x-${n}` with n = -1 must not
                // become the comment `x--1`, nor `${n}$$` the start of a string.
                let literal = format!(" {value} ");
                bound.push_str(&literal);
                probe.push_str(&literal);
            } else {
                return Err(DeltError::ParamNotLiteral {
                    name: name.into(),
                    value: value.clone(),
                });
            }
            copied = placeholder.end;
        }
        bound.push_str(&sql[copied..]);
        probe.push_str(&sql[copied..]);
        check_tokens(&bound, &probe, &texts)?;
        Ok(bound)
    }

    /// Binds each of `sources`, the SQL texts of one run, and checks that every parameter is
    /// used by at least one of them; call it before running any, so that a mistyped name or
    /// a bad value stops the run before it has done anything.
    pub fn check_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut unused: BTreeSet<&str> = self.0.keys().map(String::as_str).collect();
        for sql in sources {
            self.bind(sql)?;
            for placeholder in placeholders(sql) {
                unused.remove(placeholder.name);
            }
        }
        if unused.is_empty() {
            Ok(())
        } else {
            Err(DeltError::UnusedParams {
                names: unused.into_iter().map(String::from).collect(),
            })
        }
    }
}

/// Checks that `bound` reads as the same tokens as `probe` but for the contents of string
/// literals, as it must when the lexer below placed every text value inside a string.
fn check_tokens(bound: &str, probe: &str, texts: &[&str]) -> Result<()> {
    if texts.is_empty() {
        return Ok(());
    }
    let tokens = |sql: &str| Tokenizer::new(&GenericDialect {}, sql).tokenize();
    // SQL that does not tokenize does not parse either: the parser reports it and nothing of
    // that SQL runs.
    let Ok(bound) = tokens(bound) else {
        return Ok(());
    };
    let same = tokens(probe).is_ok_and(|probe| {
        probe.len() == bound.len()
            && probe.iter().zip(&bound).all(|pair| {
                pair.0 == pair.1
                    || matches!(
                        pair,
                        (Token::SingleQuotedString(_), Token::SingleQuotedString(_))
                    )
            })
    });
    if same {
        Ok(())
    } else {
        let names: BTreeSet<&str> = texts.iter().copied().collect();
        Err(DeltError::ParamChangesSql {
            names: names.into_iter().map(String::from).collect(),
        })
    }
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An optional sign, digits with an optional fraction (`1`, `1.`, `1.5`, `.5`), an optional
/// exponent (`e6`, `E-3`); nothing else, not even spaces.
fn is_number(value: &str) -> bool {
    fn digits(bytes: &[u8], at: &mut usize) -> usize {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    }
    let bytes = value.as_bytes();
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let mut mantissa = digits(bytes, &mut at);
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        mantissa += digits(bytes, &mut at);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if digits(bytes, &mut at) == 0 {
            return false;
        }
    }
    at == bytes.len()
}

fn is_boolean(value: &str) -> bool {
    value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
}

/// Where a placeholder sits in the SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place<'a> {
    /// Outside quotes and comments.
    Code,
    /// Inside a plain `'...'` string.
    Text,
    /// Inside an identifier quoted with this character.
    Identifier(&'a str),
    /// Inside a string of another kind, opened by this text (`E'`, `$$`, ...).
    OtherString(&'a str),
}

/// One `${name}`: its byte range in the SQL text, its name and its place.
#[derive(Debug)]
struct Placeholder<'a> {
    start: usize,
    end: usize,
    name: &'a str,
    place: Place<'a>,
}

/// The placeholders of `sql` outside comments, in text order.
fn placeholders(sql: &str) -> Vec<Placeholder<'_>> {
    let mut lexer = Lexer {
        sql,
        at: 0,
        found: Vec::new(),
    };
    lexer.run();
    lexer.found
}

/// Walks SQL text as sqlparser's generic dialect reads comments, quotes and the words that
/// may prefix a quote, noting the placeholders it passes. It does not follow that tokenizer
/// into every corner (there, `#'a` is one word and `1e'...'` a number and an `E'...'` string);
/// `check_tokens` refuses the values that such a misreading would let through. Unterminated
/// quotes and comments run to the end of the text (the parser rejects such SQL anyway).
struct Lexer<'a> {
    sql: &'a str,
    at: usize,
    found: Vec<Placeholder<'a>>,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.sql[self.at..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.at += c.len_utf8();
        }
    }

    /// The name and length of a well-formed `${name}` starting here.
    fn placeholder_here(&self) -> Option<(&'a str, usize)> {
        let after = self.rest().strip_prefix("${")?;
        let end = after.find('}')?;
        let name = &after[..end];
        is_param_name(name).then_some((name, end + 3))
    }

    /// Notes a placeholder starting here, in `place`; returns its length.
    fn note(&mut self, place: Place<'a>) -> Option<usize> {
        let (name, len) = self.placeholder_here()?;
        self.found.push(Placeholder {
            start: self.at,
            end: self.at + len,
            name,
            place,
        });
        Some(len)
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            if let Some(len) = self.note(Place::Code) {
                self.at += len;
                continue;
            }
            let rest = self.rest();
            if rest.starts_with("--") {
                self.at += rest.find('\n').map_or(rest.len(), |i| i + 1);
            } else if rest.starts_with("/*") {
                self.block_comment();
            } else if c == '\'' {
                self.quoted('\'', Place::Text, false);
            } else if c == '"' || c == '`' {
                self.quoted(c, Place::Identifier(&rest[..1]), false);
            } else if c == '$' {
                self.dollar();
            } else if c.is_alphanumeric() || "_#@".contains(c) {
                self.word();
            } else {
                self.bump();
            }
        }
    }

    /// `/* ... */`, nested as sqlparser nests them; placeholders inside are left alone.
    fn block_comment(&mut self) {
        self.at += 2;
        let mut depth = 1;
        while depth > 0 && self.at < self.sql.len() {
            let rest = self.rest();
            if rest.starts_with("/*") {
                depth += 1;
                self.at += 2;
            } else if rest.starts_with("*/") {
                depth -= 1;
                self.at += 2;
            } else {
                self.bump();
            }
        }
    }

    /// From an opening `quote` to the closing one: a doubled quote stands for itself and,
    /// with `backslash`, a backslash escapes the next character.
    fn quoted(&mut self, quote: char, place: Place<'a>, backslash: bool) {
        self.bump();
        while let Some(c) = self.peek() {
            if c == quote {
                self.bump();
                if self.peek() != Some(quote) {
                    return;
                }
            } else if c == '\\' && backslash {
                self.bump();
            } else {
                self.note(place);
            }
            self.bump();
        }
    }

    /// Everything up to and including `end`, which opened as `opening`.
    fn delimited(&mut self, opening: &'a str, end: &str) {
        while self.at < self.sql.len() && !self.rest().starts_with(end) {
            self.note(Place::OtherString(opening));
            self.bump();
        }
        self.at = (self.at + end.len()).min(self.sql.len());
    }

    /// `$$...$$` and `$tag$...$tag$` strings; any other `$` is a character of its own.
    fn dollar(&mut self) {
        let start = self.at;
        let tag_len = self.rest()[1..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len() - 1);
        if self.rest()[1 + tag_len..].starts_with('$') {
            let opening = &self.sql[start..start + tag_len + 2];
            self.at += opening.len();
            self.delimited(opening, opening);
        } else {
            self.bump();
        }
    }

    /// A word or a number, and the string it opens when it is a prefix: `N'`, `B'`, `b"`,
    /// `R'`, `r"`, `E'`, `X'`, `U&'`, `Q'`, `NQ'` (any case).
    fn word(&mut self) {
        let start = self.at;
        self.bump();
        while let Some(c) = self.peek() {
            // A placeholder ends a word: its value is bound with spaces around.
            let part = c.is_alphanumeric() || "_$#@".contains(c);
            if !part || self.placeholder_here().is_some() {
                break;
            }
            self.bump();
        }
        let prefix = self.sql[start..self.at].to_ascii_lowercase();
        let opening = |lexer: &Self, len: usize| &lexer.sql[start..lexer.at + len];
        match (prefix.as_str(), self.peek()) {
            ("n" | "b", Some(quote @ '\'')) | ("b", Some(quote @ '"')) => {
                self.quoted(quote, Place::OtherString(opening(self, 1)), false);
            }
            ("e" | "x", Some('\'')) => {
                self.quoted('\'', Place::OtherString(opening(self, 1)), true);
            }
            ("u", Some('&')) if self.peek_second() == Some('\'') => {
                let place = Place::OtherString(opening(self, 2));
                self.bump();
                self.quoted('\'', place, true);
            }
            ("r", Some(quote @ ('\'' | '"'))) => self.raw_string(start, quote),
            ("q" | "nq", Some('\'')) => self.quote_delimited(start),
            _ => {}
        }
    }

    /// `R'...'` and `R'''...'''` (or with `"`): no escapes but a doubled quote; a triple
    /// quote opens a string that only a triple quote ends.
    fn raw_string(&mut self, start: usize, quote: char) {
        let triple: String = [quote; 3].iter().collect();
        if self.rest().starts_with(&triple) {
            self.at += 3;
            let opening = &self.sql[start..self.at];
            self.delimited(opening, &triple);
        } else {
            let opening = &self.sql[start..self.at + 1];
            self.quoted(quote, Place::OtherString(opening), false);
        }
    }

    /// `Q'[...]'`: the character after the quote opens, its mirror followed by a quote closes.
    fn quote_delimited(&mut self, start: usize) {
        self.bump();
        let Some(open) = self.peek() else { return };
        self.bump();
        let close = match open {
            '[' => ']',
            '{' => '}',
            '<' => '>',
            '(' => ')',
            c => c,
        };
        let opening = &self.sql[start..self.at];
        self.delimited(opening, &format!("{close}'"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(args: &[&str]) -> Params {
        Params::parse(args.iter().copied()).unwrap()
    }

    #[test]
    fn parses_name_value_arguments() {
        let params = params(&["path=a=b.parquet", "L=3"]);
        assert_eq!(params.0["path"], "a=b.parquet");
        assert!(Params::parse(["novalue"]).is_err());
        assert!(Params::parse(["bad name=1"]).is_err());
        assert!(Params::parse(["=1"]).is_err());
    }

    #[test]
    fn binds_text_in_strings_and_numbers_outside() {
        let params = params(&["path=a=b.parquet", "L=3"]);
        assert_eq!(
            params
                .bind("SELECT * FROM '${path}' ORDER BY fold_order(s, ${L}) -- $1 ${ x }")
                .unwrap(),
            "SELECT * FROM 'a=b.parquet' ORDER BY fold_order(s,  3 ) -- $1 ${ x }"
        );
    }

    #[test]
    fn doubles_quotes_in_text() {
        let params = params(&["p=it's 'quoted'", "s=x'); DROP TABLE t; --"]);
        assert_eq!(
            params.bind("LOCATION '${p}'").unwrap(),
            "LOCATION 'it''s ''quoted'''"
        );
        assert_eq!(
            params.bind("AS 'lib#f?a=${s}&b=1'").unwrap(),
            "AS 'lib#f?a=x''); DROP TABLE t; --&b=1'"
        );
        // Inside a string that already holds a doubled quote.
        assert_eq!(
            params.bind("'it''s ${p}'").unwrap(),
            "'it''s it''s ''quoted'''"
        );
    }

    #[test]
    fn accepts_numbers_and_booleans_outside_quotes() {
        for value in [
            "3", "-3", "+3", "0.5", "-0.5", ".5", "1.", "1e6", "1E-3", "2.5e+10", "007", "true",
            "false", "TRUE",
        ] {
            let bound = params(&[&format!("v={value}")])
                .bind("top_r(s, ${v})")
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(bound, format!("top_r(s,  {value} )"));
        }
    }

    #[test]
    fn rejects_other_values_outside_quotes() {
        for value in [
            "",
            "abc",
            "1; COPY (SELECT 1) TO '/tmp/x.csv'",
            "1)",
            " 1",
            "1 ",
            "1 -- x",
            "-",
            ".",
            "e5",
            "1e",
            "1e+",
            "1.2.3",
            "--1",
            "0x10",
            "1_000",
            "inf",
            "NaN",
            "'1'",
            "yes",
        ] {
            let err = params(&[&format!("v={value}")])
                .bind("top_r(s, ${v})")
                .unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, DeltError::ParamNotLiteral { .. }),
                "{value}: {message}"
            );
            assert!(
                message.contains("`v`") && message.contains("'${v}'"),
                "{message}"
            );
        }
    }

    #[test]
    fn keeps_signed_values_from_forming_comments() {
        let bound = params(&["n=-1"]).bind("SELECT 2-${n}").unwrap();
        assert_eq!(bound, "SELECT 2- -1 ");
    }

    #[test]
    fn leaves_comments_alone() {
        let params = params(&["a=1"]);
        let sql =
            "-- ${a} ${missing}\nSELECT ${a} /* ${missing} /* nested ${missing} */ '${missing}' */";
        assert_eq!(
            params.bind(sql).unwrap(),
            "-- ${a} ${missing}\nSELECT  1  /* ${missing} /* nested ${missing} */ '${missing}' */"
        );
        // Comment markers inside strings are text, and quotes inside comments are not.
        let params = Params::parse(["a=x"]).unwrap();
        assert_eq!(params.bind("'--${a}'").unwrap(), "'--x'");
        assert_eq!(params.bind("'/*${a}'").unwrap(), "'/*x'");
        assert!(matches!(
            params.bind("-- it's\nSELECT ${a}"),
            Err(DeltError::ParamNotLiteral { .. })
        ));
    }

    #[test]
    fn reports_a_missing_parameter() {
        let err = params(&[]).bind("SELECT '${ratio}'").unwrap_err();
        assert!(err.to_string().contains("--param ratio=VALUE"), "{err}");
    }

    #[test]
    fn rejects_placeholders_in_identifiers() {
        let params = params(&["t=docs"]);
        for sql in [
            "SELECT * FROM \"${t}\"",
            "SELECT * FROM \"a\"\"${t}\"",
            "SELECT * FROM `${t}`",
        ] {
            let err = params.bind(sql).unwrap_err();
            assert!(
                matches!(err, DeltError::ParamInIdentifier { .. }),
                "{sql}: {err}"
            );
            assert!(err.to_string().contains("`t`"), "{err}");
        }
        // A quote inside an identifier does not open a string.
        assert!(params.bind("SELECT \"it's\" FROM '${t}'").is_ok());
    }

    #[test]
    fn rejects_placeholders_in_other_strings() {
        let params = params(&["v=x"]);
        for (sql, opening) in [
            ("SELECT E'${v}'", "E'"),
            ("SELECT x'${v}'", "x'"),
            ("SELECT U&'${v}'", "U&'"),
            ("SELECT n'${v}'", "n'"),
            ("SELECT b\"${v}\"", "b\""),
            ("SELECT R'''${v}'''", "R'''"),
            ("SELECT q'[${v}]'", "q'["),
            ("SELECT NQ'{${v}}'", "NQ'{"),
            ("SELECT $$${v}$$", "$$"),
            ("SELECT $tag$ ${v} $tag$", "$tag$"),
        ] {
            match params.bind(sql) {
                Err(DeltError::ParamInString { opening: o, .. }) => {
                    assert_eq!(o, opening, "{sql}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn follows_the_ends_of_other_strings() {
        // Each string hides a quote (or shows one) where a plain lexer would see otherwise;
        // the `${v}` after it is outside quotes, so a text value is refused.
        let params = params(&["v=x"]);
        for sql in [
            "SELECT E'\\'', ${v}",
            "SELECT X'\\'', ${v}",
            "SELECT $$'$$, ${v}",
            "SELECT $a$ '$a$, ${v}",
            "SELECT q'[']', ${v}",
            "SELECT r'''a'b''', ${v}",
            "SELECT `'`, ${v}",
        ] {
            assert!(
                matches!(params.bind(sql), Err(DeltError::ParamNotLiteral { .. })),
                "{sql}"
            );
        }
        // And a quote that these forms do not hide opens a plain string.
        for sql in [
            "SELECT N'\\', '${v}'",
            "SELECT B'\\', '${v}'",
            "SELECT R'\\', '${v}'",
            "SELECT 0x'${v}'",
            "SELECT ee'${v}'",
            "SELECT a$$'${v}'",
            "SELECT @'${v}'",
            "SELECT 1L'${v}'",
        ] {
            assert_eq!(params.bind(sql).unwrap(), sql.replace("${v}", "x"), "{sql}");
        }
    }

    /// The lexer against sqlparser's tokenizer: wherever a placeholder sits, the bound value
    /// comes out inside one string token (or as one number token), and the statement count
    /// does not change.
    #[test]
    fn bound_values_stay_single_tokens() {
        use datafusion::sql::parser::DFParser;

        let hostile = [
            "'); COPY (SELECT 1) TO 'x.csv'; --",
            "\\'; SELECT 2; --",
            "*/ SELECT 3; /*",
            "$$; SELECT 4; $$",
            "'''",
            "\n; SELECT 5",
        ];
        let templates = [
            "SELECT '${v}' AS a",
            "SELECT 'a''${v}''b' AS a",
            "SELECT \"it's\", '${v}' AS a",
            "SELECT E'\\'', '${v}' AS a",
            "SELECT $$'$$, '${v}' AS a",
            "SELECT a$$ AS b, '${v}' AS a",
            "SELECT 0x'', '${v}' AS a",
            "SELECT 1L'', '${v}' AS a",
            "SELECT N'\\', '${v}' AS a",
            "SELECT /* ' */ '${v}' AS a -- '",
        ];
        let tokens = |sql: &str| {
            Tokenizer::new(&GenericDialect {}, sql)
                .tokenize()
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        for template in templates {
            assert_eq!(
                DFParser::parse_sql(template)
                    .unwrap_or_else(|e| panic!("{template}: {e}"))
                    .len(),
                1,
                "{template}"
            );
            // The string that holds the placeholder, as the tokenizer reads it.
            let marked = params(&["v=MARK"]).bind(template).unwrap();
            let string = tokens(&marked)
                .into_iter()
                .find_map(|token| match token {
                    Token::SingleQuotedString(s) if s.contains("MARK") => Some(s),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{template}: {marked}"));
            for value in hostile {
                let bound = params(&[&format!("v={value}")]).bind(template).unwrap();
                let expected = Token::SingleQuotedString(string.replace("MARK", value));
                assert!(
                    tokens(&bound).contains(&expected),
                    "{template} with {value:?}: {bound}"
                );
                assert_eq!(
                    DFParser::parse_sql(&bound).unwrap().len(),
                    1,
                    "{template} with {value:?}: {bound}"
                );
            }
        }
        for value in ["-1", "2.5e-3"] {
            let bound = params(&[&format!("v={value}")])
                .bind("SELECT 1-${v}")
                .unwrap();
            let numbers: Vec<Token> = tokens(&bound)
                .into_iter()
                .filter(|t| matches!(t, Token::Number(..)))
                .collect();
            assert_eq!(
                numbers,
                [
                    Token::Number("1".into(), false),
                    Token::Number(value.trim_start_matches('-').into(), false)
                ]
            );
        }
    }

    #[test]
    fn refuses_values_that_would_change_the_sql_around_them() {
        // sqlparser reads `#'` as the start of a word and `1e'` as a number and an `E'...'`
        // string; the lexer reads plain strings there, so the tokenizer check must refuse the
        // values that would make that misreading run SQL of their own.
        let hostile = params(&["v=x; SELECT 1; --"]);
        for sql in ["SELECT #'${v}'", "SELECT 1e'\\''${v}'"] {
            match hostile.bind(sql) {
                Err(err @ DeltError::ParamChangesSql { .. }) => {
                    assert!(err.to_string().contains("`v`"), "{err}")
                }
                other => panic!("{sql}: {other:?}"),
            }
            // A value that leaves the SQL unreadable is for the parser to report.
            assert!(params(&["v=x"]).bind(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn reports_unused_parameters() {
        let params = params(&["a=1", "b=x", "c=2", "d=3"]);
        let err = params
            .check_sources(["SELECT ${a} -- ${c}", "SELECT '${b}' /* ${d} */"])
            .unwrap_err();
        match &err {
            DeltError::UnusedParams { names } => assert_eq!(names, &["c", "d"]),
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("`c`, `d`") && err.to_string().contains("${c}, ${d}"),
            "{err}"
        );
        assert!(
            params
                .check_sources(["SELECT ${a}, ${c}", "SELECT '${b}', ${d}"])
                .is_ok()
        );
        // Every source is bound: a bad value in the last one is found before any runs.
        let err = params
            .check_sources(["SELECT ${a}, '${b}', ${c}", "SELECT ${b}, ${d}"])
            .unwrap_err();
        assert!(matches!(err, DeltError::ParamNotLiteral { .. }), "{err}");
    }
}

//! `${name}` substitution, so one pipeline file serves many runs.

use std::collections::BTreeMap;

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

    /// Sets one parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// Replaces every `${name}` in `sql`. A placeholder without a value is an error; text that
    /// is not a well-formed placeholder (`$1`, `${ x }`) is left alone.
    pub fn substitute(&self, sql: &str) -> Result<String> {
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) if is_param_name(&after[..end]) => {
                    let name = &after[..end];
                    let value = self
                        .0
                        .get(name)
                        .ok_or_else(|| DeltError::MissingParam { name: name.into() })?;
                    out.push_str(value);
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_reports_missing() {
        let params = Params::parse(["path=a=b.parquet", "L=3"]).unwrap();
        assert_eq!(
            params
                .substitute("SELECT * FROM '${path}' ORDER BY fold_order(s, ${L}) -- $1 ${ x }")
                .unwrap(),
            "SELECT * FROM 'a=b.parquet' ORDER BY fold_order(s, 3) -- $1 ${ x }"
        );
        let err = params.substitute("${ratio}").unwrap_err();
        assert!(err.to_string().contains("--param ratio=VALUE"), "{err}");
        assert!(Params::parse(["novalue"]).is_err());
        assert!(Params::parse(["bad name=1"]).is_err());
    }
}

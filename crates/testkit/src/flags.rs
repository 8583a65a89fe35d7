//! Command-line flags of a bench: `--key value` or `--key=value`; numbers may hold `_`.
//!
//! Must never: take a value that is not there (a flag without one is an error).

use crate::Res;

/// The flags of this process, read one by one.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
    inline: Option<String>,
}

#[allow(clippy::new_without_default)]
impl Flags {
    pub fn new() -> Flags {
        Flags {
            args: std::env::args().skip(1),
            inline: None,
        }
    }

    /// The next flag (`cargo bench` passes `--bench`: callers ignore it).
    pub fn next_flag(&mut self) -> Option<String> {
        let arg = self.args.next()?;
        match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => {
                self.inline = Some(v.to_string());
                Some(k.to_string())
            }
            _ => {
                self.inline = None;
                Some(arg)
            }
        }
    }

    pub fn value(&mut self, name: &str) -> Res<String> {
        self.inline
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{name} needs a value"))
    }

    pub fn number<T: std::str::FromStr>(&mut self, name: &str) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        self.value(name)?
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    }
}

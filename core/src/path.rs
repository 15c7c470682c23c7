//! Paths: where a state sits in a module (`('layers', 0, 'weight')`), the keys of state maps,
//! gradients and checkpoints.

use std::fmt;
use std::sync::Arc;

/// One key of a state path: a field or map-entry name, or a list index.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKey {
    /// A list position.
    Index(usize),
    /// A field name or map key.
    Name(Arc<str>),
}

impl fmt::Display for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathKey::Index(i) => write!(f, "{i}"),
            PathKey::Name(n) => write!(f, "'{n}'"),
        }
    }
}

impl fmt::Debug for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&str> for PathKey {
    fn from(s: &str) -> Self {
        PathKey::Name(s.into())
    }
}
impl From<String> for PathKey {
    fn from(s: String) -> Self {
        PathKey::Name(s.into())
    }
}
impl From<usize> for PathKey {
    fn from(i: usize) -> Self {
        PathKey::Index(i)
    }
}

/// A path of keys from a module to a state, printed like the reference's tuples:
/// `('layers', 0, 'weight')`, `('bias',)`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(pub Vec<PathKey>);

impl Path {
    /// The empty path.
    pub fn new() -> Path {
        Path(Vec::new())
    }
    /// Descend into a named field or map entry.
    pub fn push_name(&mut self, name: &str) {
        self.0.push(PathKey::Name(name.into()));
    }
    /// Descend into a list item.
    pub fn push_index(&mut self, i: usize) {
        self.0.push(PathKey::Index(i));
    }
    /// Go back up one level.
    pub fn pop(&mut self) {
        self.0.pop();
    }
    /// The keys.
    pub fn keys(&self) -> &[PathKey] {
        &self.0
    }
    /// True if any key equals `key`.
    pub fn contains(&self, key: &PathKey) -> bool {
        self.0.contains(key)
    }

    /// The dotted form of the path, as checkpoint files name tensors: the keys joined by `.`
    /// (`layers.0.weight`), an index as its decimal digits, the empty path as `""`.
    ///
    /// Every path has a distinct dotted form, read back by [`Path::from_dotted`]; names are
    /// escaped with `\` where they would otherwise be ambiguous:
    /// - a `.` inside a name is written `\.` and a `\` is written `\\`
    ///   (`Name("a.b")` is `a\.b`);
    /// - a name that is empty or all ASCII digits (which would read as an index) starts with
    ///   `\#` (`Name("0")` is `\#0`, `Name("")` is `\#`), so that `Index(0)` stays `0`.
    ///
    /// A name without `.`, `\` that is not all digits is written as is.
    ///
    /// ```
    /// use stategrad_core::{path, Path};
    /// assert_eq!(path!("layers", 0, "weight").to_dotted(), "layers.0.weight");
    /// assert_eq!(path!("a.b", "0").to_dotted(), r"a\.b.\#0");
    /// let p = path!("layers", 0, "a.b", "7", "", r"x\y");
    /// assert_eq!(Path::from_dotted(&p.to_dotted()).unwrap(), p);
    /// ```
    pub fn to_dotted(&self) -> String {
        let mut out = String::new();
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match k {
                PathKey::Index(n) => out.push_str(&n.to_string()),
                PathKey::Name(n) => {
                    if n.is_empty() || n.bytes().all(|b| b.is_ascii_digit()) {
                        out.push_str("\\#");
                    }
                    for c in n.chars() {
                        if c == '.' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// Read a path from its dotted form (the inverse of [`Path::to_dotted`]): the text is split
    /// at each `.` that is not escaped; a part of ASCII digits is an index, any other part (or
    /// one starting with `\#`) is a name. `""` is the empty path.
    ///
    /// Errors ([`Error::InvalidArgument`](crate::Error::InvalidArgument)): a `\` followed by
    /// anything but `.`, `\`, or (at the start of a part) `#`; an index too large for `usize`.
    ///
    /// ```
    /// use stategrad_core::{path, Error, Path};
    /// assert_eq!(Path::from_dotted("layers.0.weight").unwrap(), path!("layers", 0, "weight"));
    /// assert_eq!(Path::from_dotted(r"a\.b.\#0").unwrap(), path!("a.b", "0"));
    /// assert_eq!(Path::from_dotted(r"\#.a").unwrap(), path!("", "a"));
    /// assert_eq!(Path::from_dotted("").unwrap(), Path::new());
    /// assert!(matches!(Path::from_dotted(r"a\x"), Err(Error::InvalidArgument { .. })));
    /// ```
    pub fn from_dotted(s: &str) -> crate::Result<Path> {
        let bad = |msg: String| crate::Error::InvalidArgument {
            op: "Path::from_dotted",
            msg,
        };
        let mut keys = Vec::new();
        if s.is_empty() {
            return Ok(Path(keys));
        }
        // (text, forced name) of the part being read
        let mut part = String::new();
        let mut forced_name = false;
        let mut at_start = true;
        let mut chars = s.chars().peekable();
        let finish = |part: &mut String, forced: bool| -> crate::Result<PathKey> {
            let text = std::mem::take(part);
            if !forced && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse::<usize>().map(PathKey::Index).map_err(|_| {
                    bad(format!(
                        "index `{text}` in `{s}` is too large for a path index"
                    ))
                })
            } else {
                Ok(PathKey::Name(text.into()))
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    keys.push(finish(&mut part, forced_name)?);
                    forced_name = false;
                    at_start = true;
                    continue;
                }
                '\\' => match chars.peek().copied() {
                    Some(e @ ('.' | '\\')) => {
                        chars.next();
                        part.push(e);
                    }
                    Some('#') if at_start => {
                        chars.next();
                        forced_name = true;
                    }
                    next => {
                        return Err(bad(format!(
                            "bad escape `\\{}` in `{s}`: use `\\.` for a dot, `\\\\` for a backslash, and `\\#` only at the start of a name",
                            next.map(String::from).unwrap_or_default()
                        )))
                    }
                },
                c => part.push(c),
            }
            at_start = false;
        }
        keys.push(finish(&mut part, forced_name)?);
        Ok(Path(keys))
    }
}

/// Build a [`Path`] from keys: `path!("layers", 0, "weight")`.
#[macro_export]
macro_rules! path {
    ($($k:expr),* $(,)?) => {
        $crate::Path(vec![$($crate::PathKey::from($k)),*])
    };
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{k}")?;
        }
        if self.0.len() == 1 {
            write!(f, ",")?;
        }
        write!(f, ")")
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

//! numpy-style printing of tensors.

use super::*;

/// numpy's `dragon4_positional(x, precision=8, unique=True, trim='.')` for one value.
fn positional(v: f64, dtype: DType) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let shortest = match dtype {
        DType::F32 => format!("{}", v as f32),
        _ => format!("{v}"),
    };
    let frac_len = shortest.split('.').nth(1).map_or(0, str::len);
    let s = if frac_len > 8 {
        let r = match dtype {
            DType::F32 => format!("{:.8}", v as f32),
            _ => format!("{v:.8}"),
        };
        r.trim_end_matches('0').to_string()
    } else {
        shortest
    };
    if s.contains('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// numpy's scientific form with unique digits: `1.5e-05`.
fn scientific(v: f64, dtype: DType) -> String {
    if !v.is_finite() {
        return positional(v, dtype);
    }
    let s = match dtype {
        DType::F32 => format!("{:e}", v as f32),
        _ => format!("{v:e}"),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mant = if mant.contains('.') {
        mant.to_string()
    } else {
        format!("{mant}.")
    };
    format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Integers and bools as numpy prints them: right-aligned to a common width (`[ 1 10 -3]`,
/// `[ True False]`).
fn format_exact(t: &Tensor) -> Vec<String> {
    fn strings<T: Elem>(v: &[T], f: impl Fn(T) -> String) -> Vec<String> {
        v.iter().map(|&x| f(x)).collect()
    }
    let strs = match t.buf() {
        Buffer::I32(v) => strings(v, |x| x.to_string()),
        Buffer::I64(v) => strings(v, |x| x.to_string()),
        Buffer::Bool(v) => strings(v, |x| if x { "True" } else { "False" }.to_string()),
        _ => Vec::new(),
    };
    // numpy gives bools the width of `False` even when every value is `True`.
    let min = if t.dtype() == DType::Bool { 5 } else { 0 };
    let w = strs.iter().map(String::len).max().unwrap_or(0).max(min);
    strs.into_iter().map(|s| format!("{s:>w$}")).collect()
}

fn format_elements(vals: &[f64], dtype: DType) -> Vec<String> {
    let finite: Vec<f64> = vals
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v != 0.0)
        .map(f64::abs)
        .collect();
    let (mut mx, mut mn) = (0.0f64, f64::INFINITY);
    for &a in &finite {
        mx = mx.max(a);
        mn = mn.min(a);
    }
    let exp_mode = !finite.is_empty() && (mx >= 1e8 || mn < 1e-4 || mx / mn > 1e3);
    if exp_mode {
        let strs: Vec<String> = vals.iter().map(|&v| scientific(v, dtype)).collect();
        // Pad mantissas to a common number of fraction digits, as numpy does.
        let frac = strs
            .iter()
            .map(|s| {
                s.split('e')
                    .next()
                    .and_then(|m| m.split('.').nth(1))
                    .map_or(0, str::len)
            })
            .max()
            .unwrap_or(0);
        let strs: Vec<String> = strs
            .into_iter()
            .map(|s| match s.split_once('e') {
                Some((m, e)) => {
                    let cur = m.split('.').nth(1).map_or(0, str::len);
                    format!("{m}{}e{e}", "0".repeat(frac - cur))
                }
                None => s,
            })
            .collect();
        let w = strs.iter().map(String::len).max().unwrap_or(0);
        return strs.into_iter().map(|s| format!("{s:>w$}")).collect();
    }
    let strs: Vec<String> = vals.iter().map(|&v| positional(v, dtype)).collect();
    let split = |s: &str| -> (usize, usize) {
        match s.split_once('.') {
            Some((i, f)) => (i.len(), f.len()),
            None => (s.len(), 0),
        }
    };
    let left = strs.iter().map(|s| split(s).0).max().unwrap_or(0);
    let right = strs.iter().map(|s| split(s).1).max().unwrap_or(0);
    strs.iter()
        .map(|s| {
            let (i, f) = split(s);
            if s.contains('.') {
                format!("{}{s}{}", " ".repeat(left - i), " ".repeat(right - f))
            } else {
                format!("{s:>w$}", w = left + right + 1)
            }
        })
        .collect()
}

fn write_nested(
    f: &mut fmt::Formatter<'_>,
    elems: &[String],
    shape: &[usize],
    depth: usize,
) -> fmt::Result {
    write!(f, "[")?;
    if shape.len() == 1 {
        write!(f, "{}", elems.join(" "))?;
    } else {
        let n = shape[0];
        let stride = elems.len() / n.max(1);
        for i in 0..n {
            if i > 0 {
                // numpy separates blocks of rank r with r-1 blank lines.
                write!(f, "{}", "\n".repeat(shape.len() - 1))?;
                write!(f, "{}", " ".repeat(depth + 1))?;
            }
            write_nested(
                f,
                &elems[i * stride..(i + 1) * stride],
                &shape[1..],
                depth + 1,
            )?;
        }
    }
    write!(f, "]")
}

impl fmt::Display for Tensor {
    /// numpy's `str`: `[2. 2. 2.]`, `[[-3.]]`. A 0-d tensor prints as the Python float its value
    /// widens to (`28.400001525878906`, `56.0`), as the reference does. Integers and bools
    /// print as numpy prints them (`[ 1 10 -3]`, `[ True False]`, `7`, `True`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_abstract() {
            // A traced value inside `jit` has no elements to print (JAX prints a tracer so).
            return write!(f, "Traced<{}{}>", self.dtype().name(), self.shape_display());
        }
        if !self.dtype().is_float() {
            if self.numel() == 0 {
                return write!(f, "{}", "[".repeat(self.ndim()) + &"]".repeat(self.ndim()));
            }
            let elems = format_exact(self);
            if self.is_scalar() {
                return write!(f, "{}", elems[0].trim_start());
            }
            return write_nested(f, &elems, self.shape(), 0);
        }
        let vals = self.f64_data();
        if self.is_scalar() {
            let v = vals[0];
            if let Some(p) = f.precision() {
                return write!(f, "{v:.p$}");
            }
            return if v.is_finite() && v == v.trunc() && v.abs() < 1e16 {
                write!(f, "{v:.1}")
            } else {
                write!(f, "{v:?}")
            };
        }
        if self.numel() == 0 {
            return write!(f, "{}", "[".repeat(self.ndim()) + &"]".repeat(self.ndim()));
        }
        let elems = format_elements(&vals, self.dtype());
        write_nested(f, &elems, self.shape(), 0)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({self}, shape={}, dtype={})",
            self.shape_display(),
            self.dtype().name()
        )
    }
}

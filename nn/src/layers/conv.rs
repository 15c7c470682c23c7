//! 2-D convolution and pooling in NHWC, by im2col: each output position's window is gathered
//! with one `take` on the flattened input (out-of-image positions read an appended fill row),
//! so VJPs and `vmap` batching come from `take`'s rules.

use super::{impl_layer, invalid, unwrap};
use crate::init::Initializer;
use stategrad_core::{DType, ParamState, Result, State, Tensor};

/// How a [`Conv2d`], [`MaxPool2d`] or [`AvgPool2d`] pads its input.
///
/// `(h, w)` tuples convert into [`Padding::Explicit`], so `.padding((1, 1))` pads one row on
/// the top and the bottom and one column on each side. [`Padding::Same`] is TensorFlow's and
/// flax's `'SAME'`: the output has `ceil(in / stride)` rows and columns, and the
/// `max((out - 1)·stride + kernel - in, 0)` padding this needs is split in two, the odd one
/// going to the bottom (or the right).
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::{Conv2d, MaxPool2d, Padding};
/// assert_eq!(Padding::from((1, 2)), Padding::Explicit(1, 2));
/// let x = Tensor::ones(&[1, 7, 8, 1]);
/// // 'SAME' with stride 1 keeps the size whatever the kernel, with stride 2 halves it (rounding up).
/// let conv = Conv2d::builder(1, 4, (4, 3)).padding(Padding::Same).build();
/// assert_eq!(conv.forward(&x).shape(), &[1, 7, 8, 4]);
/// let pool = MaxPool2d::new((3, 3)).stride((2, 2)).padding(Padding::Same);
/// assert_eq!(pool.forward(&x).shape(), &[1, 4, 4, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `(h, w)` rows and columns of padding on each side (PyTorch's `padding=(h, w)`).
    Explicit(usize, usize),
    /// TensorFlow's and flax's `'SAME'`: `ceil(in / stride)` outputs per axis, the extra
    /// padding row or column (when the total is odd) at the bottom or the right.
    Same,
}

impl Default for Padding {
    /// No padding (`Explicit(0, 0)`, TensorFlow's `'VALID'`).
    fn default() -> Self {
        Padding::Explicit(0, 0)
    }
}

impl From<(usize, usize)> for Padding {
    fn from((h, w): (usize, usize)) -> Padding {
        Padding::Explicit(h, w)
    }
}

/// The padding of one axis before the image (the rest, `total - total / 2`, goes after it)
/// and the output length, for `'SAME'`.
fn same_axis(len: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(len);
    (total / 2, out)
}

/// Geometry of a sliding window over an `h × w` image.
#[derive(Clone, Copy, Debug)]
struct Window {
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
}

/// A window's placement on one image size: the padding `(top, left)` and the output size (the
/// padding at the bottom and the right is what the last window needs).
#[derive(Clone, Copy, Debug)]
struct Placement {
    before: (usize, usize),
    out: (usize, usize),
}

impl Window {
    fn check(&self, op: &'static str) -> Result<()> {
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return Err(invalid(
                op,
                "kernel sizes and strides must be positive".to_string(),
            ));
        }
        Ok(())
    }

    fn place(&self, op: &'static str, h: usize, w: usize) -> Result<Placement> {
        self.check(op)?;
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        match self.padding {
            Padding::Explicit(ph, pw) => {
                if h + 2 * ph < kh || w + 2 * pw < kw {
                    return Err(invalid(
                        op,
                        format!(
                            "the padded input ({} x {}) is smaller than the kernel ({kh} x {kw})",
                            h + 2 * ph,
                            w + 2 * pw
                        ),
                    ));
                }
                Ok(Placement {
                    before: (ph, pw),
                    out: ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1),
                })
            }
            Padding::Same => {
                if h == 0 || w == 0 {
                    return Err(invalid(
                        op,
                        format!("'SAME' padding of an empty image ({h} x {w})"),
                    ));
                }
                let (top, oh) = same_axis(h, kh, sh);
                let (left, ow) = same_axis(w, kw, sw);
                Ok(Placement {
                    before: (top, left),
                    out: (oh, ow),
                })
            }
        }
    }

    /// The windows of `x: [n, h, w, c]` as `[n, oh * ow, kh * kw, c]`, with `fill` outside the
    /// image, `(oh, ow)`, and the number of in-image elements of each window (`oh * ow` of
    /// them, row-major).
    fn patches(
        &self,
        op: &'static str,
        x: &Tensor,
        fill: f64,
    ) -> Result<(Tensor, usize, usize, Vec<usize>)> {
        let &[n, h, w, c] = x.shape() else {
            unreachable!("checked by the callers")
        };
        let Placement {
            before: (ph, pw),
            out: (oh, ow),
        } = self.place(op, h, w)?;
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        let pad_row = (h * w) as i64;
        let mut idx = Vec::with_capacity(oh * ow * kh * kw);
        let mut counts = Vec::with_capacity(oh * ow);
        for i in 0..oh {
            for j in 0..ow {
                let mut inside = 0;
                for di in 0..kh {
                    for dj in 0..kw {
                        let r = (i * sh + di) as i64 - ph as i64;
                        let q = (j * sw + dj) as i64 - pw as i64;
                        idx.push(if r >= 0 && q >= 0 && r < h as i64 && q < w as i64 {
                            inside += 1;
                            r * w as i64 + q
                        } else {
                            pad_row
                        });
                    }
                }
                counts.push(inside);
            }
        }
        let idx = Tensor::from_vec(idx, &[oh * ow * kh * kw])?;
        let flat = x.try_reshape_to(&[n, h * w, c])?;
        let fill = Tensor::try_full_dtype(&[n, 1, c], fill, x.dtype())?;
        let padded = Tensor::try_concat(&[&flat, &fill], 1)?;
        let cols = padded.try_take(&idx, 1)?;
        Ok((
            cols.try_reshape_to(&[n, oh * ow, kh * kw, c])?,
            oh,
            ow,
            counts,
        ))
    }
}

/// Check an NHWC input (rank 4, or rank 3 for one unbatched image) and make it rank 4.
fn as_batch(op: &'static str, x: &Tensor, channels: Option<usize>) -> Result<(Tensor, bool)> {
    let ok_c = |c: usize| channels.is_none_or(|want| want == c);
    let shape = x.shape();
    let bad = || {
        invalid(
            op,
            format!(
                "expected an NHWC input [n, h, w, {}] (or [h, w, c]) of floats, got {} {}",
                channels.map_or("c".to_string(), |c| c.to_string()),
                x.dtype().name(),
                x.shape_display()
            ),
        )
    };
    if !x.dtype().is_float() {
        return Err(bad());
    }
    match shape.len() {
        4 if ok_c(shape[3]) => Ok((x.clone(), false)),
        3 if ok_c(shape[2]) => {
            let mut s = vec![1];
            s.extend_from_slice(shape);
            Ok((x.try_reshape_to(&s)?, true))
        }
        _ => Err(bad()),
    }
}

/// Drop the batch axis added by [`as_batch`] for an unbatched input.
fn unbatch(y: Tensor, unbatched: bool) -> Result<Tensor> {
    if unbatched {
        let s = y.shape()[1..].to_vec();
        y.try_reshape_to(&s)
    } else {
        Ok(y)
    }
}

/// A 2-D convolution (cross-correlation, as in every framework) over NHWC inputs:
/// `x: [n, h, w, in]` (or an unbatched `[h, w, in]`) to `[n, oh, ow, out]` with
/// `oh = (h + 2·pad_h - kh) / stride_h + 1` with explicit padding, `ceil(h / stride_h)` with
/// [`Padding::Same`]. The kernel is `[kh, kw, in, out]` (HWIO, flax's layout) and the bias
/// `[out]`. Padding is zeros.
///
/// Defaults: stride 1, padding 0, LeCun-normal kernel (fan-in `kh·kw·in`), zero bias, f32.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::Conv2d;
/// let conv = Conv2d::builder(1, 1, (2, 2)).bias(false).build();
/// conv.kernel.set_value(Tensor::ones(&[2, 2, 1, 1]));
/// // A 3x3 image 0..9: each output sums a 2x2 window.
/// let x = Tensor::arange(0.0, 9.0, 1.0).unwrap().reshape(&[1, 3, 3, 1]);
/// let y = conv.forward(&x);
/// assert_eq!(y.shape(), &[1, 2, 2, 1]);
/// assert_eq!(y.to_vec::<f32>(), vec![8.0, 12.0, 20.0, 24.0]);
/// ```
#[derive(stategrad_derive::Module)]
#[module(crate = "stategrad_core")]
pub struct Conv2d {
    /// `[kh, kw, in, out]`, a `ParamState`.
    pub kernel: State,
    /// `[out]`, a `ParamState`; `None` without bias.
    pub bias: Option<State>,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    out_channels: usize,
    #[module(skip)]
    window: Window,
}

/// Options of a [`Conv2d`] (from [`Conv2d::builder`]).
///
/// ```
/// use stategrad_core::{DType, Tensor};
/// use stategrad_nn::{init::Initializer, layers::Conv2d};
/// let conv = Conv2d::builder(3, 8, (3, 3))
///     .stride((2, 2))
///     .padding((1, 1))
///     .dtype(DType::F64)
///     .kernel_init(Initializer::HeNormal)
///     .build();
/// let y = conv.forward(&Tensor::ones(&[2, 9, 9, 3]).astype(DType::F64));
/// assert_eq!(y.shape(), &[2, 5, 5, 8]);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2dBuilder {
    in_channels: usize,
    out_channels: usize,
    window: Window,
    bias: bool,
    dtype: DType,
    kernel_init: Initializer,
    bias_init: Initializer,
}

impl Conv2dBuilder {
    /// The strides `(h, w)` (default `(1, 1)`).
    pub fn stride(mut self, stride: (usize, usize)) -> Self {
        self.window.stride = stride;
        self
    }
    /// Zero padding: `(h, w)` on each side (default `(0, 0)`), or [`Padding::Same`].
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.window.padding = padding.into();
        self
    }
    /// With or without bias (default with).
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    /// The parameters' dtype (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// The kernel's initialiser (default [`Initializer::LecunNormal`]).
    pub fn kernel_init(mut self, init: Initializer) -> Self {
        self.kernel_init = init;
        self
    }
    /// The bias's initialiser (default [`Initializer::Zeros`]).
    pub fn bias_init(mut self, init: Initializer) -> Self {
        self.bias_init = init;
        self
    }
    /// Build the layer; panics where [`Conv2dBuilder::try_build`] errs.
    #[track_caller]
    pub fn build(&self) -> Conv2d {
        match self.try_build() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }
    /// Build the layer; errs for a zero kernel size or stride, a non-float dtype or a bad
    /// initialiser.
    ///
    /// ```
    /// use stategrad_nn::layers::Conv2d;
    /// assert!(Conv2d::builder(1, 1, (3, 3)).stride((0, 1)).try_build().is_err());
    /// ```
    pub fn try_build(&self) -> Result<Conv2d> {
        self.window.check("Conv2d")?;
        let (kh, kw) = self.window.kernel;
        let kernel = self
            .kernel_init
            .try_init_dtype(&[kh, kw, self.in_channels, self.out_channels], self.dtype)?;
        let bias = if self.bias {
            Some(ParamState::new(
                self.bias_init
                    .try_init_dtype(&[self.out_channels], self.dtype)?,
            ))
        } else {
            None
        };
        Ok(Conv2d {
            kernel: ParamState::new(kernel),
            bias,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            window: self.window,
        })
    }
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with a `kernel` of `(kh, kw)`, stride
    /// 1, no padding, and the default options.
    #[track_caller]
    pub fn new(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Conv2d {
        Conv2d::builder(in_channels, out_channels, kernel).build()
    }

    /// The options, to change before [`Conv2dBuilder::build`].
    pub fn builder(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
    ) -> Conv2dBuilder {
        Conv2dBuilder {
            in_channels,
            out_channels,
            window: Window {
                kernel,
                stride: (1, 1),
                padding: Padding::default(),
            },
            bias: true,
            dtype: DType::F32,
            kernel_init: Initializer::LecunNormal,
            bias_init: Initializer::Zeros,
        }
    }

    /// Convolve; panics where [`Conv2d::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Convolve, or an error for an input that is not NHWC with `in_channels` channels (or is
    /// smaller than the kernel after padding).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::Conv2d;
    /// let conv = Conv2d::new(2, 4, (3, 3));
    /// assert_eq!(conv.try_forward(&Tensor::ones(&[5, 5, 2])).unwrap().shape(), &[3, 3, 4]);
    /// assert!(conv.try_forward(&Tensor::ones(&[1, 5, 5, 3])).is_err());
    /// assert!(conv.try_forward(&Tensor::ones(&[1, 2, 2, 2])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        let (x4, unbatched) = as_batch("Conv2d", x, Some(self.in_channels))?;
        let n = x4.shape()[0];
        let (cols, oh, ow, _) = self.window.patches("Conv2d", &x4, 0.0)?;
        let (kh, kw) = self.window.kernel;
        let k = kh * kw * self.in_channels;
        let cols = cols.try_reshape_to(&[n, oh * ow, k])?;
        let kernel = self
            .kernel
            .value()
            .try_reshape_to(&[k, self.out_channels])?;
        let mut y = cols.try_matmul(&kernel)?;
        if let Some(b) = &self.bias {
            y = y.try_add(&b.value())?;
        }
        unbatch(
            y.try_reshape_to(&[n, oh, ow, self.out_channels])?,
            unbatched,
        )
    }
}

impl_layer!(Conv2d);

macro_rules! pool {
    (
        $(#[$doc:meta])* $name:ident, $op:literal, $fill:expr,
        { $($(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr),* }
    ) => {
        $(#[$doc])*
        #[derive(stategrad_derive::Module, Clone, Debug)]
        #[module(crate = "stategrad_core")]
        pub struct $name {
            #[module(skip)]
            window: Window,
            $(
                $(#[$fdoc])*
                #[module(skip)]
                $field: $ty,
            )*
        }

        impl $name {
            /// Pooling over `(kh, kw)` windows with stride equal to the kernel and no padding.
            pub fn new(kernel: (usize, usize)) -> $name {
                $name {
                    window: Window {
                        kernel,
                        stride: kernel,
                        padding: Padding::default(),
                    },
                    $($field: $default,)*
                }
            }

            /// The same pooling with strides `(h, w)`.
            pub fn stride(mut self, stride: (usize, usize)) -> $name {
                self.window.stride = stride;
                self
            }

            /// The same pooling with `(h, w)` padding on each side (at most half the kernel),
            /// or [`Padding::Same`].
            pub fn padding(mut self, padding: impl Into<Padding>) -> $name {
                self.window.padding = padding.into();
                self
            }

            /// Pool; panics where `try_forward` errs.
            #[track_caller]
            pub fn forward(&self, x: &Tensor) -> Tensor {
                unwrap(self.try_forward(x))
            }

            /// Pool, or an error for an input that is not NHWC floats, a zero kernel size or
            /// stride, padding over half the kernel, or a padded input smaller than the kernel.
            ///
            /// ```
            /// use stategrad_core::Tensor;
            #[doc = concat!("use stategrad_nn::layers::", stringify!($name), ";")]
            #[doc = concat!("let p = ", stringify!($name), "::new((2, 2)).stride((1, 1));")]
            /// assert_eq!(p.try_forward(&Tensor::ones(&[3, 3, 2])).unwrap().shape(), &[2, 2, 2]);
            /// assert!(p.try_forward(&Tensor::ones(&[1, 1, 2])).is_err());
            /// assert!(p.clone().padding((2, 0)).try_forward(&Tensor::ones(&[3, 3, 2])).is_err());
            /// ```
            pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
                let (x4, unbatched) = as_batch($op, x, None)?;
                let (kh, kw) = self.window.kernel;
                if let Padding::Explicit(ph, pw) = self.window.padding {
                    if 2 * ph > kh || 2 * pw > kw {
                        return Err(invalid(
                            $op,
                            format!("padding ({ph}, {pw}) is over half the kernel ({kh}, {kw})"),
                        ));
                    }
                }
                let (n, c) = (x4.shape()[0], x4.shape()[3]);
                let (cols, oh, ow, counts) = self.window.patches($op, &x4, $fill)?;
                let y = self.reduce(&cols, &counts)?;
                unbatch(y.try_reshape_to(&[n, oh, ow, c])?, unbatched)
            }
        }

        impl_layer!($name);
    };
}

pool! {
    /// Max pooling over NHWC inputs (`[n, h, w, c]` or `[h, w, c]`): each output is the largest
    /// element of its `(kh, kw)` window. Padding, when set, is `-inf` (never the maximum).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::MaxPool2d;
    /// let x = Tensor::arange(0.0, 16.0, 1.0).unwrap().reshape(&[1, 4, 4, 1]);
    /// let y = MaxPool2d::new((2, 2)).forward(&x);
    /// assert_eq!(y.to_vec::<f32>(), vec![5.0, 7.0, 13.0, 15.0]);
    /// let y = MaxPool2d::new((3, 3)).stride((1, 1)).padding((1, 1)).forward(&x);
    /// assert_eq!(y.shape(), &[1, 4, 4, 1]);
    /// ```
    MaxPool2d, "MaxPool2d", f64::NEG_INFINITY, {}
}

impl MaxPool2d {
    /// `[n, windows, kh * kw, c]` to each window's maximum.
    fn reduce(&self, cols: &Tensor, _counts: &[usize]) -> Result<Tensor> {
        cols.try_max_along(&[2], false)
    }
}

pool! {
    /// Average pooling over NHWC inputs (`[n, h, w, c]` or `[h, w, c]`): each output is the
    /// mean of its `(kh, kw)` window. Padding, when set, is zeros that count in the mean by
    /// default (`kh·kw` divides every window's sum: PyTorch's default `count_include_pad=True`,
    /// and flax's `avg_pool`); [`AvgPool2d::count_include_pad`]`(false)` divides each sum by
    /// the number of the window's elements inside the image instead (PyTorch's
    /// `count_include_pad=False`, and TensorFlow's `'SAME'` average pooling).
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::AvgPool2d;
    /// let x = Tensor::arange(0.0, 16.0, 1.0).unwrap().reshape(&[1, 4, 4, 1]);
    /// let y = AvgPool2d::new((2, 2)).forward(&x);
    /// assert_eq!(y.to_vec::<f32>(), vec![2.5, 4.5, 10.5, 12.5]);
    /// ```
    AvgPool2d, "AvgPool2d", 0.0, {
        /// Whether the padding counts in the mean's divisor.
        count_include_pad: bool = true
    }
}

impl AvgPool2d {
    /// The same pooling where padding counts in the mean's divisor (`true`, the default, as
    /// PyTorch's `count_include_pad=True`), or not (`false`: each window's sum is divided by
    /// its number of in-image elements). Without padding both are the same.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::AvgPool2d;
    /// // A 2x2 image of ones, 2x2 windows with stride 1 and one pixel of zero padding: the
    /// // corner windows hold one image element, the edge windows two, the middle four.
    /// let x = Tensor::ones(&[1, 2, 2, 1]);
    /// let pool = AvgPool2d::new((2, 2)).stride((1, 1)).padding((1, 1));
    /// let with = pool.clone().forward(&x).to_vec::<f32>();
    /// assert_eq!(with, vec![0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]);
    /// let without = pool.count_include_pad(false).forward(&x).to_vec::<f32>();
    /// assert_eq!(without, vec![1.0; 9]);
    /// ```
    pub fn count_include_pad(mut self, on: bool) -> AvgPool2d {
        self.count_include_pad = on;
        self
    }

    /// `[n, windows, kh * kw, c]` to each window's mean.
    fn reduce(&self, cols: &Tensor, counts: &[usize]) -> Result<Tensor> {
        let (kh, kw) = self.window.kernel;
        if self.count_include_pad || counts.iter().all(|&k| k == kh * kw) {
            return cols.try_mean_along(&[2], false);
        }
        let counts: Vec<f64> = counts.iter().map(|&k| k as f64).collect();
        let m = counts.len();
        let counts = Tensor::from_vec(counts, &[m, 1])?.astype(cols.dtype());
        cols.try_sum_along(&[2], false)?.try_div(&counts)
    }
}

/// Flattens every axis from `start_axis` (default 1, keeping the batch axis) into one:
/// `[n, h, w, c] → [n, h·w·c]`.
///
/// ```
/// use stategrad_core::Tensor;
/// use stategrad_nn::layers::Flatten;
/// assert_eq!(Flatten::new().forward(&Tensor::ones(&[2, 3, 4])).shape(), &[2, 12]);
/// assert_eq!(Flatten::from_axis(0).forward(&Tensor::ones(&[2, 3])).shape(), &[6]);
/// ```
#[derive(stategrad_derive::Module, Clone, Debug)]
#[module(crate = "stategrad_core")]
pub struct Flatten {
    #[module(skip)]
    start_axis: usize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten::new()
    }
}

impl Flatten {
    /// Flatten all axes but the first.
    pub fn new() -> Flatten {
        Flatten { start_axis: 1 }
    }

    /// Flatten the axes from `start_axis` on.
    pub fn from_axis(start_axis: usize) -> Flatten {
        Flatten { start_axis }
    }

    /// Flatten; panics where [`Flatten::try_forward`] errs.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        unwrap(self.try_forward(x))
    }

    /// Flatten, or an error when `x` has fewer than `start_axis` axes.
    ///
    /// ```
    /// use stategrad_core::Tensor;
    /// use stategrad_nn::layers::Flatten;
    /// assert!(Flatten::from_axis(2).try_forward(&Tensor::ones(&[3])).is_err());
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        if s.len() < self.start_axis {
            return Err(invalid(
                "Flatten",
                format!(
                    "cannot flatten from axis {} a tensor of shape {}",
                    self.start_axis,
                    x.shape_display()
                ),
            ));
        }
        let mut shape = s[..self.start_axis].to_vec();
        shape.push(s[self.start_axis..].iter().product());
        x.try_reshape_to(&shape)
    }
}

impl_layer!(Flatten);

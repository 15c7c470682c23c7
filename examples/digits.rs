//! Digits classifiers, an MLP (64-128-10) and a small CNN (the 8x8 images as NHWC [n, 8, 8, 1]),
//! each trained with one jitted AdamW step per mini-batch (warm-up + cosine learning rate,
//! weight decay masked off the biases), a progress bar per epoch (loss, test accuracy, time),
//! then checkpointed with the optimizer, reloaded into a fresh model and re-evaluated.
//! Writes the loss/accuracy curves to `target/digits_curve.svg` and the checkpoints to the
//! temp dir. `cargo run --release --example digits`
//!
//! The training code (data, models, loss, optimizer, step, loop, checkpoint round trip: `main`
//! and `train`) is 59 lines, blank and comment lines not counted; the plot is `plot`, below.
use indicatif::{ProgressBar, ProgressStyle};
use stategrad::nn::activation::Activation::Relu;
use stategrad::nn::checkpoint::{load_file, merge_prefixed, save_file};
use stategrad::nn::data::{load_digits, Batches, Dataset};
use stategrad::nn::layers::{Conv2d, Flatten, Layer, Linear, MaxPool2d, Mlp, Padding, Sequential};
use stategrad::nn::loss::{softmax_cross_entropy as xent, Reduction::Mean};
use stategrad::nn::metrics::accuracy;
use stategrad::optim::{adamw, warmup_cosine_decay, Optim, Optimizer};
use stategrad::prelude::*;
use std::time::Instant;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// Per epoch: the mean training loss and the test accuracy in %.
type Curve = Vec<(f64, f64)>;
const EPOCHS: usize = 20;

fn main() -> Res<()> {
    let conv = |i, o| Conv2d::builder(i, o, (3, 3)).padding(Padding::Same).build();
    let block = |s: Sequential, i, o| s.push(conv(i, o)).push(Relu).push(MaxPool2d::new((2, 2)));
    let cnn = || {
        block(block(Sequential::new(), 1, 16), 16, 32)
            .push(Flatten::new())
            .push(Linear::new(128, 10))
    };
    let mlp = train("mlp", || Mlp::new(&[64, 128, 10], Relu), &[-1, 64])?;
    let cnn = train("cnn", cnn, &[-1, 8, 8, 1])?;
    assert!(mlp[EPOCHS - 1].1 >= 97.0 && cnn[EPOCHS - 1].1 >= 98.0);
    plot(&[("MLP", &mlp), ("CNN", &cnn)])
}

/// Train a fresh `make()`, checkpoint it with its optimizer and reload both into fresh ones.
fn train<M: Layer + Module>(name: &str, make: impl Fn() -> M, shape: &[isize]) -> Res<Curve> {
    stategrad::random::seed(0);
    let (train, test) = load_digits()?.split(360, 0)?;
    let x = |d: &Dataset| d.features.reshape(shape) / 16.0;
    let data = [x(&train), train.labels.clone()];
    let batches = Batches::new(&data, 32)?.shuffle(0).drop_last(true);
    let (n, mut curve) = (batches.num_batches(), Curve::new());
    let lr = warmup_cosine_decay(0.0, 3e-3, (EPOCHS * n / 10) as u64, (EPOCHS * n) as u64);
    // AdamW (weight decay 1e-4) with no decay on the biases.
    let optimizer = adamw(lr).mask(Filter::not(Filter::path_contains("bias")));
    let model = make();
    let p = model.states(ParamState);
    let opt = optimizer.build(&p)?;
    let step = jit(|xy: (Tensor, Tensor)| -> stategrad::Result<Tensor> {
        let loss = |(x, y): (Tensor, Tensor)| xent(&model.forward(&x), &y, Mean);
        let (grads, l) = grad(loss).grad_states(p.clone()).return_value().call(xy)?;
        opt.step(&grads)?;
        Ok(l)
    });
    let test_acc = |m: &M| accuracy(&m.forward(&x(&test)), &test.labels).item();
    let style = ProgressStyle::with_template("{prefix} {bar:25} {msg}")?;
    for epoch in 0..EPOCHS {
        let bar = ProgressBar::new(n as u64).with_style(style.clone());
        bar.set_prefix(format!("{name} epoch {:2}/{EPOCHS}", epoch + 1));
        let (start, mut sum) = (Instant::now(), 0.0);
        for b in batches.epoch(epoch as u64) {
            sum += step.call((b[0].clone(), b[1].clone()))?.item()?;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", sum / bar.position() as f64));
        }
        let (time, loss, acc) = (start.elapsed(), sum / n as f64, 100.0 * test_acc(&model)?);
        curve.push((loss, acc));
        let msg = format!("loss {loss:.4}, test accuracy {acc:.1} %, {time:.1?} per epoch");
        bar.finish_with_message(msg.clone());
        bar.is_hidden().then(|| println!("{} {msg}", bar.prefix())); // not a terminal
    }
    assert_eq!(step.trace_count(), 1);
    // Checkpoint model and optimizer in one file, reload into a fresh model and optimizer.
    let file = std::env::temp_dir().join(format!("digits_{name}.safetensors"));
    let ckpt = |m: &M, o: &Optim| [("model.", m.states(ParamState)), ("optim.", o.states())];
    save_file(&merge_prefixed(ckpt(&model, &opt)), &file)?;
    let fresh = make();
    let fresh_opt = optimizer.build(&fresh.states(ParamState))?;
    load_file(&merge_prefixed(ckpt(&fresh, &fresh_opt)), &file)?;
    assert_eq!(100.0 * test_acc(&fresh)?, curve[EPOCHS - 1].1);
    println!("{name}: the same accuracy reloaded from {file:?}");
    Ok(curve)
}

/// The loss (left) and test accuracy (right) per epoch of each model, as an SVG file.
fn plot(curves: &[(&str, &Curve)]) -> Res<()> {
    use plotters::prelude::*;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/digits_curve.svg");
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    let root = SVGBackend::new(&path, (960, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let epochs = curves.iter().map(|(_, c)| c.len()).max().unwrap_or(1) as f64;
    let max_loss = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    for (panel, (title, lo, hi)) in panels.iter().zip([
        ("training loss", 0.0, max_loss),
        ("test accuracy %", 50.0, 100.0),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..epochs, lo..hi)?;
        chart.configure_mesh().x_desc("epoch").draw()?;
        for (i, (name, curve)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let value = |p: &(f64, f64)| {
                if lo == 0.0 {
                    p.0
                } else {
                    p.1.max(lo)
                }
            };
            let points = curve
                .iter()
                .enumerate()
                .map(|(e, p)| (e as f64 + 1.0, value(p)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
    }
    root.present()?;
    println!("loss and accuracy curves: {}", path.display());
    Ok(())
}

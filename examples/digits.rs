//! Digits classifiers, an MLP (64-128-10) and a small CNN (the 8x8 images as NHWC [n, 8, 8, 1]),
//! each trained with one jitted AdamW step per mini-batch (warm-up + cosine learning rate,
//! weight decay masked off the biases), a progress bar per epoch (loss, test accuracy, time),
//! then checkpointed with the optimizer, reloaded into a fresh model and re-evaluated.
//! Writes the loss/accuracy curves to `target/digits_curve.svg` and the checkpoints to the
//! temp dir. `cargo run --release --example digits`
//!
//! The training code (data, models, loss, optimizer, step, loop, checkpoint: `main` and
//! `train`) is 60 lines; the plot is `plot`, at the bottom.
use indicatif::{ProgressBar, ProgressStyle};
use stategrad::nn::activation::Activation::Relu;
use stategrad::nn::checkpoint::{load_file, merge_prefixed, save_file};
use stategrad::nn::data::{load_digits, Batches, Dataset};
use stategrad::nn::layers::{Conv2d, Flatten, Layer, Linear, MaxPool2d, Mlp, Padding, Sequential};
use stategrad::nn::loss::{softmax_cross_entropy, Reduction};
use stategrad::nn::metrics::accuracy;
use stategrad::optim::{adamw, warmup_cosine_decay, Optim, Optimizer};
use stategrad::prelude::*;
use std::time::Instant;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// Per epoch: the mean training loss and the test accuracy.
type Curve = Vec<(f64, f64)>;
const EPOCHS: u64 = 20;

fn main() -> Res<()> {
    let conv = |i, o| Conv2d::builder(i, o, (3, 3)).padding(Padding::Same).build();
    let cnn = || {
        Sequential::new()
            .push(conv(1, 16))
            .push(Relu)
            .push(MaxPool2d::new((2, 2)))
            .push(conv(16, 32))
            .push(Relu)
            .push(MaxPool2d::new((2, 2)))
            .push(Flatten::new())
            .push(Linear::new(2 * 2 * 32, 10))
    };
    let mlp_curve = train("mlp", || Mlp::new(&[64, 128, 10], Relu), &[-1, 64])?;
    let cnn_curve = train("cnn", cnn, &[-1, 8, 8, 1])?;
    let (mlp_acc, cnn_acc) = (
        mlp_curve[EPOCHS as usize - 1].1,
        cnn_curve[EPOCHS as usize - 1].1,
    );
    assert!(mlp_acc >= 0.97 && cnn_acc >= 0.98, "{mlp_acc} {cnn_acc}");
    plot(&[("MLP", &mlp_curve), ("CNN", &cnn_curve)])
}

/// Train a fresh `make()`, checkpoint it with its optimizer and reload both into fresh ones.
fn train<M: Layer + Module>(name: &str, make: impl Fn() -> M, shape: &[isize]) -> Res<Curve> {
    stategrad::random::seed(0);
    let (train, test) = load_digits()?.split(360, 0)?;
    let x = |d: &Dataset| d.features.reshape(shape) / 16.0;
    let batches = Batches::new(&[x(&train), train.labels.clone()], 32)?
        .shuffle(0)
        .drop_last(true);
    let steps = EPOCHS * batches.num_batches() as u64;
    let lr = warmup_cosine_decay(0.0, 3e-3, steps / 10, steps);
    let optimizer = adamw(lr)
        .weight_decay(1e-4)
        .mask(Filter::not(Filter::path_contains("bias")));
    let (model, mut curve) = (make(), Curve::new());
    let params = model.states(ParamState);
    let opt = optimizer.build(&params)?;
    let step = jit(|(x, y): (Tensor, Tensor)| -> stategrad::Result<Tensor> {
        let loss = |(x, y): (Tensor, Tensor)| {
            softmax_cross_entropy(&model.forward(&x), &y, Reduction::Mean)
        };
        let (grads, l) = grad(loss)
            .grad_states(params.clone())
            .return_value()
            .call((x, y))?;
        opt.step(&grads)?;
        Ok(l)
    });
    let test_acc = |m: &M| accuracy(&m.forward(&x(&test)), &test.labels).item();
    let style = ProgressStyle::with_template("{prefix} {bar:25} {msg}")?;
    for epoch in 0..EPOCHS {
        let bar = ProgressBar::new(batches.num_batches() as u64).with_style(style.clone());
        bar.set_prefix(format!("{name} epoch {:2}/{EPOCHS}", epoch + 1));
        let (start, mut sum) = (Instant::now(), 0.0);
        for b in batches.epoch(epoch) {
            sum += step.call((b[0].clone(), b[1].clone()))?.item()?;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", sum / bar.position() as f64));
        }
        let (time, loss) = (start.elapsed(), sum / bar.position() as f64);
        curve.push((loss, test_acc(&model)?));
        let acc = 100.0 * curve[epoch as usize].1;
        let msg = format!("loss {loss:.4}, test accuracy {acc:.1} %, {time:.1?} per epoch");
        match bar.is_hidden() {
            true => println!("{name} epoch {:2}/{EPOCHS} {msg}", epoch + 1),
            false => bar.finish_with_message(msg),
        }
    }
    assert_eq!(step.trace_count(), 1);
    // Checkpoint model and optimizer in one file, reload into a fresh model and optimizer.
    let file = std::env::temp_dir().join(format!("digits_{name}.safetensors"));
    let states = |m: &M, o: &Optim| {
        merge_prefixed([("model.", m.states(ParamState)), ("optim.", o.states())])
    };
    save_file(&states(&model, &opt), &file)?;
    let fresh = make();
    load_file(
        &states(&fresh, &optimizer.build(&fresh.states(ParamState))?),
        &file,
    )?;
    assert_eq!(test_acc(&fresh)?, curve[EPOCHS as usize - 1].1);
    println!(
        "{name}: reloaded from {}, same test accuracy",
        file.display()
    );
    Ok(curve)
}

/// The loss (left) and test accuracy (right) per epoch of each model, as an SVG file.
fn plot(curves: &[(&str, &Vec<(f64, f64)>)]) -> Res<()> {
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
        ("test accuracy", 0.5, 1.0),
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
                if title == "training loss" {
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

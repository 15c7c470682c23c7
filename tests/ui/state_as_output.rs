// A State returned from the function: the output must be a Tensor.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let s = ParamState::new(Tensor::ones(&[2]));
    let f = |x: Tensor| {
        s.set_value(x);
        s.clone()
    };
    let g = grad(f).call(Tensor::ones(&[2]))?;
    println!("{g}");
    Ok(())
}

// return_value: `(G, L)`, not `G`.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let f = |x: Tensor| x.square().sum();
    let g: Tensor = grad(f).return_value().call(Tensor::ones(&[2]))?;
    println!("{g}");
    Ok(())
}

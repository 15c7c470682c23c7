// Row none/any, plain: the result is `G` alone, not `(G, L)`.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let f = |x: Tensor| x.square().sum();
    let (g, v) = grad(f).call(Tensor::ones(&[2]))?;
    println!("{g} {v}");
    Ok(())
}

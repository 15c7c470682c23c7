// has_aux + return_value: `(G, L, X)`, three parts, not two.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let f = |x: Tensor| (x.square().sum(), x.sum());
    let (g, x) = grad(f).has_aux().return_value().call(Tensor::ones(&[2]))?;
    println!("{g} {x}");
    Ok(())
}

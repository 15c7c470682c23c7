// has_aux with a function that returns a lone tensor: not a `(value, aux)` pair.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let f = |x: Tensor| x.square().sum();
    let (g, aux) = grad(f).has_aux().call(Tensor::ones(&[2]))?;
    println!("{g} {aux}");
    Ok(())
}

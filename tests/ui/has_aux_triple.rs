// has_aux with a triple: the reference silently drops the third element; here it is refused.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let f = |x: Tensor| (x.square().sum(), x.sum(), x.mean());
    let (g, aux) = grad(f).has_aux().call(Tensor::ones(&[2]))?;
    println!("{g} {aux:?}");
    Ok(())
}

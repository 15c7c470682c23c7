// argnums([0, 1]) gives exactly two gradients.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let f = |(x, y): (Tensor, Tensor)| (&x * &y).sum();
    let [gx, gy, gz] = grad(f).argnums([0, 1]).call((Tensor::ones(&[2]), Tensor::ones(&[2])))?;
    println!("{gx} {gy} {gz}");
    Ok(())
}

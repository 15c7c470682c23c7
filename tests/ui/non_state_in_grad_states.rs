// A non-State in grad_states is refused at construction.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let w = Tensor::ones(&[2]);
    let f = |x: Tensor| (&x * &w).sum();
    let g = grad(f).grad_states(vec![w.clone()]).call(Tensor::ones(&[2]))?;
    println!("{g:?}");
    Ok(())
}

// hessian with both grad_states and argnums is refused (as in the reference), at compile time.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let s = ParamState::new(Tensor::ones(&[2]));
    let f = |x: Tensor| (&x * &s.value()).square().sum();
    let h = hessian(f).grad_states(s.clone()).argnums(0).call(Tensor::ones(&[2]))?;
    println!("{h:?}");
    Ok(())
}

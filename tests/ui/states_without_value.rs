// grad_states + argnums without return_value: `(V, G)`, not `((V, G), L)`.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let s = ParamState::new(Tensor::ones(&[2]));
    let f = |x: Tensor| (&x * &s.value()).sum();
    let ((v, g), l) = grad(f).grad_states(s.clone()).argnums(0).call(Tensor::ones(&[2]))?;
    println!("{v} {g} {l}");
    Ok(())
}

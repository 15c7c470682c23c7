// A State passed as an argument: states go in grad_states, not argnums.
use stategrad::prelude::*;

fn main() -> Result<()> {
    let s = ParamState::new(Tensor::ones(&[2]));
    let f = |st: State| st.value().square().sum();
    let g = grad(f).call(s.clone())?;
    println!("{g}");
    Ok(())
}

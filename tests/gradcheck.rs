use stategrad::*; #[test] fn t(){ let _ = Tensor::new([1.0f64]); }

//! Loops over an arena program: a compiled `for_loop` or `scan` runs its body many times on one
//! arena, with the iteration number written into one element before each run and written states
//! carried (copied slot to slot) into the slots the next run reads. With native code the whole
//! loop is one generated function: no dispatch per iteration, and the carried values of one
//! iteration go from the registers that computed them to the slots the next one reads.

use crate::arena::{ArenaError, ArenaProgram};
use crate::Element;

/// One carry of an [`ArenaLoop`]: `len` elements copied from offset `from` to offset `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carry {
    /// Source offset (a value the run wrote).
    pub from: usize,
    /// Destination offset (a value the next run reads).
    pub to: usize,
    /// Elements.
    pub len: usize,
}

/// What happens between the runs of a loop over an [`ArenaProgram`] (see
/// [`ArenaProgram::run_loop`]): the iteration number goes into one element, and the carries are
/// copied **all at once**: every carry reads the values the run left before any is written, so
/// states that feed each other (a swap, a rotation) move together.
///
/// ```
/// use stategrad_exec::arena_loop::{ArenaLoop, Carry};
/// // Swap two elements: each carry reads the value before the other writes it.
/// let swap = ArenaLoop::new(None, &[Carry { from: 0, to: 1, len: 1 }, Carry { from: 1, to: 0, len: 1 }]).unwrap();
/// let mut arena = [1.0f32, 2.0];
/// swap.carry(&mut arena, &mut Vec::new()).unwrap();
/// assert_eq!(arena, [2.0, 1.0]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaLoop {
    iter: Option<usize>,
    carries: Vec<Carry>,
    /// One past the last element the loop touches.
    extent: usize,
    /// Some carry writes where another (or itself, shifted) reads: values are staged first.
    staged: bool,
}

impl ArenaLoop {
    /// A loop that writes the iteration number at `iter` (if any) before each run and copies
    /// `carries` after each run but the last. A carry onto itself is dropped (it changes
    /// nothing).
    ///
    /// # Errors
    /// [`ArenaError::LoopOutsideArena`] if an offset plus its length overflows `usize`.
    pub fn new(iter: Option<usize>, carries: &[Carry]) -> Result<Self, ArenaError> {
        let carries: Vec<Carry> = carries
            .iter()
            .copied()
            .filter(|c| c.from != c.to && c.len > 0)
            .collect();
        let mut extent = iter.map_or(Some(0), |i| i.checked_add(1));
        for c in &carries {
            let ends = c.from.checked_add(c.len).zip(c.to.checked_add(c.len));
            extent = extent.zip(ends).map(|(e, (a, b))| e.max(a).max(b));
        }
        let extent = extent.ok_or(ArenaError::LoopOutsideArena)?;
        let overlap = |a: usize, b: usize, n: usize, m: usize| a < b + m && b < a + n;
        let staged = carries
            .iter()
            .any(|w| carries.iter().any(|r| overlap(w.to, r.from, w.len, r.len)));
        Ok(ArenaLoop {
            iter,
            carries,
            extent,
            staged,
        })
    }

    /// The element the iteration number goes into.
    pub fn iter(&self) -> Option<usize> {
        self.iter
    }

    /// The carries (without those onto themselves).
    pub fn carries(&self) -> &[Carry] {
        &self.carries
    }

    /// One past the last element the loop reads or writes.
    pub fn extent(&self) -> usize {
        self.extent
    }

    /// Whether some carry writes where a carry reads, so that every value is read before any
    /// is written.
    pub fn staged(&self) -> bool {
        self.staged
    }

    /// Copies every carry at once (see [`ArenaLoop`]); `scratch` holds the staged values when
    /// carries overlap (reused between calls).
    ///
    /// # Errors
    /// [`ArenaError::LoopOutsideArena`] (and nothing is copied) if `arena` is shorter than
    /// [`ArenaLoop::extent`].
    pub fn carry<T: Copy>(&self, arena: &mut [T], scratch: &mut Vec<T>) -> Result<(), ArenaError> {
        if arena.len() < self.extent {
            return Err(ArenaError::LoopOutsideArena);
        }
        self.carry_in(arena, scratch);
        Ok(())
    }

    /// [`ArenaLoop::carry`] on an arena already checked to reach [`ArenaLoop::extent`].
    fn carry_in<T: Copy>(&self, arena: &mut [T], scratch: &mut Vec<T>) {
        if !self.staged {
            for c in &self.carries {
                arena.copy_within(c.from..c.from + c.len, c.to);
            }
            return;
        }
        scratch.clear();
        for c in &self.carries {
            scratch.extend_from_slice(&arena[c.from..c.from + c.len]);
        }
        let mut at = 0;
        for c in &self.carries {
            arena[c.to..c.to + c.len].copy_from_slice(&scratch[at..at + c.len]);
            at += c.len;
        }
    }
}

impl<T: Element> ArenaProgram<T> {
    /// Runs the program `runs` times on `arena`: before run `k` the element at `lp.iter()` is
    /// set to `start + k`, after every run but the last the carries are copied (all at once).
    /// The last run's values stay in the arena. A loop that takes the program to its
    /// native-code threshold gets its code first; with native code the whole loop is one
    /// generated function. Same bits as calling [`ArenaProgram::run`] in a loop.
    ///
    /// # Errors
    /// [`ArenaError::ArenaTooShort`] as [`ArenaProgram::run`];
    /// [`ArenaError::LoopOutsideArena`] (and nothing runs) if the loop reaches past the
    /// program's size or the last iteration number `start + runs - 1` overflows.
    ///
    /// # Panics
    /// If a closure step panics (the panic is passed on; later iterations do not run, and what
    /// the arena then holds is unspecified: generated code may have skipped the rest of the
    /// iteration).
    ///
    /// # Example
    /// ```
    /// use stategrad_exec::arena::{ArenaOpd, ArenaProgram, ArenaStep};
    /// use stategrad_exec::arena_loop::{ArenaLoop, Carry};
    /// use stategrad_exec::BinaryOp;
    /// // arena: [i, acc, acc + i]; 5 runs carry the sum back into `acc`.
    /// let steps = [ArenaStep::Binary1 { op: BinaryOp::Add, a: ArenaOpd::Slice(1), b: ArenaOpd::Slice(0), out: 2 }];
    /// let p = ArenaProgram::<f64>::new(&steps, vec![], 3).unwrap();
    /// let lp = ArenaLoop::new(Some(0), &[Carry { from: 2, to: 1, len: 1 }]).unwrap();
    /// let mut arena = [0.0, 100.0, 0.0];
    /// p.run_loop(&mut arena, &lp, 1, 5).unwrap();
    /// assert_eq!(arena[2], 100.0 + 1.0 + 2.0 + 3.0 + 4.0 + 5.0);
    /// ```
    pub fn run_loop(
        &self,
        arena: &mut [T],
        lp: &ArenaLoop,
        start: usize,
        runs: usize,
    ) -> Result<(), ArenaError> {
        let size = self.size();
        let Some(arena) = arena.get_mut(..size) else {
            return Err(ArenaError::ArenaTooShort {
                len: arena.len(),
                size,
            });
        };
        if runs == 0 {
            return Ok(());
        }
        if lp.extent > size || start.checked_add(runs - 1).is_none() {
            return Err(ArenaError::LoopOutsideArena);
        }
        self.expect_runs(runs);
        if let Some(code) = self.loop_code(lp) {
            code.run_loop(arena, self.closures(), start, runs);
            return Ok(());
        }
        let mut scratch = Vec::new();
        for k in 0..runs {
            if let Some(i) = lp.iter {
                arena[i] = T::from_f64((start + k) as f64);
            }
            self.run(arena)?;
            if k + 1 < runs {
                lp.carry_in(arena, &mut scratch);
            }
        }
        Ok(())
    }
}

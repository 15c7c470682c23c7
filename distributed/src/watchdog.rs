//! A deadline on blocking handshakes: MPI cannot abandon a started collective, so a rank whose
//! peers never arrive ends the job instead of hanging.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Armed {
    deadline: Option<(Instant, &'static str)>,
    quit: bool,
}

/// One thread per [`crate::World`], waiting on a condition variable; arming and disarming cost a
/// lock and a notify.
pub(crate) struct Watchdog {
    shared: Arc<(Mutex<Armed>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub(crate) fn start(rank: usize) -> Watchdog {
        let shared: Arc<(Mutex<Armed>, Condvar)> = Arc::default();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("stategrad-mpi-watchdog".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if g.quit {
                        return;
                    }
                    match g.deadline {
                        None => g = cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                        Some((at, op)) => {
                            let now = Instant::now();
                            if now >= at {
                                eprintln!(
                                    "stategrad-distributed: rank {rank}: `{op}` did not complete before its timeout; another rank is not taking part (hung or dead). Exiting with status 124 so that mpirun ends the job."
                                );
                                std::process::exit(124);
                            }
                            g = cv
                                .wait_timeout(g, at - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                }
            })
            .ok();
        Watchdog { shared, thread }
    }

    /// Run `f` with the deadline `timeout` from now.
    pub(crate) fn guard<T>(&self, op: &'static str, timeout: Duration, f: impl FnOnce() -> T) -> T {
        self.set(Instant::now().checked_add(timeout).map(|at| (at, op)));
        let out = f();
        self.set(None);
        out
    }

    fn set(&self, deadline: Option<(Instant, &'static str)>) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).deadline = deadline;
        cv.notify_one();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).quit = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

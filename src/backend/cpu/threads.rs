//! Threads for the CPU kernels: the rows of one batch split over a small pool.
//!
//! [`with_threads`] runs a closure with a pool of `n - 1` helper threads attached to the calling
//! thread; every [`Cpu`](super::Cpu) kernel called from that thread splits its rows (or, for
//! column statistics, its columns) into one contiguous part per thread, runs the first part
//! itself and the others on the helpers, and waits for them. Outside [`with_threads`], and on
//! any other thread, the kernels run on the calling thread alone.
//!
//! Each part computes exactly what the one-thread loop computes for its rows: no sum crosses a
//! part boundary, and GEMM (matrixmultiply, single-threaded) gives each element the same
//! summation order whatever the rows around it. So **the results are bit-identical for every
//! thread count**, not only from run to run. (With the `openblas` feature this holds for every
//! kernel but GEMM: OpenBLAS picks its blocking by shape, so a product split into parts may
//! round differently in the last bits.)
//!
//! This is the only parallelism of the CPU path: matrixmultiply is built without its own threads,
//! and the command-line tool sets OpenBLAS to one thread, so the pool never competes with a BLAS
//! thread pool for the cores.
//!
//! # Why not rayon
//!
//! A FISTA iteration on a batch of 250 is a handful of kernels of 10–50 µs each, thousands of
//! times per epoch. A rayon pool's idle workers yield and then sleep between such kernels, and
//! waking them cost about as much as the kernels saved: an MNIST VDL epoch ran at 2.8–3.3 s on
//! two threads against 3.0–3.3 s on one. The helpers here spin (with the `pause` hint) for about
//! a millisecond after each part before they park, so a kernel that follows within that time
//! starts on all threads at once. The price is that an idle helper keeps its core busy for that
//! millisecond.

use std::cell::{Cell, UnsafeCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Below this much work (multiply-adds or element updates) a kernel is not split: handing a part
/// to a helper costs about a microsecond, what a few thousand element updates take.
pub const MIN_PARALLEL_WORK: usize = 8192;

/// Spins of a helper waiting for the next part before it parks (about a millisecond).
const SPINS_BEFORE_PARK: usize = 20_000;

/// A part to run: the kernel's closure, called with the part index.
type Job = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Incremented for every job; helpers run a job when they see a new value.
    epoch: AtomicUsize,
    /// The current job; written by the owner before it increments `epoch`.
    job: UnsafeCell<Option<Job>>,
    /// Number of parts of the current job (helper `i` runs part `i` when `i < parts`).
    parts: AtomicUsize,
    /// Helpers that have not finished the current job.
    pending: AtomicUsize,
    /// Whether a helper's part panicked.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the owning thread while no helper reads it (all helpers have
// finished the previous job: `pending == 0`), and read by helpers only after they observe the
// new `epoch` (release/acquire), until they decrement `pending`. The closure it points to is
// `Sync`, so calling it from a helper is sound.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`; the raw pointer is the only field that is not `Send` by itself.
unsafe impl Send for Shared {}

/// `threads - 1` helper threads owned by the thread that runs [`with_threads`].
struct Pool {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

thread_local! {
    /// The pool of the enclosing [`with_threads`] on this thread, if any.
    static POOL: Cell<Option<&'static Pool>> = const { Cell::new(None) };
    /// Whether this thread is running a part of a job (see [`for_each_part`]): a kernel called
    /// from inside a part runs inline on the calling thread instead of handing parts to
    /// helpers that are busy with the enclosing job.
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as inside a part until dropped (also on unwind).
struct InPart(bool);

impl InPart {
    fn enter() -> InPart {
        InPart(IN_PART.with(|c| c.replace(true)))
    }
}

impl Drop for InPart {
    fn drop(&mut self) {
        IN_PART.with(|c| c.set(self.0));
    }
}

impl Pool {
    fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            parts: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = Pool {
            shared,
            helpers: Vec::with_capacity(threads.saturating_sub(1)),
        };
        for index in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("varsparse-{index}"))
                .spawn(move || helper(&shared, index))?;
            pool.helpers.push(handle);
        }
        Ok(pool)
    }

    fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(0)` here and `f(1..parts)` on the helpers; returns when all are done.
    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: every helper has
        // finished with the job (`pending == 0`) before `run` returns, even if a part panics.
        let job: Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f)
        };
        // SAFETY: no helper reads `job` now (the previous job is complete, see `Shared`).
        unsafe { *s.job.get() = Some(job) };
        s.parts.store(parts, Ordering::Relaxed);
        s.pending.store(self.helpers.len(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| {
            let _part = InPart::enter();
            f(0)
        }));
        let mut spins = 0usize;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPINS_BEFORE_PARK {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a varsparse kernel panicked on a helper thread");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// The loop of helper `index`: wait for a new epoch (spin, then park), run its part, report.
fn helper(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0usize;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            spins += 1;
            if spins < SPINS_BEFORE_PARK {
                std::hint::spin_loop();
                continue;
            }
            let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            let guard = s
                .wake
                .wait_while(guard, |_| s.epoch.load(Ordering::SeqCst) == seen)
                .unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            spins = 0;
        };
        seen = epoch;
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        if index < s.parts.load(Ordering::Relaxed) {
            // SAFETY: the owner wrote `job` before publishing `epoch` and keeps it alive until
            // `pending` reaches zero (see `Pool::run`).
            if let Some(job) = unsafe { *s.job.get() } {
                let f = unsafe { &*job };
                let _part = InPart::enter();
                if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Runs `f` with the CPU kernels it calls (on this thread) split over `threads` threads: this
/// one and `threads - 1` helpers started for the call and stopped after it. Results do not
/// depend on `threads`.
///
/// # Errors
/// [`Error::InvalidParameter`] for `threads = 0` or when the helper threads cannot be started.
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> Result<R> {
    if threads == 0 {
        return Err(Error::param("threads", 0, "must be at least 1"));
    }
    let pool = Pool::new(threads).map_err(|e| {
        Error::param(
            "threads",
            threads,
            format!("could not start the helper threads: {e}"),
        )
    })?;
    // SAFETY: the reference is removed from the thread-local (by `Restore`, also on unwind)
    // before `pool` is dropped at the end of this function.
    let pool_ref: &'static Pool = unsafe { &*(&pool as *const Pool) };
    struct Restore(Option<&'static Pool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            POOL.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(POOL.with(|p| p.replace(Some(pool_ref))));
    Ok(f())
}

/// The number of threads the kernels split over on this thread: the size of the enclosing
/// [`with_threads`] pool, or 1 outside one.
pub fn current_threads() -> usize {
    POOL.with(|p| p.get().map_or(1, Pool::threads))
}

/// How many parts a kernel over `rows` rows and `work` units of work is split into: 1 for
/// small work (below [`MIN_PARALLEL_WORK`]) or inside a part, else up to the pool's threads.
pub fn parts(rows: usize, work: usize) -> usize {
    let t = current_threads();
    if t <= 1 || work < MIN_PARALLEL_WORK || IN_PART.with(Cell::get) {
        1
    } else {
        t.min(rows).max(1)
    }
}

/// Runs `f` on every item, the first on the calling thread and the others on the pool's
/// helpers, and returns when all are done. The items are disjoint parts of the work (a
/// kernel's operands, a chunk of samples); with more items than threads, or outside
/// [`with_threads`], they run one after the other on the calling thread.
///
/// Re-entrant use is safe: called from inside a part (a kernel whose part calls another
/// kernel), it runs every item inline on that thread, since the helpers are busy with the
/// enclosing job. This is the one mechanism by which varsparse runs CPU work in parallel.
pub fn for_each_part<T: Send>(mut items: impl Iterator<Item = T>, f: impl Fn(T) + Sync) {
    // one part (one thread, or a small kernel): run it here, without allocating
    let Some(first) = items.next() else {
        return;
    };
    let Some(second) = items.next() else {
        f(first);
        return;
    };
    let items: Vec<Mutex<Option<T>>> = [first, second]
        .into_iter()
        .chain(items)
        .map(|x| Mutex::new(Some(x)))
        .collect();
    let nested = IN_PART.with(Cell::get);
    match POOL.with(Cell::get) {
        Some(pool) if !nested && items.len() <= pool.threads() => {
            let run = |i: usize| {
                let item = items[i].lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(item) = item {
                    f(item);
                }
            };
            pool.run(items.len(), &run);
        }
        _ => {
            for m in items {
                if let Some(item) = m.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    f(item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_run_once_each_on_the_pool() {
        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        with_threads(3, || {
            for _ in 0..100 {
                for_each_part(0..3usize, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
        })
        .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 100));
    }

    #[test]
    fn a_kernel_inside_a_part_runs_inline() {
        let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
        with_threads(2, || {
            for_each_part(0..2usize, |i| {
                assert_eq!(parts(1000, 1 << 20), 1, "a part splits no further");
                // a nested job: runs all its items here, none is lost or run twice
                for_each_part(0..2usize, |j| {
                    hits[2 * i + j].fetch_add(1, Ordering::Relaxed);
                });
            });
            assert_eq!(
                parts(1000, 1 << 20),
                2,
                "outside a part, the pool splits again"
            );
        })
        .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    #[should_panic(expected = "helper thread")]
    fn a_panic_on_a_helper_reaches_the_caller() {
        let _ = with_threads(2, || {
            for_each_part(0..2usize, |i| assert!(i != 1, "part 1 fails"));
        });
    }
}

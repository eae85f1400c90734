//! Shared by the criterion benches: a counting global allocator (so that
//! each bench can report heap allocations per operation next to its time)
//! and a key observer that observes nothing.
#![allow(unsafe_code)] // reason: a counting global allocator must implement GlobalAlloc
#![allow(dead_code)] // reason: each bench uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis::keys::{KeyFetchError, KeyObserver, RefreshChange};

pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `op` 1,000 times (after one warm-up) and prints its heap
/// allocations per call.
pub fn print_allocations(label: &str, mut op: impl FnMut()) {
    const N: u64 = 1000;
    op();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        op();
    }
    let per_op = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    println!("allocations/op {label}: {per_op:.1}");
}

pub struct Quiet;

impl KeyObserver for Quiet {
    fn refreshed(&self, _: &str, _: Result<RefreshChange, &KeyFetchError>) {}
    fn refresh_suppressed(&self, _: &str) {}
}

impl portcullis::model::ModelObserver for Quiet {}

//! Counts the heap memory the host holds on a job's behalf.
//!
//! A guest's linear memory is bounded by the [`crate::Limits::memory`] limiter, but what it hands
//! the host (header fields, requests, SQL rows, log lines, strings passed to host functions)
//! lives on the host's heap. Caps at each door bound each kind; this is the backstop that bounds
//! their sum. Every allocation made while a job's future is being polled is charged to that
//! job, and uncharged when freed, wherever and whenever that happens: each block carries the
//! tag of the job it was charged to in a small header.
//!
//! Counting needs [`CountingAllocator`] installed as the process's global allocator (the
//! `taskbox` binary does). Without it nothing is counted, no job is stopped for it, and every
//! job reports a host peak of 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use wasmtime::{Engine, EngineWeak};

/// How many jobs can be counted at once in one process; a job started while all are taken
/// runs uncounted (a worker runs far fewer at once).
const ACCOUNTS: usize = 4096;
/// Bits of a tag that name the account; the rest is the account's generation, so a block
/// freed after its job ended never uncharges the next job using the same account.
const ACCOUNT_BITS: u32 = 12;
const _: () = assert!(ACCOUNTS == 1 << ACCOUNT_BITS);

/// Every block is preceded by the tag of its job (0 for none).
const TAG_BYTES: usize = size_of::<u64>();

struct Account {
    /// The tag of the job using the account, or 0 when it is free.
    tag: AtomicU64,
    current: AtomicUsize,
    peak: AtomicUsize,
    limit: AtomicUsize,
    /// Whether the engines were nudged since the job passed its limit.
    nudged: AtomicBool,
}

static ACCOUNT_TABLE: [Account; ACCOUNTS] = [const {
    Account {
        tag: AtomicU64::new(0),
        current: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        limit: AtomicUsize::new(usize::MAX),
        nudged: AtomicBool::new(false),
    }
}; ACCOUNTS];
/// The engines whose epoch a job passing its limit advances, so that the job's epoch callback
/// runs as soon as it is back in WebAssembly: a loop of host calls can make the host allocate
/// tens of megabytes between two ticks of the epoch ticker.
static ENGINES: Mutex<Vec<EngineWeak>> = Mutex::new(Vec::new());
static GENERATION: AtomicU64 = AtomicU64::new(1);
static NEXT_ACCOUNT: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The tag of the job being polled on this thread.
    static CHARGED_TO: Cell<u64> = const { Cell::new(0) };
}

/// The global allocator that makes host memory countable: the system allocator, with each
/// block tagged with the job it is charged to.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: taskbox_runtime::host_memory::CountingAllocator =
///     taskbox_runtime::host_memory::CountingAllocator;
/// ```
#[derive(Debug)]
pub struct CountingAllocator;

/// Where the caller's block starts inside the system allocator's block, and that block's
/// layout. The offset keeps the caller's alignment and leaves room for the tag before it.
fn outer(layout: Layout) -> Option<(usize, Layout)> {
    let offset = layout.align().max(TAG_BYTES);
    let size = layout.size().checked_add(offset)?;
    let outer = Layout::from_size_align(size, offset).ok()?;
    Some((offset, outer))
}

fn charge(tag: u64, bytes: usize) {
    let account = &ACCOUNT_TABLE[account_index(tag)];
    let now = account.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
    // Only the thread polling the job charges it, so no other charge races this one (frees
    // on other threads only lower `current`), and a plain store is enough.
    if now > account.peak.load(Ordering::Relaxed) {
        account.peak.store(now, Ordering::Relaxed);
    }
    if now > account.limit.load(Ordering::Relaxed) && !account.nudged.swap(true, Ordering::Relaxed)
    {
        nudge_engines();
    }
}

/// Advances the epoch of every registered engine: an extra tick, which running jobs that are
/// within their limits simply yield at.
fn nudge_engines() {
    // Not `lock`: this runs inside the allocator, maybe while the list itself is allocating.
    let Ok(engines) = ENGINES.try_lock() else {
        return;
    };
    for engine in engines.iter() {
        if let Some(engine) = engine.upgrade() {
            engine.increment_epoch();
        }
    }
}

/// Lets jobs of `engine` be stopped as soon as they pass their host-memory limit.
pub(crate) fn register_engine(engine: &Engine) {
    let mut engines = ENGINES.lock().unwrap_or_else(PoisonError::into_inner);
    engines.retain(|known| known.upgrade().is_some());
    engines.push(engine.weak());
}

fn uncharge(tag: u64, bytes: usize) {
    let account = &ACCOUNT_TABLE[account_index(tag)];
    // Only while the job lives: after, the account may be someone else's.
    if account.tag.load(Ordering::Relaxed) == tag {
        account.current.fetch_sub(bytes, Ordering::Relaxed);
    }
}

fn account_index(tag: u64) -> usize {
    (tag & ((1 << ACCOUNT_BITS) - 1)) as usize
}

fn current_tag() -> u64 {
    // During thread teardown the slot may be gone; such allocations are nobody's.
    CHARGED_TO.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every block handed out is a system block offset by a constant (for its layout) that
// keeps the caller's alignment, and is given back to the system allocator with the same outer
// layout; the tag is written inside the system block, before the caller's bytes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.allocate(layout, |outer| System.alloc(outer)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.allocate(layout, |outer| System.alloc_zeroed(outer)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((offset, outer)) = outer(layout) else {
            return;
        };
        // SAFETY: `ptr` came from `allocate` with this layout, so the tag sits just before it
        // and the system block starts `offset` bytes before it.
        unsafe {
            let tag = ptr.sub(TAG_BYTES).cast::<u64>().read_unaligned();
            if tag != 0 {
                uncharge(tag, layout.size());
            }
            System.dealloc(ptr.sub(offset), outer);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some((offset, outer)) = outer(layout) else {
            return std::ptr::null_mut();
        };
        let Some(new_outer) = new_size.checked_add(offset) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as in `dealloc`; the system realloc keeps the tag, which lies in the part of
        // the block that is copied, and the offset, which depends only on the alignment.
        unsafe {
            let tag = ptr.sub(TAG_BYTES).cast::<u64>().read_unaligned();
            let base = System.realloc(ptr.sub(offset), outer, new_outer);
            if base.is_null() {
                return base;
            }
            if tag != 0 {
                match new_size >= layout.size() {
                    true => charge(tag, new_size - layout.size()),
                    false => uncharge(tag, layout.size() - new_size),
                }
            }
            base.add(offset)
        }
    }
}

impl CountingAllocator {
    /// # Safety
    /// As [`GlobalAlloc::alloc`]; `system` must allocate a block of the layout it is given.
    unsafe fn allocate(&self, layout: Layout, system: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
        let Some((offset, outer)) = outer(layout) else {
            return std::ptr::null_mut();
        };
        let base = system(outer);
        if base.is_null() {
            return base;
        }
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        let tag = current_tag();
        if tag != 0 {
            charge(tag, layout.size());
        }
        // SAFETY: the system block is `offset + size` bytes and `offset >= TAG_BYTES`.
        unsafe {
            let ptr = base.add(offset);
            ptr.sub(TAG_BYTES).cast::<u64>().write_unaligned(tag);
            ptr
        }
    }
}

/// A job that made the host hold at least this much gives the freed heap back to the
/// kernel when it ends.
const GIVE_BACK_AFTER: u64 = 16 << 20;

/// Gives the heap freed by a job that held `peak` bytes back to the kernel, when that was
/// much. glibc keeps freed pages for reuse, so without this a worker that ran a few jobs
/// handing it tens of megabytes stays that much bigger (over ten rounds of the hostile
/// suite, its memory outside the sandbox pool crept up by 8 MiB). Most jobs hold far less
/// and pay nothing.
pub(crate) fn give_back_after(peak: u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if peak >= GIVE_BACK_AFTER {
        // SAFETY: malloc_trim only returns free pages of the heap to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Whether [`CountingAllocator`] is the global allocator, so that host memory is counted.
pub fn is_counted() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// One job's account: what the host holds for it now and at most, while it lives.
#[derive(Debug)]
pub(crate) struct JobMemory {
    tag: u64,
}

impl JobMemory {
    /// Opens an account for a job that may make the host hold `limit` bytes, or a null one
    /// (counting nothing) when counting is off or every account is in use.
    pub(crate) fn open(limit: u64) -> Self {
        if !is_counted() {
            return Self { tag: 0 };
        }
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let start = NEXT_ACCOUNT.fetch_add(1, Ordering::Relaxed);
        for step in 0..ACCOUNTS {
            let index = (start + step) % ACCOUNTS;
            let tag = (generation << ACCOUNT_BITS) | index as u64;
            let account = &ACCOUNT_TABLE[index];
            if account
                .tag
                .compare_exchange(0, tag, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                account.current.store(0, Ordering::Relaxed);
                account.peak.store(0, Ordering::Relaxed);
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                account.limit.store(limit, Ordering::Relaxed);
                account.nudged.store(false, Ordering::Relaxed);
                return Self { tag };
            }
        }
        Self { tag: 0 }
    }

    /// A view of the account for the job's own state.
    pub(crate) fn meter(&self) -> Meter {
        Meter { tag: self.tag }
    }

    /// Runs `future` with every allocation made while it is polled charged to this account.
    pub(crate) async fn charging<F: Future>(&self, future: F) -> F::Output {
        // Put back on unwind too, so a panic cannot leave the thread charging this job.
        struct Restore(u64);
        impl Drop for Restore {
            fn drop(&mut self) {
                CHARGED_TO.with(|charged| charged.set(self.0));
            }
        }
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let _restore = Restore(CHARGED_TO.with(|charged| charged.replace(self.tag)));
            future.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for JobMemory {
    fn drop(&mut self) {
        if self.tag != 0 {
            ACCOUNT_TABLE[account_index(self.tag)]
                .tag
                .store(0, Ordering::Relaxed);
        }
    }
}

/// Reads a job's account.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    tag: u64,
}

impl Meter {
    /// Whether the host holds more for the job than its limit.
    pub(crate) fn exceeded(&self) -> bool {
        match self.tag {
            0 => false,
            tag => {
                let account = &ACCOUNT_TABLE[account_index(tag)];
                account.current.load(Ordering::Relaxed) > account.limit.load(Ordering::Relaxed)
            }
        }
    }

    /// The most bytes the host held for the job at once.
    pub(crate) fn peak(&self) -> u64 {
        match self.tag {
            0 => 0,
            tag => ACCOUNT_TABLE[account_index(tag)]
                .peak
                .load(Ordering::Relaxed) as u64,
        }
    }
}

//! Plain local inputs are read through memory maps, a window of the file at a time.
//!
//! Why: `read(2)` copies every byte from the page cache into the reader's buffers, and the
//! copy lands in memory that another core then reads. On the 5 M-line benchmark log the copy
//! was over half of the reading thread's time and a third of the shard stage's CPU on two
//! cores (docs/PERFORMANCE.md, "Twelfth session"). A map lets the parsing workers read the
//! page cache itself: the reading thread only cuts blocks and hashes them.
//!
//! Windows, not one map of the whole file: a mapped page the process has touched counts in
//! its resident memory until it is unmapped, so a 10 GB file mapped whole would look (and,
//! under memory pressure, act) like 10 GB of memory. A window is unmapped as soon as the
//! last block cut from it is parsed, so at most a few windows are mapped at once.
//!
//! The risk of a map: if the file shrinks while it is mapped (`logrotate`'s `copytruncate`
//! does exactly that to a live log), touching a page past its new end raises `SIGBUS`,
//! which kills the process without a word. The handler installed here recognises a fault
//! inside a registered window, prints which input it was and what to do (no content: the
//! message is composed before the map is made) and exits with the usual failure code;
//! nothing was published, since outputs are only ever published whole, and the next run
//! removes the spill the process left. A fault anywhere else goes to the handler that was in
//! place before (Rust's own, for stack overflows), as if this one did not exist.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};

/// Windows mapped at once, across every input: more fall back to reading.
const SLOTS: usize = 64;

/// The address range of a mapped window and the message its fault prints.
struct Slot {
    claimed: AtomicBool,
    /// 0: not in use. Stored last, cleared first, so the handler never pairs a range with
    /// another window's message.
    start: AtomicUsize,
    len: AtomicUsize,
    message: AtomicUsize,
    message_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    message: AtomicUsize::new(0),
    message_len: AtomicUsize::new(0),
};

static WINDOWS: [Slot; SLOTS] = [FREE; SLOTS];

/// The `SIGBUS` disposition before ours.
struct Previous(libc::sigaction);
// SAFETY: plain data (a handler address, a mask and flags), written once before it is read.
unsafe impl Sync for Previous {}
unsafe impl Send for Previous {}
static PREVIOUS: OnceLock<Previous> = OnceLock::new();
static INSTALL: Once = Once::new();

/// Async-signal-safe: atomics, `write(2)` and `_exit(2)` only.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler.
    let address = unsafe { (*info).si_addr() } as usize;
    for slot in &WINDOWS {
        let start = slot.start.load(Ordering::Acquire);
        if start != 0 && address.wrapping_sub(start) < slot.len.load(Ordering::Acquire) {
            let message = slot.message.load(Ordering::Acquire) as *const libc::c_void;
            let len = slot.message_len.load(Ordering::Acquire);
            // SAFETY: the message lives as long as its window, which the faulting thread
            // is reading; `_exit` runs no destructors and no `atexit` handlers.
            unsafe {
                libc::write(2, message, len);
                libc::_exit(i32::from(crate::pipeline::exit::FAILED));
            }
        }
    }
    // Not an input's window: back to the handler before ours; the fault happens again there.
    if let Some(previous) = PREVIOUS.get() {
        // SAFETY: restores a disposition the kernel gave us.
        unsafe { libc::sigaction(libc::SIGBUS, &previous.0, std::ptr::null_mut()) };
    }
}

fn install_handler() -> io::Result<()> {
    let mut failed = None;
    INSTALL.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid value to fill in; the handler is
        // async-signal-safe (see `on_sigbus`).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) != 0 {
                failed = Some(io::Error::last_os_error());
                return;
            }
            let _ = PREVIOUS.set(Previous(previous));
        }
    });
    match failed {
        Some(e) => Err(e),
        None if PREVIOUS.get().is_some() => Ok(()),
        None => Err(io::Error::other("the SIGBUS handler is not installed")),
    }
}

/// What a fault in a window of `shown` prints.
pub fn fault_message(shown: &str) -> Arc<[u8]> {
    format!(
        "error: input {shown} could not be read while it was mapped: it shrank (cut by log rotation with `copytruncate`?) or the disk failed; nothing was published: run again once the file is complete\n"
    )
    .into_bytes()
    .into()
}

/// A stretch of a file mapped read-only, registered with the `SIGBUS` handler while mapped.
pub struct Window {
    map: memmap2::Mmap,
    /// The file offset of the window's first byte.
    pub offset: u64,
    slot: usize,
    _message: Arc<[u8]>,
}

impl Window {
    /// Maps `len` bytes of `file` from `offset` (any offset: the map is aligned below it),
    /// its pages filled in at once (one call, not a fault per 64 KiB). Fails, so that the
    /// caller reads the file instead, if the handler cannot be installed or every slot is in
    /// use.
    pub fn map(file: &File, offset: u64, len: usize, message: &Arc<[u8]>) -> io::Result<Window> {
        install_handler()?;
        let slot = WINDOWS
            .iter()
            .position(|s| {
                s.claimed
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many mapped windows"))?;
        // SAFETY: the file may change under the map; a shrink is caught by the handler (see
        // the module docs), and other changes only change the bytes read, as with read(2).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .populate()
                .map(file)
        };
        let map = match map {
            Ok(map) => map,
            Err(e) => {
                WINDOWS[slot].claimed.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let s = &WINDOWS[slot];
        s.message
            .store(message.as_ptr() as usize, Ordering::Release);
        s.message_len.store(message.len(), Ordering::Release);
        s.len.store(map.len(), Ordering::Release);
        s.start.store(map.as_ptr() as usize, Ordering::Release);
        Ok(Window {
            map,
            offset,
            slot,
            _message: message.clone(),
        })
    }
}

impl Window {
    /// Whether the window holds the file's bytes `from..to`.
    pub fn covers(&self, from: u64, to: u64) -> bool {
        self.offset <= from && to <= self.offset + self.map.len() as u64
    }
}

impl std::ops::Deref for Window {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // Unregistered before the map goes (the fields drop after this).
        let s = &WINDOWS[self.slot];
        s.start.store(0, Ordering::Release);
        s.claimed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window reads the file's bytes from its offset; dropping it frees its slot.
    #[test]
    fn window_reads_from_its_offset_and_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &content).unwrap();
        let file = File::open(&p).unwrap();
        let message = fault_message("a.log");
        let w = Window::map(&file, 5_001, 10_000, &message).unwrap();
        assert_eq!(&w[..], &content[5_001..15_001]);
        let slot = w.slot;
        assert!(WINDOWS[slot].start.load(Ordering::Acquire) != 0);
        drop(w);
        assert_eq!(WINDOWS[slot].start.load(Ordering::Acquire), 0);
    }
}

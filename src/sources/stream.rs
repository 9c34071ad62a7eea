//! An import file read front to back in bounded memory. The CSV reader
//! reads through a `Tee` that keeps the bytes it has read but the line
//! counter has not yet passed (a buffer's worth, plus the record being
//! read): line numbers are counted from byte offsets, and a row whose quote
//! swallowed the lines after it is reported line by line, as when the whole
//! file was in memory. A read error is kept, so the import can refuse the
//! file rather than apply the part it read.

use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

/// The bytes read but not yet forgotten, from file offset `base`.
#[derive(Default)]
struct Window {
    base: u64,
    buf: Vec<u8>,
    failed: Option<std::io::Error>,
}

/// What the reader and the line counter share.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Window>>);

impl Seen {
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset just past the last byte read.
    pub fn end(&self) -> u64 {
        let w = self.lock();
        w.base + w.buf.len() as u64
    }

    /// The byte at `offset`, if it was read and not forgotten.
    pub fn byte(&self, offset: u64) -> Option<u8> {
        let w = self.lock();
        let i = usize::try_from(offset.checked_sub(w.base)?).ok()?;
        w.buf.get(i).copied()
    }

    /// `f` over the bytes from `from` to `to` (clamped to what is held).
    pub fn with<T>(&self, from: u64, to: u64, f: impl FnOnce(&[u8]) -> T) -> T {
        let w = self.lock();
        let at = |o: u64| {
            usize::try_from(o.saturating_sub(w.base))
                .unwrap_or(usize::MAX)
                .min(w.buf.len())
        };
        f(&w.buf[at(from)..at(to).max(at(from))])
    }

    /// Drops what lies before `offset` (no longer needed).
    pub fn forget_before(&self, offset: u64) {
        let mut w = self.lock();
        let n = usize::try_from(offset.saturating_sub(w.base))
            .unwrap_or(usize::MAX)
            .min(w.buf.len());
        w.buf.drain(..n);
        w.base += n as u64;
    }

    /// The read error that cut the file short, if any.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.as_ref().map(ToString::to_string)
    }
}

/// A reader that remembers what passes through it in `Seen`.
pub struct Tee<R> {
    inner: R,
    seen: Seen,
}

impl<R: Read> Tee<R> {
    pub fn new(inner: R, seen: Seen) -> Self {
        Tee { inner, seen }
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(out) {
            Ok(n) => {
                self.seen.lock().buf.extend_from_slice(&out[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.seen.lock().failed = Some(std::io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

/// Hex SHA-256 of a file's content, read in blocks.
pub fn hash_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut block) {
            Ok(0) => break,
            Ok(n) => hasher.update(&block[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_what_was_read_until_forgotten() {
        let seen = Seen::default();
        let mut tee = Tee::new(&b"abc\ndef\n"[..], seen.clone());
        let mut out = [0u8; 5];
        assert_eq!(tee.read(&mut out).unwrap(), 5);
        assert_eq!(seen.end(), 5);
        assert_eq!(seen.byte(3), Some(b'\n'));
        seen.forget_before(4);
        assert_eq!(seen.byte(3), None);
        assert_eq!(seen.with(4, 5, <[u8]>::to_vec), b"d".to_vec());
        assert_eq!(tee.read(&mut out).unwrap(), 3);
        assert_eq!(seen.with(0, 99, <[u8]>::to_vec), b"def\n".to_vec());
        assert!(seen.failure().is_none());
    }

    /// A reader that fails after its first block, as a disk or a network
    /// mount can.
    struct Flaky(bool);

    impl Read for Flaky {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                return Err(std::io::Error::other("device went away"));
            }
            out[..4].copy_from_slice(b"a,b\n");
            Ok(4)
        }
    }

    #[test]
    fn a_failed_read_is_kept_for_the_import_to_refuse_the_file() {
        let seen = Seen::default();
        let mut tee = Tee::new(Flaky(false), seen.clone());
        let mut out = [0u8; 8];
        assert_eq!(tee.read(&mut out).unwrap(), 4);
        assert!(tee.read(&mut out).is_err());
        assert_eq!(seen.failure().as_deref(), Some("device went away"));
    }
}

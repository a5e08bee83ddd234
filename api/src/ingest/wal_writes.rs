//! A SQLite VFS that writes a commit's WAL frames with one `pwrite` instead
//! of two per page (docs/PERFORMANCE.md, "frames written one by one").
//!
//! SQLite appends each frame of a commit to the WAL as two writes: the
//! 24-byte frame header, then the page. At group commit a batch of eight
//! deliveries writes ~30 pages, so ~60 system calls, each of which takes the
//! file's lock and updates its modification time: that was most of the
//! ingest writer's commit. This VFS is the platform's own (`unix`) with one
//! difference: writes to a WAL file that continue the previous one are
//! gathered in memory and written together before anything else happens to
//! the file (a read, a sync, a size or truncation, a file control, a
//! close), or when the buffer is full.
//!
//! What makes that safe: with `synchronous = FULL` SQLite syncs the WAL at
//! the end of every commit, before the commit becomes visible to other
//! connections, so the gathered frames are in the file (and on disk) before
//! anyone can read them, exactly as without the buffer. With `NORMAL` a
//! commit is published without a sync, so a buffer would hide frames from
//! other connections: the writer uses this VFS only with FULL (or EXTRA).
//! A failed write surfaces at the flush, that is from the sync, and SQLite
//! then fails (and rolls back) the commit, as it would had the write failed;
//! a flush that fails in any other call reports an I/O error, so SQLite
//! rolls the whole transaction back.
//!
//! Two more conditions, checked by the writer (`sqlite.rs`):
//! - A transaction that rolls back may leave frames it spilled (a cache too
//!   small for it) in the buffer, beyond the WAL's committed end, where the
//!   next writer, maybe another connection, writes its own. SQLite never
//!   writes them after releasing the write lock; neither may we: after a
//!   failed batch the writer discards them ([`discard_pending`]).
//! - Sector padding: with power-safe overwrite off, SQLite pads a commit to
//!   a sector boundary and syncs in the middle of the padding, leaving the
//!   rest unsynced when it publishes. The writer uses this VFS only when
//!   the database reports power-safe overwrite ([`powersafe_overwrite`],
//!   SQLite's default on Unix).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub(super) const NAME: &CStr = c"calltrail-wal-writes";

/// Bytes gathered at most before they are written (a commit of ~250 pages).
const CAPACITY: usize = 1 << 20;

/// Bytes per write: the `unix` VFS writes at most 128 KiB - 1 at once (it
/// masks larger sizes, and reports the short write as a full disk).
const CHUNK: usize = 64 * 1024;

/// Register the VFS once per process (it wraps the default VFS).
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are
            // thread-safe; the registered struct is leaked, so it lives as
            // long as the process, as SQLite requires.
            unsafe {
                if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
                    return Err("SQLite failed to initialize".into());
                }
                let base = ffi::sqlite3_vfs_find(ptr::null());
                if base.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs = *base;
                vfs.szOsFile = (HEADER + (*base).szOsFile as usize) as c_int;
                vfs.pNext = ptr::null_mut();
                vfs.zName = NAME.as_ptr();
                vfs.pAppData = base.cast();
                vfs.xOpen = Some(open);
                let vfs = Box::into_raw(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("registering the WAL-writes VFS failed ({rc})")),
                }
            }
        })
        .clone()
}

/// Forget what the WAL of `conn`'s main database has gathered and not
/// written: frames of a transaction that rolled back (see the module's
/// documentation). Call it after a failed transaction, before anything else
/// runs on the connection. A no-op for a connection without this VFS.
pub(super) fn discard_pending(conn: &rusqlite::Connection) {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: the connection's handle is valid while `conn` is borrowed, and
    // SQLITE_FCNTL_JOURNAL_POINTER writes a file pointer (or null) to `file`.
    // Only a file with our methods is a WalFile; nothing else runs on the
    // connection meanwhile (it is borrowed here).
    unsafe {
        let rc = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut file).cast(),
        );
        if rc == ffi::SQLITE_OK && !file.is_null() && ptr::eq((*file).pMethods, &WAL_METHODS) {
            wal(file).pending.clear();
        }
    }
}

/// Whether `conn`'s main database is opened with power-safe overwrite (no
/// sector padding of commits; SQLite's default on Unix).
pub(super) fn powersafe_overwrite(conn: &rusqlite::Connection) -> bool {
    let mut setting: c_int = -1;
    // SAFETY: the handle is valid while `conn` is borrowed; with -1 this file
    // control only reads the setting into `setting`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_POWERSAFE_OVERWRITE,
            (&raw mut setting).cast(),
        )
    };
    rc == ffi::SQLITE_OK && setting == 1
}

/// A WAL file: this header, then the default VFS's own file object.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    /// The default VFS's file, in the same allocation right after this header.
    real: *mut ffi::sqlite3_file,
    /// Bytes written but not yet passed on, starting at `start`.
    pending: Vec<u8>,
    start: i64,
}

/// Room for the header: the real file object starts 16 bytes further on,
/// as aligned as the allocation itself (8 bytes, all either needs).
const HEADER: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Open through the default VFS; a WAL file gets the gathering methods,
/// any other file is the default VFS's own object, untouched.
unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes our registered VFS (whose pAppData is the
    // default VFS) and a zeroed allocation of our szOsFile bytes.
    unsafe {
        let base = (*vfs).pAppData as *mut ffi::sqlite3_vfs;
        let Some(base_open) = (*base).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return base_open(base, name, file, flags, out_flags);
        }
        let real = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
        let rc = base_open(base, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite does not close a file whose open failed.
            (*file).pMethods = ptr::null();
            return rc;
        }
        ptr::write(
            file.cast::<WalFile>(),
            WalFile {
                base: ffi::sqlite3_file {
                    pMethods: &WAL_METHODS,
                },
                real,
                pending: Vec::new(),
                start: 0,
            },
        );
        ffi::SQLITE_OK
    }
}

/// The WAL file behind SQLite's pointer.
///
/// # Safety
/// `file` must be a file opened by [`open`] with the WAL methods.
unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    unsafe { &mut *file.cast::<WalFile>() }
}

impl WalFile {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the real file was opened successfully, so its methods are set.
        unsafe { &*(*self.real).pMethods }
    }

    /// Pass the gathered bytes on to the real file.
    fn flush(&mut self) -> c_int {
        if self.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = self.methods().xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut offset = self.start;
        for chunk in self.pending.chunks(CHUNK) {
            // SAFETY: the chunk is valid for its length (at most CHUNK).
            rc = unsafe {
                write(
                    self.real,
                    chunk.as_ptr().cast(),
                    chunk.len() as c_int,
                    offset,
                )
            };
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        // Written or not, these bytes are settled: SQLite learns of a
        // failure from this call's caller and rolls the commit back.
        self.pending.clear();
        rc
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes our WAL file and `amount` readable bytes.
    let f = unsafe { wal(file) };
    let amount = amount.max(0) as usize;
    if amount == 0 || data.is_null() {
        return ffi::SQLITE_OK;
    }
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), amount) };
    let follows = offset == f.start + f.pending.len() as i64;
    if !(follows && f.pending.len() + amount <= CAPACITY) {
        let rc = f.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if amount > CHUNK {
            let Some(write) = f.methods().xWrite else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            return unsafe { write(f.real, data, amount as c_int, offset) };
        }
        f.start = offset;
    }
    if f.pending.capacity() == 0 {
        f.pending.reserve_exact(CAPACITY);
    }
    f.pending.extend_from_slice(bytes);
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file once; the header is dropped here and
    // the real file closed, after which SQLite frees the allocation.
    unsafe {
        let f = wal(file);
        let flushed = f.flush();
        let closed = match f.methods().xClose {
            Some(close) => close(f.real),
            None => ffi::SQLITE_OK,
        };
        ptr::drop_in_place(file.cast::<WalFile>());
        (*file).pMethods = ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Flush, then run `call` on the real file (with its methods).
macro_rules! flushed_then {
    ($file:expr, $method:ident, |$m:ident, $real:ident| $call:expr, $missing:expr) => {{
        // SAFETY: SQLite passes our WAL file; the real file is open.
        let f = unsafe { wal($file) };
        if f.flush() != ffi::SQLITE_OK {
            // An I/O error (not, say, SQLITE_FULL from a short write): SQLite
            // then rolls the whole transaction back, frames it wrote earlier
            // included.
            return ffi::SQLITE_IOERR_WRITE;
        }
        let $real = f.real;
        match f.methods().$method {
            Some($m) => unsafe { $call },
            None => $missing,
        }
    }};
}

/// Run `call` on the real file without flushing (locks and properties).
macro_rules! passed_on {
    ($file:expr, $method:ident, |$m:ident, $real:ident| $call:expr, $missing:expr) => {{
        // SAFETY: SQLite passes our WAL file; the real file is open.
        let f = unsafe { wal($file) };
        let $real = f.real;
        match f.methods().$method {
            Some($m) => unsafe { $call },
            None => $missing,
        }
    }};
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed_then!(
        file,
        xRead,
        |m, real| m(real, buf, amount, offset),
        ffi::SQLITE_IOERR_READ
    )
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed_then!(
        file,
        xTruncate,
        |m, real| m(real, size),
        ffi::SQLITE_IOERR_TRUNCATE
    )
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed_then!(
        file,
        xSync,
        |m, real| m(real, flags),
        ffi::SQLITE_IOERR_FSYNC
    )
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed_then!(
        file,
        xFileSize,
        |m, real| m(real, size),
        ffi::SQLITE_IOERR_FSTAT
    )
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flushed_then!(
        file,
        xFileControl,
        |m, real| m(real, op, arg),
        ffi::SQLITE_NOTFOUND
    )
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed_then!(file, xFetch, |m, real| m(real, offset, amount, out), {
        // No mapping: SQLite reads instead.
        unsafe { *out = ptr::null_mut() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, p: *mut c_void) -> c_int {
    passed_on!(file, xUnfetch, |m, real| m(real, offset, p), ffi::SQLITE_OK)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed_on!(file, xLock, |m, real| m(real, level), ffi::SQLITE_OK)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed_on!(file, xUnlock, |m, real| m(real, level), ffi::SQLITE_OK)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    passed_on!(
        file,
        xCheckReservedLock,
        |m, real| m(real, out),
        ffi::SQLITE_OK
    )
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    passed_on!(file, xSectorSize, |m, real| m(real), 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    passed_on!(file, xDeviceCharacteristics, |m, real| m(real), 0)
}

// SQLite keeps its shared memory on the database file, never on the WAL;
// these only pass the calls on.

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    passed_on!(
        file,
        xShmMap,
        |m, real| m(real, region, size, extend, out),
        ffi::SQLITE_IOERR_SHMMAP
    )
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    passed_on!(
        file,
        xShmLock,
        |m, real| m(real, offset, n, flags),
        ffi::SQLITE_IOERR_SHMLOCK
    )
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    passed_on!(file, xShmBarrier, |m, real| m(real), ())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    passed_on!(file, xShmUnmap, |m, real| m(real, delete), ffi::SQLITE_OK)
}

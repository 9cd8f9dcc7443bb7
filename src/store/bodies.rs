//! Event bodies, kept outside sled: append-only segment files (`bodies/<n>.seg`), each body as
//! `[length u32 LE][crc32 u32 LE][bytes]`. The outbox entry in sled holds only its header and
//! where its body is. sled rewrites whole pages when values are large (~80 µs per 7 KB record
//! here, whatever the batching, against ~10 µs for a small value), and keeps growing on disk
//! under insert-then-delete; a segment is written once, read once, and deleted as a whole when
//! no outbox entry points into it.
//!
//! Order on disk: bodies are written (and, under `durability = "batch"`, synced) before the
//! transaction that points at them commits, so a pointer never outlives its body. A crash in
//! between leaves unreferenced bytes, reclaimed with their segment.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A segment is closed (and a new one begun) past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 8;

/// Where one body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub segment: u64,
    /// Offset of its header in the segment.
    pub offset: u64,
    pub len: u32,
}

/// Why a body cannot be read (the store reports it as a corrupt outbox entry).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The segments' state is poisoned: a writer panicked.
    #[error("{0}")]
    State(std::io::Error),
    /// The segment cannot be opened (deleted, say).
    #[error("{}: {error}", .path.display())]
    Open {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The segment is shorter than the entry says, or cannot be read.
    #[error("{}: cannot read {len} bytes at {offset}: {error}", .path.display())]
    Read {
        path: PathBuf,
        len: usize,
        offset: u64,
        error: std::io::Error,
    },
    /// The bytes read are not the body written there (its length or checksum differs).
    #[error("{} at {offset}: the body does not match its checksum", .path.display())]
    Checksum { path: PathBuf, offset: u64 },
}

pub struct Bodies {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    active: Active,
    /// Entries pointing into each segment; a closed segment at zero is deleted.
    live: HashMap<u64, usize>,
    /// Whether what was written since the last sync is on disk.
    dirty: bool,
    /// A closed segment whose tail may not be synced yet.
    unsynced: Option<File>,
    /// Segments open for reading (opened once, not per body).
    readers: HashMap<u64, Arc<File>>,
    /// Closed segments nothing points into any more, deleted once that is on disk: until sled
    /// has flushed the removals, a crash would bring back entries that point into them.
    doomed: Vec<u64>,
}

struct Active {
    id: u64,
    file: File,
    len: u64,
    /// A failed write left bytes past `len` that could not be cut off: the next append starts
    /// a new segment, so no body is placed where those bytes are.
    torn: bool,
}

impl Bodies {
    /// Opens the directory and starts a new segment; `live` counts the entries pointing into
    /// each existing segment (from the outboxes): segments without any are deleted.
    pub fn open(dir: &Path, live: HashMap<u64, usize>) -> std::io::Result<Bodies> {
        std::fs::create_dir_all(dir)?;
        let mut newest = 0;
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let Some(id) = segment_id(&path) else {
                continue;
            };
            newest = newest.max(id);
            if live.get(&id).copied().unwrap_or(0) == 0 {
                std::fs::remove_file(&path)?;
            }
        }
        let active = Active::create(dir, newest + 1)?;
        Ok(Bodies {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                active,
                live,
                dirty: false,
                unsynced: None,
                readers: HashMap::new(),
                doomed: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::io::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| std::io::Error::other("body segments: a writer panicked"))
    }

    /// Appends `bodies` in one write (in the OS's cache when this returns: a killed process
    /// loses nothing); [`Bodies::sync`] puts them on disk. Each is counted as pointed at from
    /// now on (so its segment cannot go meanwhile): [`Bodies::release`] those whose entry was
    /// not written after all.
    pub fn append(&self, bodies: &[&[u8]]) -> std::io::Result<Vec<BodyRef>> {
        let mut state = self.state()?;
        if state.active.len >= SEGMENT_BYTES || state.active.torn {
            let next = Active::create(&self.dir, state.active.id + 1)?;
            let closed = std::mem::replace(&mut state.active, next);
            if state.live.get(&closed.id).copied().unwrap_or(0) == 0 {
                state.doomed.push(closed.id);
            } else if state.dirty {
                state.unsynced = Some(closed.file);
            }
        }
        let size: usize = bodies.iter().map(|b| b.len() + HEADER).sum();
        let mut buffer = Vec::with_capacity(size);
        let mut refs = Vec::with_capacity(bodies.len());
        for body in bodies {
            let len = u32::try_from(body.len())
                .map_err(|_| std::io::Error::other("an event body over 4 GiB"))?;
            refs.push(BodyRef {
                segment: state.active.id,
                offset: state.active.len + buffer.len() as u64,
                len,
            });
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            buffer.extend_from_slice(body);
        }
        if let Err(e) = state.active.file.write_all(&buffer) {
            // A short write (a full disk) leaves part of the buffer at the end of the file, and
            // appends go to the end: the next bodies would not be where their offsets say.
            if state.active.file.set_len(state.active.len).is_err() {
                state.active.torn = true;
            }
            return Err(e);
        }
        state.active.len += buffer.len() as u64;
        state.dirty = true;
        let id = state.active.id;
        *state.live.entry(id).or_default() += refs.len();
        Ok(refs)
    }

    /// Puts every body appended so far on disk. Appends go on meanwhile (the lock is not held
    /// while the disk works); concurrent calls share what the first one synced.
    pub fn sync(&self) -> std::io::Result<()> {
        let (closed, active) = {
            let mut state = self.state()?;
            let active = if std::mem::take(&mut state.dirty) {
                match state.active.file.try_clone() {
                    Ok(file) => Some(file),
                    Err(e) => {
                        state.dirty = true;
                        return Err(e);
                    }
                }
            } else {
                None
            };
            (state.unsynced.take(), active)
        };
        let synced = closed
            .iter()
            .chain(active.iter())
            .try_for_each(|f| f.sync_data());
        if synced.is_err() {
            // Not on disk: the next sync tries again.
            let mut state = self.state()?;
            state.dirty = true;
            if state.unsynced.is_none() {
                state.unsynced = closed;
            }
        }
        synced
    }

    /// Forgets entries that are gone (delivered, dead-lettered); closed segments no entry
    /// points into any more are deleted by the next [`Bodies::delete_doomed`].
    pub fn release(&self, refs: impl IntoIterator<Item = BodyRef>) -> std::io::Result<()> {
        let mut state = self.state()?;
        for r in refs {
            let Some(count) = state.live.get_mut(&r.segment) else {
                continue;
            };
            *count = count.saturating_sub(1);
            if *count == 0 && r.segment != state.active.id {
                state.live.remove(&r.segment);
                state.doomed.push(r.segment);
            }
        }
        Ok(())
    }

    /// Segments released so far: call before the flush that makes their removals durable,
    /// then [`Bodies::delete`] them once it succeeded.
    pub fn doomed(&self) -> std::io::Result<Vec<u64>> {
        Ok(std::mem::take(&mut self.state()?.doomed))
    }

    /// Deletes segments (from [`Bodies::doomed`]).
    pub fn delete(&self, segments: Vec<u64>) -> std::io::Result<()> {
        let mut state = self.state()?;
        for id in segments {
            // Revived meanwhile (never the case for a closed segment, but cheap to check).
            if state.live.contains_key(&id) || id == state.active.id {
                continue;
            }
            state.readers.remove(&id);
            match std::fs::remove_file(segment_path(&self.dir, id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads one body, checking its length and checksum.
    pub fn read(&self, r: &BodyRef) -> Result<Bytes, BodyError> {
        let path = segment_path(&self.dir, r.segment);
        let file = {
            let mut state = self.state().map_err(BodyError::State)?;
            match state.readers.get(&r.segment) {
                Some(file) => file.clone(),
                None => {
                    let file = match File::open(&path) {
                        Ok(file) => Arc::new(file),
                        Err(error) => return Err(BodyError::Open { path, error }),
                    };
                    state.readers.insert(r.segment, file.clone());
                    file
                }
            }
        };
        let mut buffer = vec![0u8; HEADER + r.len as usize];
        if let Err(error) = file.read_exact_at(&mut buffer, r.offset) {
            return Err(BodyError::Read {
                path,
                len: buffer.len(),
                offset: r.offset,
                error,
            });
        }
        let len = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        let crc = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
        let body = Bytes::from(buffer).slice(HEADER..);
        if len != r.len || crc32fast::hash(&body) != crc {
            return Err(BodyError::Checksum {
                path,
                offset: r.offset,
            });
        }
        Ok(body)
    }
}

impl Active {
    fn create(dir: &Path, id: u64) -> std::io::Result<Active> {
        let file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(segment_path(dir, id))?;
        let len = file.metadata()?.len();
        Ok(Active {
            id,
            file,
            len,
            torn: false,
        })
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_segments_go_when_nothing_points_at_them() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = Bodies::open(dir.path(), HashMap::new()).unwrap();
        let refs = bodies.append(&[b"{\"a\":1}", b"{}"]).unwrap();
        bodies.sync().unwrap();
        assert_eq!(&bodies.read(&refs[0]).unwrap()[..], b"{\"a\":1}");
        assert_eq!(&bodies.read(&refs[1]).unwrap()[..], b"{}");

        // Reopened: the segment still has entries pointing at it, so it stays.
        drop(bodies);
        let live = HashMap::from([(refs[0].segment, 2)]);
        let bodies = Bodies::open(dir.path(), live).unwrap();
        assert_eq!(&bodies.read(&refs[1]).unwrap()[..], b"{}");
        bodies.release(refs.clone()).unwrap();
        assert!(
            bodies.read(&refs[0]).is_ok(),
            "kept until the removals are flushed"
        );
        let doomed = bodies.doomed().unwrap();
        assert_eq!(doomed, vec![refs[0].segment]);
        bodies.delete(doomed).unwrap();
        assert!(
            bodies.read(&refs[0]).is_err(),
            "a closed segment at zero is deleted"
        );

        // A corrupted body is refused, not returned.
        let fresh = bodies.append(&[b"{\"b\":2}"]).unwrap()[0];
        let path = segment_path(dir.path(), fresh.segment);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(bodies
            .read(&fresh)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }

    /// A full disk in the middle of a write: the bodies written before and after it are read
    /// back where their places say. Needs a small file system of its own: a tmpfs, mounted as
    /// root (skipped, saying so, otherwise).
    #[test]
    fn a_write_cut_short_by_a_full_disk_leaves_the_next_bodies_where_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("small");
        std::fs::create_dir(&mount).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mounted = root
            && std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
                .arg(&mount)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: a 256 KiB tmpfs cannot be mounted here (not root, or no mount)");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(mount.clone());
        let filler = mount.join("filler");
        std::fs::write(&filler, vec![0u8; 64 * 1024]).unwrap();
        let bodies = Bodies::open(&mount.join("bodies"), HashMap::new()).unwrap();
        let body =
            |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(9_000)).into_bytes();
        let mut written = Vec::new();
        let mut failed = false;
        for i in 0..100 {
            let b = body(i);
            match bodies.append(&[&b, &b]) {
                Ok(refs) => written.extend(refs.into_iter().map(|r| (r, i))),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the disk never filled");
        std::fs::remove_file(&filler).unwrap();
        for i in 100..103 {
            let b = body(i);
            let refs = bodies.append(&[&b]).expect("space is back");
            written.extend(refs.into_iter().map(|r| (r, i)));
        }
        for (r, i) in &written {
            assert_eq!(
                bodies.read(r).unwrap()[..],
                body(*i)[..],
                "body {i} at {r:?}"
            );
        }
    }
}

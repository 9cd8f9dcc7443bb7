//! The output of `fetch --export --parallel N`: the slices of the window are read at once but
//! printed one after the other, so the lines come out in time order. Pages of the slice being
//! printed go straight out; those of later slices wait in memory up to a budget, then in an
//! unlinked temporary file — never by pausing their scroll, which MXC would expire if it sat
//! idle for long.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::Bytes;
use mxc::RawPage;

/// Writes the slices' pages in slice order, whatever order they arrive in.
pub struct Ordered<W: Write> {
    out: W,
    /// The slice being printed; every earlier one is done.
    current: usize,
    slices: Vec<Waiting>,
    /// Bytes of waiting pages that may still be kept in memory.
    budget_left: usize,
    spill_dir: PathBuf,
}

/// What a later slice has read so far, in its order.
#[derive(Default)]
struct Waiting {
    chunks: VecDeque<Chunk>,
    done: bool,
    spill: Option<Spill>,
}

enum Chunk {
    Memory {
        records: Vec<Bytes>,
        bytes: usize,
    },
    /// Lines already formatted, at `offset` in the slice's spill file.
    Spilled {
        offset: u64,
        len: usize,
    },
}

struct Spill {
    file: File,
    len: u64,
}

impl<W: Write> Ordered<W> {
    /// `budget`: bytes of records of later slices kept in memory.
    pub fn new(out: W, slices: usize, budget: usize, spill_dir: PathBuf) -> Self {
        Ordered {
            out,
            current: 0,
            slices: (0..slices).map(|_| Waiting::default()).collect(),
            budget_left: budget,
            spill_dir,
        }
    }

    /// A page of `slice`, the pages of a slice given in their order.
    pub fn page(&mut self, slice: usize, page: RawPage) -> io::Result<()> {
        if slice == self.current {
            return write_lines(&mut self.out, &page.records);
        }
        let bytes = page.records.iter().map(|r| r.len() + 1).sum::<usize>();
        let Some(waiting) = self.slices.get_mut(slice) else {
            return Err(io::Error::other(format!("no slice {slice}")));
        };
        if bytes <= self.budget_left {
            self.budget_left -= bytes;
            waiting.chunks.push_back(Chunk::Memory {
                records: page.records,
                bytes,
            });
            return Ok(());
        }
        let spill = match &mut waiting.spill {
            Some(spill) => spill,
            None => waiting.spill.insert(Spill::create(&self.spill_dir, slice)?),
        };
        let mut lines = Vec::with_capacity(bytes);
        write_lines(&mut lines, &page.records)?;
        spill.file.write_all_at(&lines, spill.len)?;
        waiting.chunks.push_back(Chunk::Spilled {
            offset: spill.len,
            len: lines.len(),
        });
        spill.len += lines.len() as u64;
        Ok(())
    }

    /// `slice` has no more pages. When it is the one being printed, the next slices' waiting
    /// pages go out.
    pub fn done(&mut self, slice: usize) -> io::Result<()> {
        if let Some(waiting) = self.slices.get_mut(slice) {
            waiting.done = true;
        }
        while self.slices.get(self.current).is_some_and(|s| s.done) {
            self.current += 1;
            self.drain_current()?;
        }
        Ok(())
    }

    /// Whether every slice is done.
    pub fn complete(&self) -> bool {
        self.current >= self.slices.len()
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn drain_current(&mut self) -> io::Result<()> {
        let Some(waiting) = self.slices.get_mut(self.current) else {
            return Ok(());
        };
        let mut buffer = Vec::new();
        while let Some(chunk) = waiting.chunks.pop_front() {
            match chunk {
                Chunk::Memory { records, bytes } => {
                    write_lines(&mut self.out, &records)?;
                    self.budget_left += bytes;
                }
                Chunk::Spilled { offset, len } => {
                    let Some(spill) = &waiting.spill else {
                        return Err(io::Error::other("spilled page without its file"));
                    };
                    buffer.resize(len, 0);
                    spill.file.read_exact_at(&mut buffer, offset)?;
                    self.out.write_all(&buffer)?;
                }
            }
        }
        // Closing the unlinked file frees its space.
        waiting.spill = None;
        Ok(())
    }
}

impl Spill {
    /// A new file in `dir`, unlinked at once: nothing is left behind, whatever happens.
    fn create(dir: &std::path::Path, slice: usize) -> io::Result<Spill> {
        let path = dir.join(format!(
            "mxc-relay-fetch-{}-{slice}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create a temporary file in {} for records read ahead: {e}",
                        dir.display()
                    ),
                )
            })?;
        std::fs::remove_file(&path)?;
        Ok(Spill { file, len: 0 })
    }
}

/// Each record's text on a line of its own. Whitespace between a record's tokens is all a line
/// feed inside it can be (JSON strings escape theirs), so one is printed as a space. (A
/// carriage return alone ends no JSON line.)
fn write_lines(out: &mut impl Write, records: &[Bytes]) -> io::Result<()> {
    for record in records {
        if record.contains(&b'\n') {
            let flat: Vec<u8> = record
                .iter()
                .map(|&b| if b == b'\n' { b' ' } else { b })
                .collect();
            out.write_all(&flat)?;
        } else {
            out.write_all(record)?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[u32]) -> RawPage {
        let records: Vec<String> = ids.iter().map(|i| format!(r#"{{"id":"{i}"}}"#)).collect();
        let body = format!(r#"{{"records":[{}]}}"#, records.join(","));
        RawPage::parse(&Bytes::from(body)).unwrap()
    }

    fn ids(out: &[u8]) -> Vec<u32> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().unwrap().parse().unwrap()
            })
            .collect()
    }

    /// Slice k holds ids 100k+1 …; the pages arrive interleaved, later slices first.
    fn run(budget: usize) -> Vec<u32> {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Ordered::new(Vec::new(), 3, budget, dir.path().to_path_buf());
        o.page(2, page(&[201, 202])).unwrap();
        o.page(1, page(&[101])).unwrap();
        o.page(0, page(&[1, 2])).unwrap();
        o.page(2, page(&[203])).unwrap();
        o.done(2).unwrap();
        o.page(1, page(&[102, 103])).unwrap();
        o.page(0, page(&[3])).unwrap();
        o.done(0).unwrap();
        assert!(!o.complete());
        o.page(1, page(&[104])).unwrap();
        o.done(1).unwrap();
        assert!(o.complete());
        let out = o.finish().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spill files are unlinked"
        );
        ids(&out)
    }

    #[test]
    fn slices_come_out_in_order_from_memory_or_from_disk() {
        let expected = [1, 2, 3, 101, 102, 103, 104, 201, 202, 203];
        assert_eq!(run(1 << 20), expected, "all in memory");
        assert_eq!(run(0), expected, "all spilled");
        assert_eq!(run(30), expected, "some of each");
    }

    #[test]
    fn a_record_with_line_breaks_is_still_one_line() {
        let body = Bytes::from_static(b"{\"records\":[{\"id\":\"1\",\r\n \"a\":\"x\\ny\"}]}");
        let mut out = Vec::new();
        write_lines(&mut out, &RawPage::parse(&body).unwrap().records).unwrap();
        assert_eq!(out, b"{\"id\":\"1\",\r  \"a\":\"x\\ny\"}\n");
    }
}

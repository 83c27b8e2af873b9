//! Sorted runs for a bulk load: index records (a database tag byte and the
//! key) gathered in one arena up to a memory bound, sorted and spilled to
//! a file in the data directory, then merged back in key order so every
//! index is written once, in order, with `MDB_APPEND` — instead of one
//! random B-tree insert (and a rewritten page) per key.
//!
//! A run file is a sequence of `u16 length ‖ record`, records ascending.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Buffered records before a run is spilled (arena bytes).
const RUN_BYTES: usize = 256 * 1024 * 1024;

pub(super) struct Runs {
    dir: PathBuf,
    arena: Vec<u8>,
    /// (start, length) of each record in `arena`.
    records: Vec<(u32, u16)>,
    files: Vec<PathBuf>,
}

impl Runs {
    /// Runs spilled into `dir`, emptied first (a killed load's leftovers).
    pub(super) fn new(dir: &Path) -> io::Result<Runs> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Runs {
            dir: dir.to_path_buf(),
            arena: Vec::new(),
            records: Vec::new(),
            files: Vec::new(),
        })
    }

    /// Adds the record `db ‖ key`.
    pub(super) fn push(&mut self, db: u8, key: &[u8]) -> io::Result<()> {
        let len = key.len() + 1;
        if len > u16::MAX as usize {
            return Err(io::Error::other("index key too long"));
        }
        if self.arena.len() + len > RUN_BYTES {
            self.spill()?;
        }
        self.records.push((self.arena.len() as u32, len as u16));
        self.arena.push(db);
        self.arena.extend_from_slice(key);
        Ok(())
    }

    fn sorted(&mut self) {
        let arena = &self.arena;
        let at = |&(start, len): &(u32, u16)| &arena[start as usize..start as usize + len as usize];
        self.records.sort_unstable_by(|a, b| at(a).cmp(at(b)));
    }

    fn spill(&mut self) -> io::Result<()> {
        self.sorted();
        let path = self.dir.join(format!("run-{:05}", self.files.len()));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for &(start, len) in &self.records {
            out.write_all(&len.to_be_bytes())?;
            out.write_all(&self.arena[start as usize..start as usize + len as usize])?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        self.files.push(path);
        self.arena.clear();
        self.records.clear();
        Ok(())
    }

    /// Every record pushed, ascending (repeats kept).
    pub(super) fn merge(mut self) -> io::Result<Merged> {
        self.sorted();
        let mut sources = Vec::with_capacity(self.files.len() + 1);
        for path in &self.files {
            sources.push(Source::File(BufReader::with_capacity(
                1 << 20,
                File::open(path)?,
            )));
        }
        let memory: Vec<Vec<u8>> = self
            .records
            .iter()
            .map(|&(start, len)| self.arena[start as usize..start as usize + len as usize].to_vec())
            .collect();
        self.arena = Vec::new();
        sources.push(Source::Memory(memory.into_iter()));
        let mut merged = Merged {
            dir: self.dir.clone(),
            sources,
            heap: BinaryHeap::new(),
        };
        for i in 0..merged.sources.len() {
            merged.refill(i)?;
        }
        Ok(merged)
    }
}

enum Source {
    File(BufReader<File>),
    Memory(std::vec::IntoIter<Vec<u8>>),
}

impl Source {
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self {
            Source::Memory(records) => Ok(records.next()),
            Source::File(file) => {
                let mut len = [0u8; 2];
                match file.read_exact(&mut len) {
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                    other => other?,
                }
                let mut record = vec![0u8; u16::from_be_bytes(len) as usize];
                file.read_exact(&mut record)?;
                Ok(Some(record))
            }
        }
    }
}

/// The k-way merge of the runs; removes their directory when dropped.
pub(super) struct Merged {
    dir: PathBuf,
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
}

impl Merged {
    fn refill(&mut self, i: usize) -> io::Result<()> {
        if let Some(record) = self.sources[i].next()? {
            self.heap.push(Reverse((record, i)));
        }
        Ok(())
    }

    /// The next record (`db ‖ key`), ascending.
    pub(super) fn next_record(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(Reverse((record, i))) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(i)?;
        Ok(Some(record))
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        self.sources.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_and_buffered_records_merge_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Runs::new(&dir.path().join("runs")).unwrap();
        let mut expected = Vec::new();
        for i in 0..3000u32 {
            let key = (i.wrapping_mul(2_654_435_761) % 1000).to_be_bytes();
            let db = (i % 3) as u8;
            runs.push(db, &key).unwrap();
            expected.push([&[db][..], &key].concat());
            if i % 1000 == 999 {
                runs.spill().unwrap();
            }
        }
        runs.push(1, b"tail").unwrap();
        expected.push(b"\x01tail".to_vec());
        expected.sort();
        let mut merged = runs.merge().unwrap();
        let mut got = Vec::new();
        while let Some(record) = merged.next_record().unwrap() {
            got.push(record);
        }
        assert_eq!(got, expected);
        drop(merged);
        assert!(!dir.path().join("runs").exists());
    }
}

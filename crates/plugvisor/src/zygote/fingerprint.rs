//! What a venv's zygote was started from: the interpreter (the venv's link
//! and the binary it names) and the preloaded packages' directories, each by
//! device, inode, size and modification time. A change means an upgrade.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Device, inode, size, mtime (seconds, nanoseconds) of one file.
type Stat = (u64, u64, u64, i64, i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint(Vec<(PathBuf, Option<Stat>)>);

fn stat(metadata: std::io::Result<std::fs::Metadata>) -> Option<Stat> {
    let m = metadata.ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl Fingerprint {
    pub(crate) fn of(interpreter: &Path, package_dirs: &[PathBuf]) -> Fingerprint {
        let mut entries = vec![
            (
                interpreter.to_path_buf(),
                stat(std::fs::symlink_metadata(interpreter)),
            ),
            (interpreter.join("."), stat(std::fs::metadata(interpreter))),
        ];
        for dir in package_dirs {
            entries.push((dir.clone(), stat(std::fs::metadata(dir))));
        }
        Fingerprint(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touched_package_directory_or_replaced_interpreter_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let python = dir.path().join("python");
        let grpc = dir.path().join("grpc");
        std::fs::write(&python, "one").unwrap();
        std::fs::create_dir(&grpc).unwrap();
        let before = Fingerprint::of(&python, std::slice::from_ref(&grpc));
        assert_eq!(
            before,
            Fingerprint::of(&python, std::slice::from_ref(&grpc))
        );
        std::fs::write(grpc.join("new.py"), "").unwrap();
        let after = Fingerprint::of(&python, std::slice::from_ref(&grpc));
        assert_ne!(before, after);
        std::fs::write(dir.path().join("python.new"), "two").unwrap();
        std::fs::rename(dir.path().join("python.new"), &python).unwrap();
        assert_ne!(after, Fingerprint::of(&python, std::slice::from_ref(&grpc)));
    }
}

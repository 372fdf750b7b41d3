//! The state directory and what Portico writes under it: private to the user Portico runs
//! as. (The `store/` of the fleet work grows here.)

use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

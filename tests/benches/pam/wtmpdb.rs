//! The peer: thkukuk/wtmpdb's `pam_wtmpdb.so`, built from the source tree that
//! `FL_BENCH_WTMPDB_SRC` names. Its four C files are compiled straight with the system's `cc`
//! against libsqlite3 and libpam (no meson, no daemon, no audit): the module as a host without
//! wtmpdbd runs it, writing one durable row at `open_session` and the logout time into it at
//! `close_session`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming wtmpdb's source tree.
pub const SOURCE_ENV: &str = "FL_BENCH_WTMPDB_SRC";

const SOURCES: [&str; 5] = [
    "src/pam_wtmpdb.c",
    "lib/libwtmpdb.c",
    "lib/logwtmpdb.c",
    "lib/sqlite.c",
    "lib/mkdir_p.c",
];

/// The configuration its build would generate, for the module alone.
const CONFIG_H: &str = "#define VERSION \"bench\"\n#define PACKAGE \"wtmpdb\"\n\
#define HAVE_AUDIT 0\n#define WITH_WTMPDBD 0\n#define HAVE_SYSTEMD 0\n";

/// Builds `pam_wtmpdb.so` in `dir`; why not, when it cannot.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    let source = std::env::var_os(SOURCE_ENV)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{SOURCE_ENV} is not set"))?;
    if let Some(missing) = SOURCES.iter().find(|f| !source.join(f).is_file()) {
        return Err(format!("{} has no {missing}", source.display()));
    }
    std::fs::write(dir.join("config.h"), CONFIG_H).map_err(|e| e.to_string())?;
    let module = dir.join("pam_wtmpdb.so");
    let built = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-D_GNU_SOURCE=1"])
        .args(["-D_FILE_OFFSET_BITS=64", "-D_TIME_BITS=64"])
        // A symbol left undefined fails the build here, not libpam's dlopen later.
        .arg("-Wl,-z,defs")
        .arg(format!("-I{}", dir.display()))
        .arg(format!("-I{}", source.join("include").display()))
        .arg(format!("-I{}", source.join("lib").display()))
        .arg("-o")
        .arg(&module)
        .args(SOURCES.iter().map(|f| source.join(f)))
        .args(["-lsqlite3", "-lpam"])
        .output()
        .map_err(|e| format!("running cc: {e}"))?;
    if !built.status.success() {
        let errors = String::from_utf8_lossy(&built.stderr);
        let first = errors.lines().find(|l| l.contains("error")).unwrap_or("");
        return Err(format!("cc failed: {first}"));
    }
    Ok(module)
}

/// The service lines of a stack with the peer in `session`, its database at `db`.
pub fn service_lines(module: &Path, db: &Path) -> [String; 3] {
    [
        "account required pam_permit.so".into(),
        format!(
            "session required {} database={}",
            module.display(),
            db.display()
        ),
        "session required pam_permit.so".into(),
    ]
}

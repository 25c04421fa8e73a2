//! What `cargo xtask dist` checks before it writes the tarball (issue 17
//! items 1 and 2), and the tests that check the same on the checked-in
//! files: the binary carries no library search path of the build machine,
//! it runs and names its commit and Python, and the systemd unit scores at
//! most [`MAX_EXPOSURE`] in `systemd-analyze security`.

use std::path::Path;
use std::process::Command;

use crate::Failure;

/// The highest `systemd-analyze security` exposure the unit may have
/// ("OK" starts below 4.0; the issue asks for 2.0 at most).
pub(crate) const MAX_EXPOSURE: f64 = 2.0;

/// `DT_RPATH` and `DT_RUNPATH` of the ELF `dynamic` section.
const DT_RPATH: i64 = 15;
const DT_RUNPATH: i64 = 29;
/// `SHT_DYNAMIC`, the section type of `.dynamic`.
const SHT_DYNAMIC: u32 = 6;

/// The RPATH and RUNPATH entries of a 64-bit little-endian ELF file, each
/// split at `:`; empty when it has none. Read by hand so the xtask keeps
/// to the standard library and needs no `readelf`.
pub(crate) fn library_search_paths(elf: &[u8]) -> Result<Vec<String>, String> {
    let bad = |what: &str| format!("not a 64-bit little-endian ELF file: {what}");
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(bad("wrong magic, class or byte order"));
    }
    let u16_at = |at: usize| -> Result<u64, String> {
        let bytes = elf.get(at..at + 2).ok_or_else(|| bad("truncated"))?;
        Ok(u64::from(u16::from_le_bytes([bytes[0], bytes[1]])))
    };
    let u32_at = |at: usize| -> Result<u64, String> {
        let bytes = elf.get(at..at + 4).ok_or_else(|| bad("truncated"))?;
        let mut word = [0u8; 4];
        word.copy_from_slice(bytes);
        Ok(u64::from(u32::from_le_bytes(word)))
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        let bytes = elf.get(at..at + 8).ok_or_else(|| bad("truncated"))?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    };
    let index = |value: u64| usize::try_from(value).map_err(|_| bad("offset too large"));
    let section_headers = index(u64_at(0x28)?)?;
    let entry_size = index(u16_at(0x3A)?)?;
    let count = index(u16_at(0x3C)?)?;
    // (type, offset, size, link) of section `n`.
    let section = |n: usize| -> Result<(u64, usize, usize, usize), String> {
        let at = section_headers + n * entry_size;
        Ok((
            u32_at(at + 4)?,
            index(u64_at(at + 0x18)?)?,
            index(u64_at(at + 0x20)?)?,
            index(u32_at(at + 0x28)?)?,
        ))
    };
    let mut paths = Vec::new();
    for n in 0..count {
        let (kind, offset, size, link) = section(n)?;
        if kind != u64::from(SHT_DYNAMIC) {
            continue;
        }
        let (_, strings, strings_size, _) = section(link)?;
        let strings = elf
            .get(strings..strings + strings_size)
            .ok_or_else(|| bad("string table out of the file"))?;
        for entry in (offset..offset + size).step_by(16) {
            let tag = u64_at(entry)? as i64;
            if tag != DT_RPATH && tag != DT_RUNPATH {
                continue;
            }
            let start = index(u64_at(entry + 8)?)?;
            let text = strings
                .get(start..)
                .ok_or_else(|| bad("bad string offset"))?;
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let value = String::from_utf8_lossy(&text[..end]);
            paths.extend(value.split(':').map(str::to_owned));
        }
    }
    Ok(paths)
}

/// Fails unless the binary at `path` has no RPATH or RUNPATH at all: a
/// distributed `ucs` finds libpython as the platform does (issue 17 item 2).
pub(crate) fn check_no_search_path(path: &Path) -> Result<(), Failure> {
    let elf = std::fs::read(path)
        .map_err(|err| Failure(format!("dist: cannot read {}: {err}", path.display())))?;
    let paths = library_search_paths(&elf)
        .map_err(|err| Failure(format!("dist: {}: {err}", path.display())))?;
    if !paths.is_empty() {
        return Err(Failure(format!(
            "dist: {} has the library search path {paths:?}, a directory of the build \
             machine; a dist build must set none (UCS_DIST=1, see crates/ucs/build.rs)",
            path.display()
        )));
    }
    eprintln!("xtask: {} has no RPATH or RUNPATH", path.display());
    Ok(())
}

/// Runs `binary --version` and fails unless it names the version, a commit
/// and the Python it loaded. Needs `libpython3.11` where the platform's
/// loader finds it (Debian's package of that name).
pub(crate) fn check_version(binary: &Path) -> Result<String, Failure> {
    let output = Command::new(binary)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .map_err(|err| Failure(format!("dist: cannot run {}: {err}", binary.display())))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        return Err(Failure(format!(
            "dist: `{} --version` failed ({}): {}; the binary needs libpython3.11 \
             on the system library path (Debian: apt-get install libpython3.11)",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let expected = format!("ucs {} (commit ", env!("CARGO_PKG_VERSION"));
    if !text.starts_with(&expected) || !text.contains(", Python 3.") {
        return Err(Failure(format!(
            "dist: `--version` printed {text:?}, not the version, commit and Python"
        )));
    }
    eprintln!("xtask: {text}");
    Ok(text)
}

/// The overall exposure `systemd-analyze security --offline=yes` gives the
/// unit file, or `None` (with the reason printed) where systemd-analyze is
/// not installed (Debian's `systemd` package has it).
pub(crate) fn unit_exposure(unit: &Path) -> Result<Option<f64>, Failure> {
    let output = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            skipped(
                "the systemd unit's security score: systemd-analyze is not installed \
                 (apt-get install systemd)",
            );
            return Ok(None);
        }
        Err(err) => return Err(Failure(format!("cannot run systemd-analyze: {err}"))),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let score = text
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_once(": "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok());
    match score {
        Some(score) => Ok(Some(score)),
        None => Err(Failure(format!(
            "systemd-analyze security gave no overall exposure for {} ({}):\n{text}{}",
            unit.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))),
    }
}

/// Says on stderr that a check did not run and why, past the test
/// harness's capture (which takes only `eprintln!`), so a skip is never
/// silent.
pub(crate) fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "xtask: SKIPPED {what}");
}

/// Fails if the unit scores over [`MAX_EXPOSURE`]; passes with a printed
/// reason where systemd-analyze is missing.
pub(crate) fn check_unit(unit: &Path) -> Result<(), Failure> {
    match unit_exposure(unit)? {
        Some(score) if score <= MAX_EXPOSURE => {
            eprintln!(
                "xtask: {} scores {score} in systemd-analyze security",
                unit.display()
            );
            Ok(())
        }
        Some(score) => Err(Failure(format!(
            "{} scores {score} in `systemd-analyze security`, over {MAX_EXPOSURE}",
            unit.display()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

    /// Issue 17 item 1: the checked-in unit is hardened.
    #[test]
    fn the_systemd_unit_scores_at_most_2_0() {
        let unit = workspace_root().join("dist/ucs.service");
        if let Some(score) = unit_exposure(&unit).unwrap() {
            assert!(score <= MAX_EXPOSURE, "{} scores {score}", unit.display());
        }
    }

    /// The check must be able to fail: an unhardened unit scores high.
    #[test]
    fn an_unhardened_unit_scores_over_the_limit() {
        let dir = std::env::temp_dir().join(format!("xtask-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unit = dir.join("plain.service");
        std::fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
        let result = unit_exposure(&unit);
        std::fs::remove_dir_all(&dir).unwrap();
        if let Some(score) = result.unwrap() {
            assert!(score > MAX_EXPOSURE, "{score}");
            assert!(check_unit(&workspace_root().join("dist/ucs.service")).is_ok());
        }
    }

    /// A tiny ELF file with one `.dynamic` section whose RUNPATH is `path`.
    fn elf_with_runpath(path: &str) -> Vec<u8> {
        let mut strings = vec![0u8];
        strings.extend_from_slice(path.as_bytes());
        strings.push(0);
        let header = 64;
        let dynamic_at = header;
        let dynamic = [(DT_RUNPATH, 1u64), (0, 0)];
        let strings_at = dynamic_at + dynamic.len() * 16;
        let sections_at = strings_at + strings.len();
        let mut elf = vec![0u8; sections_at + 3 * 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x28..0x30].copy_from_slice(&(sections_at as u64).to_le_bytes());
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        for (n, (tag, value)) in dynamic.iter().enumerate() {
            let at = dynamic_at + n * 16;
            elf[at..at + 8].copy_from_slice(&tag.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
        }
        elf[strings_at..strings_at + strings.len()].copy_from_slice(&strings);
        // Section 1: .dynamic, linked to section 2, the string table.
        let write = |elf: &mut Vec<u8>, n: usize, kind: u32, offset: usize, size: usize, link| {
            let at = sections_at + n * 64;
            elf[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
            elf[at + 0x18..at + 0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            elf[at + 0x20..at + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf[at + 0x28..at + 0x2C].copy_from_slice(&(link as u32).to_le_bytes());
        };
        write(&mut elf, 1, SHT_DYNAMIC, dynamic_at, dynamic.len() * 16, 2);
        write(&mut elf, 2, 3, strings_at, strings.len(), 0);
        elf
    }

    #[test]
    fn runpaths_are_read_from_the_dynamic_section() {
        let elf = elf_with_runpath("/root/.pyenv/versions/3.11.7/lib:/opt/x");
        assert_eq!(
            library_search_paths(&elf).unwrap(),
            ["/root/.pyenv/versions/3.11.7/lib", "/opt/x"]
        );
        assert!(library_search_paths(b"not an elf").is_err());
        // This test binary links libc but sets no search path.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(library_search_paths(&me).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_binary_with_a_runpath_fails_the_dist_check() {
        let dir = std::env::temp_dir().join(format!("xtask-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let with = dir.join("with");
        std::fs::write(&with, elf_with_runpath("/root/.pyenv/versions/3.11.7/lib")).unwrap();
        let failure = check_no_search_path(&with).unwrap_err();
        let me = check_no_search_path(&std::env::current_exe().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(failure.0.contains(".pyenv"), "{failure}");
        assert!(me.is_ok());
    }
}

//! `[limits] state_memory`: a size such as `"768MiB"`, or by default 70 % of the memory limit of
//! the cgroup the process runs in (a container's limit), else no budget. And the allocator
//! setting that lets memory the state gave back leave the process ([`return_freed_memory`]).

use std::path::Path;

/// The share of the cgroup limit state may take by default: the rest is librdkafka's buffers,
/// HTTP renders and the allocator's slack.
const DEFAULT_SHARE_PERCENT: u64 = 70;

/// Parses `"768MiB"`, `"1GiB"`, `"500MB"`, `"64KiB"` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a size such as \"768MiB\""))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

/// The default budget: a share of the cgroup's memory limit, if there is one.
pub fn default_budget() -> Option<u64> {
    cgroup_limit(Path::new("/sys/fs/cgroup")).map(|limit| limit / 100 * DEFAULT_SHARE_PERCENT)
}

/// The memory limit of cgroup v2 (`memory.max`) or v1 (`memory/memory.limit_in_bytes`) under
/// `root`; `None` when unlimited or unknown.
fn cgroup_limit(root: &Path) -> Option<u64> {
    let v2 = std::fs::read_to_string(root.join("memory.max")).ok();
    let v1 = || std::fs::read_to_string(root.join("memory/memory.limit_in_bytes")).ok();
    let text = v2.or_else(v1)?;
    // v1 writes "unlimited" as a huge number near i64::MAX.
    text.trim().parse::<u64>().ok().filter(|limit| *limit < (1 << 60))
}

/// Allocations from this size up get pages of their own, given back to the system when freed.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold at 128 KiB. By default glibc raises it after each large free, up
/// to 32 MiB, so the id and customer tables a worker outgrows and its checkpoint buffers are then
/// carved from the heap, and their memory stays with the process once freed: measured with
/// `bench --soak 240`, RSS grew 55 bytes per event beyond the state itself, and 6 with this.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of the allocator; called once, at startup,
    // before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_families_and_nonsense_is_named() {
        assert_eq!(parse_size("768MiB"), Ok(768 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn the_cgroup_limit_is_read_from_v2_or_v1_and_unlimited_is_none() {
        let dir = std::env::temp_dir().join(format!("cxpulse-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("memory")).unwrap();
        assert_eq!(cgroup_limit(&dir), None);
        std::fs::write(dir.join("memory/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_limit(&dir), None, "v1 unlimited");
        std::fs::write(dir.join("memory/memory.limit_in_bytes"), "1073741824\n").unwrap();
        assert_eq!(cgroup_limit(&dir), Some(1 << 30));
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(&dir), None, "v2 unlimited wins over v1");
        std::fs::write(dir.join("memory.max"), "536870912\n").unwrap();
        assert_eq!(cgroup_limit(&dir), Some(512 << 20));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Whether the kernel may swap out this process's memory, which decides how a reused pool
//! slot is reset.
//!
//! With the `PAGEMAP_SCAN` ioctl, wasmtime 48 resets a linear memory by asking the kernel
//! for the pages the last job wrote and restoring only those. The scan asks for pages that
//! are present in memory. A written page that the kernel swapped out while the job ran is
//! not present, so it is neither restored nor given back, and the next job in the slot would
//! read what the last one wrote there. (Checked on Linux 6.18 with a swap file: after
//! `MADV_PAGEOUT` of four written pages, the scan wasmtime makes reports only the other
//! four, and its walk reaches the end, so nothing after it is given back either.) The
//! runtime therefore uses the scan only when nothing of the process can be swapped out: no
//! swap device is on, or the process's cgroup (v2) allows it no swap.

use std::path::Path;

/// Whether some memory of this process could be swapped out. Unreadable system files count
/// as yes: the slower reset is always correct.
pub(crate) fn may_swap() -> bool {
    let Ok(swaps) = std::fs::read_to_string("/proc/swaps") else {
        return true;
    };
    if !swap_devices_listed(&swaps) {
        return false;
    }
    let Some(cgroup) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|groups| cgroup_v2_path(&groups).map(str::to_owned))
    else {
        return true;
    };
    !cgroup_forbids_swap(Path::new("/sys/fs/cgroup"), &cgroup, |file| {
        std::fs::read_to_string(file).ok()
    })
}

/// Whether `/proc/swaps` lists a swap device or file: a header line, then one per device.
fn swap_devices_listed(proc_swaps: &str) -> bool {
    proc_swaps
        .lines()
        .skip(1)
        .any(|line| !line.trim().is_empty())
}

/// The process's cgroup v2 path from `/proc/self/cgroup` (the `0::PATH` line), if any.
fn cgroup_v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
}

/// Whether the cgroup at `path` under the cgroup v2 mount `root`, or one of its ancestors,
/// sets `memory.swap.max` to 0. `read` reads a file, `None` when it is not there.
fn cgroup_forbids_swap(root: &Path, path: &str, read: impl Fn(&Path) -> Option<String>) -> bool {
    let mut group = root.join(path.trim_start_matches('/'));
    loop {
        if read(&group.join("memory.swap.max")).is_some_and(|max| max.trim() == "0") {
            return true;
        }
        if group == root || !group.pop() || !group.starts_with(root) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn a_header_alone_lists_no_swap() {
        assert!(!swap_devices_listed(HEADER));
        assert!(!swap_devices_listed(""));
    }

    #[test]
    fn a_swap_file_or_zram_device_is_listed() {
        let file = format!("{HEADER}/var/tmp/swapfile  file  131068  0  -2\n");
        let zram = format!("{HEADER}/dev/zram0  partition  4194300  0  100\n");
        assert!(swap_devices_listed(&file));
        assert!(swap_devices_listed(&zram));
    }

    #[test]
    fn the_cgroup_v2_line_gives_the_path() {
        let hybrid = "12:memory:/user.slice\n0::/system.slice/taskbox.service\n";
        assert_eq!(
            cgroup_v2_path(hybrid),
            Some("/system.slice/taskbox.service")
        );
        assert_eq!(cgroup_v2_path("0::/\n"), Some("/"));
        assert_eq!(cgroup_v2_path("4:memory:/docker/abc\n"), None);
    }

    fn tree(files: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect();
        move |path| files.get(path).cloned()
    }

    #[test]
    fn a_zero_swap_max_on_the_group_or_an_ancestor_forbids_swap() {
        let root = Path::new("/sys/fs/cgroup");
        let own = tree(&[("/sys/fs/cgroup/a/b/memory.swap.max", "0\n")]);
        let parent = tree(&[
            ("/sys/fs/cgroup/a/memory.swap.max", "0\n"),
            ("/sys/fs/cgroup/a/b/memory.swap.max", "max\n"),
        ]);
        assert!(cgroup_forbids_swap(root, "/a/b", own));
        assert!(cgroup_forbids_swap(root, "/a/b", parent));
    }

    #[test]
    fn a_swap_max_other_than_zero_or_no_file_allows_swap() {
        let root = Path::new("/sys/fs/cgroup");
        let limited = tree(&[("/sys/fs/cgroup/a/b/memory.swap.max", "1048576\n")]);
        let sibling = tree(&[("/sys/fs/cgroup/a/c/memory.swap.max", "0\n")]);
        assert!(!cgroup_forbids_swap(root, "/a/b", limited));
        assert!(!cgroup_forbids_swap(root, "/a/b", sibling));
        assert!(!cgroup_forbids_swap(root, "/", tree(&[])));
    }
}
